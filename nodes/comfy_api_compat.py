"""The one place that imports ComfyUI's V3 node API.

``comfy_api.v0_0_2`` is the newest *versioned* API that every supported ComfyUI has (0.3.75 and
v0.28.2 both ship ``v0_0_1``, ``v0_0_2`` and ``latest``). ``comfy_api.latest`` is marked unstable
upstream: an upstream release may change it, while a versioned module keeps its contract. So the
versioned module comes first and ``latest`` is only the fallback for a ComfyUI that someday drops
``v0_0_2``. Every node module imports ``io`` and ``ComfyExtension`` from here, so an API move is a
one-line change.
"""

import importlib

_CANDIDATES = ("comfy_api.v0_0_2", "comfy_api.latest")


def _load_api():
    errors = []
    for name in _CANDIDATES:
        try:
            module = importlib.import_module(name)
            return module.io, module.ComfyExtension, name
        except (ImportError, AttributeError) as exc:  # try the next API version
            errors.append(f"{name}: {exc}")
    raise ImportError(
        "ComfyUI-IaD needs ComfyUI's V3 node API (comfy_api.v0_0_2, ComfyUI 0.3.75 or newer). "
        "Update ComfyUI. Tried: " + "; ".join(errors)
    )


io, ComfyExtension, API_MODULE = _load_api()
