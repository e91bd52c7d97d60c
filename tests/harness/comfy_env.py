"""ComfyUI importable in this process (for unit tests and the tiny-model generators).

ComfyUI's modules read their command-line arguments at import time; we keep argument parsing off
(its default) and force ``--cpu`` before ``comfy.model_management`` is imported, so the tests
behave the same on a machine with a GPU.
"""

import importlib.util
import sys
from pathlib import Path

from .paths import CACHE_DIR, PACK_DIR_NAME, REPO_ROOT, comfyui_dir

_PACK_MODULE_NAME = "comfyui_iad_pack"


def import_comfy(base_directory: Path | None = None):
    """Put ComfyUI on ``sys.path`` and import it CPU-only. Returns ``comfy`` (idempotent).

    ComfyUI's folders (models, input, output, user) are redirected to ``base_directory``
    (default: a scratch folder under ``.cache``) so in-process tests never write into the
    ComfyUI tree, which may be a user's own (``COMFYUI_PATH``)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from iad.comfy_runtime import import_comfy as import_comfy_runtime

    return import_comfy_runtime(comfyui_dir(), cpu=True, base_directory=base_directory or CACHE_DIR / "inprocess-comfy")


def import_pack():
    """Import this repository as a ComfyUI custom-node package, the way ComfyUI's loader does
    (a package with relative imports, under a name that is not ``nodes``)."""
    if _PACK_MODULE_NAME in sys.modules:
        return sys.modules[_PACK_MODULE_NAME]
    import_comfy()
    spec = importlib.util.spec_from_file_location(
        _PACK_MODULE_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PACK_MODULE_NAME] = module
    spec.loader.exec_module(module)
    module.PACK_DIR_NAME = PACK_DIR_NAME
    # What ComfyUI's loader does next: the entry point registers the model folders.
    module.nodes.register_model_folders()
    return module
