"""ComfyUI glue for ComfyUI-IaD.

Every module in this package that defines nodes exposes ``NODES``, a list of V3 node classes;
the extension collects them from all modules (sorted by module name, so the order is stable).
A module that fails to import fails the whole pack loudly: a half-loaded pack would show up in
a user's workflow as "missing nodes" with no explanation.
"""

import importlib
import pkgutil

from .comfy_api_compat import ComfyExtension, io
from .model_paths import register_model_folders


def node_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def collect_nodes() -> list[type[io.ComfyNode]]:
    nodes: list[type[io.ComfyNode]] = []
    for module_name in node_modules():
        module = importlib.import_module(f"{__name__}.{module_name}")
        nodes.extend(getattr(module, "NODES", ()))
    return nodes


class IaDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return collect_nodes()


async def comfy_entrypoint() -> IaDExtension:
    register_model_folders()
    return IaDExtension()
