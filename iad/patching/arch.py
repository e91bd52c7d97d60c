"""Which video model is this? Detected from the loaded diffusion model itself (duck typing on
its modules), so the library needs no ComfyUI import and works on fp8/GGUF-loaded models too.

Families and the patch site each one gets:
- ``wan``: Wan 2.1/2.2 T2V, I2V and TI2V 5B, and every Wan variant ComfyUI loads (VACE, Fun Camera and
  Control, S2V, HuMo, Animate, SCAIL, Dancer, the causal model; ``wan_variants.py``):
  ``blocks.{i}.cross_attn`` (text cross-attention), on the video's token rows
- ``ltxv``: LTX-Video, ``transformer_blocks.{i}.attn2`` (text cross-attention)
- ``ltx2``: LTX-2 (ComfyUI's ``LTXAVModel``, audio and video in one transformer):
  ``transformer_blocks.{i}.attn2``, the *video* stream's text cross-attention; the audio stream's
  own modules (``audio_attn1/2``, the audio<->video attentions) are never patched
- ``hunyuan_video``: HunyuanVideo, no text cross-attention: residual identity attention after
  double blocks ``0..depth-1`` and single blocks (adapter block index ``depth + j``)
- ``hunyuan_video15``: HunyuanVideo 1.5, the same transformer class with double blocks only:
  residual identity attention on the video tokens after each listed double block
"""

from __future__ import annotations

from dataclasses import dataclass

from . import wan_variants
from .wan_variants import WanVariant

SUPPORTED_TEXT = ("IaD supports Wan 2.1/2.2 (T2V, I2V, TI2V 5B, VACE, Fun Camera/Control, S2V, HuMo, Animate, SCAIL, "
                  "Dancer, causal), LTX-Video, LTX-2, HunyuanVideo, HunyuanVideo 1.5 T2V/I2V")

# model_config class names (ComfyUI's supported_models) -> what users call them.
_FRIENDLY = {
    "SD15": "Stable Diffusion 1.5", "SD20": "Stable Diffusion 2", "SDXL": "SDXL", "SDXLRefiner": "SDXL Refiner",
    "SD3": "SD3", "Flux": "Flux", "FluxSchnell": "Flux Schnell", "AuraFlow": "AuraFlow", "HunyuanDiT": "HunyuanDiT",
    "HunyuanImage21": "HunyuanImage 2.1", "HunyuanImage21Refiner": "HunyuanImage 2.1 refiner",
    "HunyuanVideo15": "HunyuanVideo 1.5", "HunyuanVideo15_SR_Distilled": "HunyuanVideo 1.5 super-resolution",
    "CosmosT2V": "Cosmos", "Lumina2": "Lumina 2", "QwenImage": "Qwen-Image",
    "Mochi": "Mochi", "GenmoMochi": "Mochi", "Chroma": "Chroma",
}
_SUPPORTED_HUNYUAN_CONFIGS = {"HunyuanVideo", "HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V"}
# HunyuanVideo 1.5 T2V and I2V share one config (I2V feeds the image latent through c_concat); the
# super-resolution stage (HunyuanVideo15_SR_Distilled) upscales a finished video and is not patched.
_SUPPORTED_HUNYUAN15_CONFIGS = {"HunyuanVideo15"}

# Known widths, to name the model an adapter was made for in width-mismatch errors.
_KNOWN_WIDTHS = {
    "wan": {1536: "Wan 2.1 1.3B", 3072: "Wan 2.2 5B", 5120: "Wan 2.1/2.2 14B"},
    "ltxv": {2048: "LTX-Video 2B", 4096: "LTX-Video 13B"},
    "ltx2": {4096: "LTX-2 19B / LTX-2.3 22B"},
    "hunyuan_video": {3072: "HunyuanVideo 13B"},
    "hunyuan_video15": {2048: "HunyuanVideo 1.5 8.3B"},
}
FAMILY_NAMES = {"wan": "Wan", "ltxv": "LTX-Video", "ltx2": "LTX-2", "hunyuan_video": "HunyuanVideo",
                "hunyuan_video15": "HunyuanVideo 1.5"}


class UnsupportedModelError(ValueError):
    """The model (or the adapter for it) cannot be patched; the message says why and what to do."""


@dataclass(frozen=True)
class ArchInfo:
    family: str            # "wan" | "ltxv" | "ltx2" | "hunyuan_video" | "hunyuan_video15"
    variant: str           # human-readable, e.g. "Wan T2V (WAN21_T2V)"
    model_dim: int         # attention width the identity K/V must have
    num_heads: int
    num_blocks: int        # patchable block indices are 0..num_blocks-1
    double_blocks: int = 0  # HunyuanVideo (1.5): indices < double_blocks are double blocks
    wan_variant: WanVariant | None = None   # Wan: which variant (what else enters its blocks)

    def site(self, index: int) -> str:
        """The attribute path (inside ``diffusion_model``) that block ``index`` patches."""
        if self.family == "wan":
            return f"blocks.{index}.cross_attn"
        if self.family in ("ltxv", "ltx2"):
            return f"transformer_blocks.{index}.attn2"
        if index < self.double_blocks:
            return f"double_blocks.{index}"
        return f"single_blocks.{index - self.double_blocks}"


def describe_width(family: str, width: int) -> str:
    name = _KNOWN_WIDTHS.get(family, {}).get(int(width))
    return f"width {width} ({name})" if name else f"width {width}"


