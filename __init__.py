"""ComfyUI-IaD: identity-preserving text-to-video for native ComfyUI video models.

ComfyUI imports this file when the pack sits in ``custom_nodes``. It finds the V3 entry point
``comfy_entrypoint`` (the same mechanism ComfyUI core's own node files use) and asks it for the
node list. ``iad/`` is the torch-only library; ``nodes/`` is the ComfyUI glue.
"""

from .nodes import comfy_entrypoint  # noqa: F401  (ComfyUI looks this name up)

__all__ = ["comfy_entrypoint"]
