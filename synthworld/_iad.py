"""The IaD library (``iad/``) as seen from the synthetic world, which sits beside it.

Inside ComfyUI the pack is one package named after its folder, so ``iad`` is this package's
sibling (``<pack>.iad``); from a checkout (tests, benchmarks, scripts) both are top-level. The
world imports the library through here so that both cases load the one ``iad`` that the nodes
use: a second copy would hold different classes.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_PACK = __name__.rpartition(".")[0].rpartition(".")[0]


def library(module: str = "") -> ModuleType:
    """``iad`` or one of its submodules (``library("adapter")`` is ``iad.adapter``)."""
    root = f"{_PACK}.iad" if _PACK else "iad"
    return importlib.import_module(f"{root}.{module}" if module else root)
