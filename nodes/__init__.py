"""ComfyUI glue for ComfyUI-IaD.

Every module in this package that defines nodes exposes ``NODES``, a list of V3 node classes;
the extension collects them from all modules (sorted by module name, so the order is stable).
A module that fails to import fails the whole pack loudly: a half-loaded pack would show up in
a user's workflow as "missing nodes" with no explanation.

Developer-only nodes (the synthetic world's, ``synthworld/nodes.py``) stay out of a user's menu.
They register only when the environment variable ``IAD_DEVELOPER_NODES`` names their module,
relative to the pack (comma-separated; the tests and ``make demo`` set ``synthworld.nodes``).
"""

import importlib
import logging
import os
import pkgutil

from .comfy_api_compat import ComfyExtension, io
from .model_paths import register_model_folders

DEVELOPER_NODES_ENV = "IAD_DEVELOPER_NODES"
_PACK = __name__.rpartition(".")[0]
log = logging.getLogger(__name__)


def node_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def developer_node_modules() -> list[str]:
    """The pack-relative modules named by ``IAD_DEVELOPER_NODES`` (e.g. ``synthworld.nodes``)."""
    return [name.strip() for name in os.environ.get(DEVELOPER_NODES_ENV, "").split(",") if name.strip()]


def _developer_nodes() -> list[type[io.ComfyNode]]:
    nodes: list[type[io.ComfyNode]] = []
    for name in developer_node_modules():
        try:
            module = importlib.import_module(f"{_PACK}.{name}" if _PACK else name)
        except ModuleNotFoundError as exc:
            # e.g. a registry install, which leaves the developer harnesses out: the real nodes still load
            log.error("[ComfyUI-IaD] %s names '%s', which this install cannot import (%s); the synthetic world "
                      "and its nodes come with a git checkout of the pack, not the registry package.",
                      DEVELOPER_NODES_ENV, name, exc)
            continue
        nodes.extend(getattr(module, "NODES", ()))
    return nodes


def user_nodes() -> list[type[io.ComfyNode]]:
    """The nodes every user's menu shows (this package's modules)."""
    nodes: list[type[io.ComfyNode]] = []
    for module_name in node_modules():
        module = importlib.import_module(f"{__name__}.{module_name}")
        nodes.extend(getattr(module, "NODES", ()))
    return nodes


def collect_nodes() -> list[type[io.ComfyNode]]:
    """What the extension registers: the user's nodes, plus the developer nodes asked for."""
    return user_nodes() + _developer_nodes()


class IaDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return collect_nodes()


async def comfy_entrypoint() -> IaDExtension:
    register_model_folders()
    _warn_about_an_old_torch()
    return IaDExtension()


def _warn_about_an_old_torch() -> None:
    import torch

    from ..iad.torch_support import below_floor_warning

    warning = below_floor_warning(torch.__version__)
    if warning:
        log.warning("[ComfyUI-IaD] %s", warning)
