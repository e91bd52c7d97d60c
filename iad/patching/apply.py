"""IaD Apply's one entry point: a patched clone of a native ComfyUI ``MODEL``.

Only clones are patched, never the shared model, and never by global monkeypatching. Each family's
patch lives in its own file (``wan.py``, ``ltxv.py``, ``hunyuan.py``); ``arch.py`` says which
family a loaded model is.
"""

from __future__ import annotations

from . import hunyuan, ltxv, wan
from .adapter_model import ADAPTER_PATCH_KEY, AdapterOwner, IaDModel
from .arch import ArchInfo, check_adapter_fits, detect_architecture
from .engines import check_engine
from .identity import UNCOND_NONE, IaDIdentity, IdentityEntry, uncond_mode
from .step_range import StepRangeResolver, step_gate

# family -> patch_blocks(patched clone, ArchInfo, adapter block indices, IdentityEntry)
# LTX-2's video stream has LTX-Video's text cross-attention module; HunyuanVideo 1.5 has
# HunyuanVideo's double blocks (and no single blocks).
FAMILY_PATCHES = {"wan": wan.patch_blocks, "ltxv": ltxv.patch_blocks, "ltx2": ltxv.patch_blocks,
                  "hunyuan_video": hunyuan.patch_blocks, "hunyuan_video15": hunyuan.patch_blocks}


def architecture_of(model) -> ArchInfo:
    """The family of a ModelPatcher's diffusion model (raises UnsupportedModelError, also for a model run
    by an engine that would drop the identity: ``engines.check_engine``)."""
    check_engine(model)
    base = model.model
    return detect_architecture(base.diffusion_model, type(getattr(base, "model_config", None)).__name__
                               if getattr(base, "model_config", None) is not None else None)


def apply_identity(model, iad_model: IaDModel, identity: IaDIdentity, weight: float, start_percent: float,
                   end_percent: float, uncond_identity: str | bool = UNCOND_NONE):
    """A patched clone of ``model`` (or ``model`` itself when the identity could never act).
    ``uncond_identity``: one of UNCOND_CHOICES (a bool is the former ``apply_to_uncond``)."""
    import comfy.patcher_extension

    uncond = uncond_mode(uncond_identity)
    arch = architecture_of(model)
    check_adapter_fits(arch, iad_model.config, f"IaD adapter '{iad_model.name}'")
    if identity.adapter_id != id(iad_model.adapter):
        raise ValueError(
            f"The IAD_IDENTITY input was computed with adapter '{identity.adapter_name}', but IaD Apply got adapter "
            f"'{iad_model.name}'. Connect the same IaD Model Loader output to IaD Identity and IaD Apply."
        )
    if weight == 0.0 or start_percent > end_percent:
        return model  # bit-identical and free: nothing is patched (validation refuses start > end anyway)
    entry = IdentityEntry(iad_model.patcher, identity.tokens, weight, start_percent, end_percent,
                          step_gate(model, start_percent, end_percent), uncond)
    patched = model.clone()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, f"iad_step_range_{entry.uid}",
                                 StepRangeResolver(entry))
    FAMILY_PATCHES[arch.family](patched, arch, iad_model.config.blocks, entry)
    patched.set_model_patch(AdapterOwner(iad_model.patcher), ADAPTER_PATCH_KEY)
    return patched