def _model_name(config_name: str | None, diffusion_model) -> str:
    if config_name:
        return _FRIENDLY.get(config_name, config_name)
    return type(diffusion_model).__name__


def detect_architecture(diffusion_model, config_name: str | None = None) -> ArchInfo:
    """ArchInfo for a loaded diffusion model (``model.model.diffusion_model`` in ComfyUI).
    ``config_name`` is ComfyUI's model_config class name (``WAN21_T2V``, ``SDXL``...), used to
    name the model and to tell apart variants that share a class. Raises UnsupportedModelError."""
    cls = type(diffusion_model).__name__
    label = f" ({config_name})" if config_name else ""
    if cls in wan_variants.KNOWN_CLASSES:
        return _wan(diffusion_model, config_name, label)
    if cls.startswith("Wan") or cls.endswith("WanModel"):
        raise UnsupportedModelError(
            f"this is {_model_name(config_name, diffusion_model)}, a Wan model this version of IaD has not read: before "
            "the identity can be added, which tokens it puts next to the video and which other streams enter its "
            "blocks must be known. Update ComfyUI-IaD, or report the model with your ComfyUI version.")
    if cls in ("LTXVModel", "LTXAVModel"):
        family, name = ("ltx2", "LTX-2") if cls == "LTXAVModel" else ("ltxv", "LTX-Video")
        blocks = diffusion_model.transformer_blocks
        return ArchInfo(family, f"{name}{label}", int(diffusion_model.inner_dim), int(blocks[0].attn2.heads), len(blocks))
    elif cls == "HunyuanVideo":
        # 1.5 is the same class; ComfyUI names its config from the SigLIP projection (vision_in).
        is_15 = (config_name in _SUPPORTED_HUNYUAN15_CONFIGS if config_name
                 else getattr(diffusion_model, "vision_in", None) is not None)
        if is_15 or config_name is None or config_name in _SUPPORTED_HUNYUAN_CONFIGS:
            family, name = ("hunyuan_video15", "HunyuanVideo 1.5") if is_15 else ("hunyuan_video", "HunyuanVideo")
            double, single = len(diffusion_model.double_blocks), len(diffusion_model.single_blocks)
            return ArchInfo(family, f"{name}{label}", int(diffusion_model.hidden_size),
                            int(diffusion_model.num_heads), double + single, double_blocks=double)
    raise UnsupportedModelError(
        f"{SUPPORTED_TEXT}; this is {_model_name(config_name, diffusion_model)}. "
        "Connect IaD Apply to a model loaded with Load Diffusion Model from one of those families."
    )


def _wan(diffusion_model, config_name: str | None, label: str) -> ArchInfo:
    variant = wan_variants.variant_of(diffusion_model, config_name)
    if variant.refused:
        raise UnsupportedModelError(f"IaD does not patch {variant.name}{label}: {variant.refused}.")
    blocks = getattr(diffusion_model, "blocks", None) or []
    kinds = sorted({type(b.cross_attn).__name__ for b in blocks} - set(wan_variants.PATCHABLE_CROSS_ATTENTION))
    if not blocks or kinds:
        raise UnsupportedModelError(
            f"{variant.name}{label} has blocks with {', '.join(kinds) or 'no'} text cross-attention, which IaD does not "
            "know how to extend. Update ComfyUI-IaD, or report the model with your ComfyUI version.")
    return ArchInfo("wan", f"{variant.name}{label}", int(diffusion_model.dim), int(diffusion_model.num_heads), len(blocks),
                    wan_variant=variant)


def normalise_family(family: str) -> str:
    f = str(family).lower().replace("-", "").replace("_", "").replace(" ", "")
    if f.startswith("wan"):
        return "wan"
    if f.startswith("ltx2") or f.startswith("ltxav"):
        return "ltx2"
    if f.startswith("ltx"):
        return "ltxv"
    if f.startswith("hunyuanvideo15") or f.startswith("hunyuanvideo1.5"):
        return "hunyuan_video15"
    if f.startswith("hunyuan"):
        return "hunyuan_video"
    return str(family)


def check_adapter_fits(arch: ArchInfo, config, adapter_name: str = "the IaD adapter") -> None:
    """Raise UnsupportedModelError when an adapter config (AdapterConfig) does not fit ``arch``:
    another family, another width (a 14B adapter on the 1.3B model), or blocks it lacks."""
    family = normalise_family(config.family)
    if family != arch.family:
        raise UnsupportedModelError(
            f"{adapter_name} was made for {FAMILY_NAMES.get(family, config.family)}, but the model is "
            f"{arch.variant}. Load the IaD adapter made for this model family."
        )
    if int(config.model_dim) != arch.model_dim:
        raise UnsupportedModelError(
            f"{adapter_name} was made for a {FAMILY_NAMES[arch.family]} model of "
            f"{describe_width(arch.family, config.model_dim)}, but the connected model has "
            f"{describe_width(arch.family, arch.model_dim)}. Load the adapter made for this model size."
        )
    bad = [b for b in config.blocks if not 0 <= int(b) < arch.num_blocks]
    if bad:
        raise UnsupportedModelError(
            f"{adapter_name} patches blocks {bad}, but {arch.variant} has only {arch.num_blocks} "
            "patchable blocks. Load the adapter made for this model."
        )
