"""The one place that imports ComfyUI's V3 node API.

``comfy_api.latest`` exists in ComfyUI 0.3.75 and in current upstream; the versioned modules are
the fallback for a ComfyUI that someday drops ``latest``. Every node module imports ``io`` and
``ComfyExtension`` from here so a future API move is a one-line change.
"""

import importlib

_CANDIDATES = ("comfy_api.latest", "comfy_api.v0_0_3", "comfy_api.v0_0_2")


def _load_api():
    errors = []
    for name in _CANDIDATES:
        try:
            module = importlib.import_module(name)
            return module.io, module.ComfyExtension, name
        except (ImportError, AttributeError) as exc:  # try the next API version
            errors.append(f"{name}: {exc}")
    raise ImportError(
        "ComfyUI-IaD needs ComfyUI's V3 node API (comfy_api.latest, ComfyUI 0.3.75 or newer). "
        "Update ComfyUI. Tried: " + "; ".join(errors)
    )


io, ComfyExtension, API_MODULE = _load_api()
