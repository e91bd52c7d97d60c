"""Multi-GPU engines: the ones IaD follows and the one it refuses (docs/patching.md, "Multi-GPU engines").

- **ComfyUI's own multi-GPU** (v0.28.2+: ``MultiGPU_WorkUnits``, ``SelectModelDevice``). Each extra device
  gets a fresh model from the loader (``ModelPatcher.deepclone_multigpu``), and at sampling every device
  clone is rebuilt from the patched model (``match_multigpu_clones``). Both copy the object patches as
  they are. A site patch (``block_patch.SitePatch``) holds the module whose ``forward`` it replaces, so
  on a device clone it would compute with the *main* model's weights: a device mismatch on GPUs, or a
  silent cross-device copy in every call. ``follow_device_clones`` registers core's own callbacks for
  those two moments, and ``rebind_site_patches`` gives each clone site patches that hold its own modules.
  The identity's K/V are already cached per device (``IdentityEntry.kv``), so each device computes them
  once and keeps its own copy.
- **raylight** (Ray + xDiT). Its workers load the model themselves and take patches only as its own
  closures; none of its nodes takes or gives a ``MODEL``. Its sequence-parallel mode replaces every
  block's attention ``forward`` after ComfyUI has applied the object patches, and its CFG-parallel split
  leaves ``cond_or_uncond`` unsplit: either would drop the identity without a word. So a raylight model
  that reaches IaD is refused by name (``check_engine``).
- **ComfyUI-MultiGPU / DisTorch** spreads one model's weights over devices and keeps the object patches;
  nothing is needed here (tests/test_distorch_allocation.py).
"""

from __future__ import annotations

from .arch import UnsupportedModelError
from .block_patch import SitePatch, _get

FOLLOW_CALLBACK_KEY = "iad_follow_device_clones"
_PREFIX, _SUFFIX = "diffusion_model.", ".forward"
_RAYLIGHT = "raylight"


def rebind_site_patches(source, clone) -> None:
    """Core's ``ON_DEEPCLONE_MULTIGPU`` / ``ON_MATCH_MULTIGPU_CLONES`` callback: every IaD site patch of
    ``clone`` is rebuilt on the module of ``clone``'s own model (the same entries: one adapter, one set of
    identity tokens, K/V cached per device)."""
    root = clone.model.diffusion_model
    for key, patch in list(clone.object_patches.items()):
        if not isinstance(patch, SitePatch) or not (key.startswith(_PREFIX) and key.endswith(_SUFFIX)):
            continue
        module = _get(root, key[len(_PREFIX):-len(_SUFFIX)])
        if patch.module is module:
            continue
        inner = patch.inner
        if isinstance(inner, SitePatch) or getattr(inner, "__self__", None) is not patch.module:
            # Something else replaced this forward before IaD Apply, and its own state cannot be moved.
            raise UnsupportedModelError(
                f"IaD cannot follow the model onto {clone.load_device}: `{key}` was replaced by "
                f"{type(inner).__name__} before IaD Apply, and that replacement keeps the first device's module. "
                "Put IaD Apply before the node that made it, or sample on one device.")
        clone.object_patches[key] = type(patch)(module, inner.__func__.__get__(module), patch.block_index, patch.entries)


def follow_device_clones(patched) -> None:
    """Register ``rebind_site_patches`` (once) for core's multi-GPU clones. A ComfyUI without them
    (0.3.75) has no way to copy a model per device, so there is nothing to follow."""
    import comfy.patcher_extension

    for name in ("ON_DEEPCLONE_MULTIGPU", "ON_MATCH_MULTIGPU_CLONES"):
        call_type = getattr(comfy.patcher_extension.CallbacksMP, name, None)
        if call_type is not None and rebind_site_patches not in patched.get_all_callbacks(call_type):
            patched.add_callback_with_key(call_type, FOLLOW_CALLBACK_KEY, rebind_site_patches)


def _from_raylight(obj) -> bool:
    func = getattr(obj, "__func__", obj)
    return str(getattr(func, "__module__", None) or "").split(".")[0] == _RAYLIGHT


def check_engine(model) -> None:
    """Refuse a model run by an engine that would drop the identity silently (raylight); see above."""
    diffusion_model = getattr(getattr(model, "model", None), "diffusion_model", None)
    injected = diffusion_model is not None and _from_raylight(vars(diffusion_model).get("forward_orig"))
    if type(model).__module__.split(".")[0] == _RAYLIGHT or injected:
        raise UnsupportedModelError(
            f"this model is run by raylight ({type(model).__name__}), whose workers rebuild the model "
            "and replace its attention after ComfyUI's patches (sequence parallel), or split the CFG batch without "
            "telling the model which rows are which (CFG parallel), so the identity would be dropped without an "
            "error. Sample with ComfyUI's own MultiGPU CFG Split (MultiGPU_WorkUnits), ComfyUI-MultiGPU's DisTorch "
            "loaders, or one GPU.")


__all__ = ["rebind_site_patches", "follow_device_clones", "check_engine", "FOLLOW_CALLBACK_KEY"]
