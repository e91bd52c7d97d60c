"""Tiny deterministic stand-ins for real model files, in the real formats.

The real weights (Wan 2.1/2.2, its VAE, ...) can never be downloaded here, so the tests generate
small random-weight models with the *same key names and shape rules* and load them through
ComfyUI's own loaders (``UNETLoader`` / ``comfy.sd.load_diffusion_model``, ``VAELoader``). The
modules are instantiated from ComfyUI's own classes, so the key layout can never drift from what
ComfyUI's detector (``comfy/model_detection.py``) expects.

ComfyUI infers a Wan config from the weights: ``head.modulation`` [1,2,dim] gives dim and
heads = dim // 128 (dim must be a multiple of 128); ``head.head.weight`` [4*out_dim, dim];
``blocks.0.ffn.0.weight`` [ffn, dim]; the count of ``blocks.N.``; ``patch_embedding.weight``
[dim, in_dim, 1, 2, 2]; ``text_embedding.0.weight`` must be [dim, 4096] (text_dim is fixed);
``img_emb.*`` present means I2V. The VAE's width is read from ``decoder.head.0.gamma``.

Files are seeded, written atomically and cached by (generator version, spec), so every run and
every process gets bit-identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .paths import TINY_MODELS_DIR

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class WanSpec:
    """A Wan diffusion model shape. dim must be a multiple of 128 (heads = dim // 128)."""

    filename: str
    model_type: str = "t2v"  # "t2v" or "i2v"
    dim: int = 128
    ffn_dim: int = 256
    num_layers: int = 2
    in_dim: int = 16
    out_dim: int = 16
    seed: int = 0
    dtype: str = "float32"


@dataclass(frozen=True)
class WanVAESpec:
    filename: str
    dim: int = 8
    seed: int = 0


WAN21_T2V = WanSpec("iad-tiny-wan2.1-t2v.safetensors")
# Wan 2.2 TI2V 5B layout: 48 latent channels in and out (ComfyUI matches out_dim 48 as Wan 2.2 5B).
WAN22_5B = WanSpec("iad-tiny-wan2.2-ti2v-5b.safetensors", in_dim=48, out_dim=48, seed=1)
# Wan 2.1 I2V layout: 16 noise + 4 mask + 16 image channels in, CLIP-vision image embedding (img_emb).
# Stored in fp16 like the repackaged releases (and to keep its 1280-wide image projection small).
WAN21_I2V = WanSpec("iad-tiny-wan2.1-i2v.safetensors", model_type="i2v", in_dim=36, seed=2, dtype="float16")
WAN21_VAE = WanVAESpec("iad-tiny-wan2.1-vae.safetensors")

ALL_SPECS = (WAN21_T2V, WAN22_5B, WAN21_I2V, WAN21_VAE)


def _spec_key(spec) -> str:
    payload = json.dumps({"v": GENERATOR_VERSION, "type": type(spec).__name__, **asdict(spec)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _seeded_like(name: str, tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A deterministic initialisation that keeps activations finite and O(1) through the net."""
    shape = tensor.shape
    leaf = name.rsplit(".", 1)[-1]
    if tensor.ndim == 1 and ("norm" in name or leaf in ("gamma",)):
        return torch.ones(shape)  # RMS/LayerNorm scales
    if tensor.ndim <= 1 or leaf == "bias":
        return torch.randn(shape, generator=generator) * 0.02
    if "modulation" in name:
        return torch.randn(shape, generator=generator) * 0.02
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=generator) / math.sqrt(max(fan_in, 1))


def _randomise(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = module.state_dict()
    return {name: _seeded_like(name, state[name], generator).contiguous() for name in sorted(state)}


def build_wan_state_dict(spec: WanSpec) -> dict[str, torch.Tensor]:
    from .comfy_env import import_comfy

    import_comfy()
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    model = WanModel(
        model_type=spec.model_type,
        in_dim=spec.in_dim,
        dim=spec.dim,
        ffn_dim=spec.ffn_dim,
        out_dim=spec.out_dim,
        num_heads=spec.dim // 128,
        num_layers=spec.num_layers,
        operations=comfy.ops.disable_weight_init,  # no costly init: we overwrite every tensor
    )
    dtype = getattr(torch, spec.dtype)
    return {k: v.to(dtype) for k, v in _randomise(model, spec.seed).items()}


def build_wan_vae_state_dict(spec: WanVAESpec) -> dict[str, torch.Tensor]:
    from .comfy_env import import_comfy

    import_comfy()
    from comfy.ldm.wan.vae import WanVAE

    # The same fixed config ComfyUI uses (comfy/sd.py), only the width is ours.
    vae = WanVAE(dim=spec.dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    return _randomise(vae, spec.seed)


def ensure(spec, directory: Path = TINY_MODELS_DIR) -> Path:
    """Path to the generated file for ``spec``, generating it once (atomic, process-safe)."""
    target_dir = Path(directory) / _spec_key(spec)
    target = target_dir / spec.filename
    if target.exists():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, WanSpec):
        state = build_wan_state_dict(spec)
    elif isinstance(spec, WanVAESpec):
        state = build_wan_vae_state_dict(spec)
    else:
        raise TypeError(f"unknown tiny model spec {spec!r}")
    fd, tmp = tempfile.mkstemp(dir=target_dir, suffix=".partial")
    os.close(fd)
    save_file(state, tmp, metadata={"iad_tiny_model": json.dumps(asdict(spec)), "generator_version": str(GENERATOR_VERSION)})
    os.replace(tmp, target)
    return target


def ensure_all(directory: Path = TINY_MODELS_DIR) -> dict[str, Path]:
    return {spec.filename: ensure(spec, directory) for spec in ALL_SPECS}


# -- Other video families (LTX-Video, HunyuanVideo), added for the IaD Apply patch tests ----------
# Both take T5/LLaVA-shaped conditioning [1, L, 4096], so the test-only Wan conditioning node feeds
# them too. They are generated on demand (not part of ALL_SPECS/the default server models).


@dataclass(frozen=True)
class LTXVSpec:
    """An LTX-Video transformer. ComfyUI reads heads as 32 fixed and head_dim from attn2.to_k:
    inner = 32 * head_dim; cross_attention_dim = inner here (as in the real 2B model)."""

    filename: str
    head_dim: int = 4
    num_layers: int = 2
    seed: int = 0


@dataclass(frozen=True)
class HunyuanVideoSpec:
    """A HunyuanVideo 1.0 T2V transformer: hidden 128 (heads = hidden // 128), double and single
    blocks, a CLIP-L pooled vector input (vector_in, 768) and the guidance embedding, as the real
    one has (without vector_in ComfyUI would match it as HunyuanImage 2.1)."""

    filename: str
    hidden_size: int = 128
    depth: int = 2
    depth_single_blocks: int = 2
    seed: int = 0


@dataclass(frozen=True)
class LTX2Spec:
    """An LTX-2 audio-video transformer (ComfyUI's ``LTXAVModel``; ComfyUI v0.2x only). ComfyUI
    tells it from LTX-Video by ``audio_adaln_single`` and reads the rest of its config from the
    file's ``config`` metadata, as the released checkpoints carry it. LTX-2 (19B) layout: the text
    connectors run on the raw text features (``caption_channels`` wide), then the caption
    projections. Video 32 heads x ``head_dim``; audio ``audio_heads`` x ``audio_head_dim``."""

    filename: str
    head_dim: int = 4
    audio_heads: int = 4
    audio_head_dim: int = 16
    caption_channels: int = 128
    connector_heads: int = 4
    num_layers: int = 2
    seed: int = 0

    def transformer_config(self) -> dict:
        return {"num_attention_heads": 32, "attention_head_dim": self.head_dim, "audio_num_attention_heads": self.audio_heads,
                "audio_attention_head_dim": self.audio_head_dim, "audio_cross_attention_dim": self.audio_heads * self.audio_head_dim,
                "caption_channels": self.caption_channels, "connector_num_attention_heads": self.connector_heads,
                "connector_attention_head_dim": self.caption_channels // self.connector_heads, "num_layers": self.num_layers}


@dataclass(frozen=True)
class HunyuanVideo15Spec:
    """A HunyuanVideo 1.5 T2V transformer: double blocks only (the release has 54, no single
    blocks), the SigLIP ``vision_in`` projection (1152 wide; ComfyUI names the config from it), the
    type embedding of text/byT5/vision tokens, the byT5 glyph branch, 32 latent channels + 32 image
    channels + 1 mask channel in, no pooled-text vector. Hidden ``hidden_size`` (heads = hidden // 128)."""

    filename: str
    hidden_size: int = 128
    depth: int = 3
    context_in_dim: int = 4096
    seed: int = 0


LTXV_TINY = LTXVSpec("iad-tiny-ltxv.safetensors", seed=3)
HUNYUAN_VIDEO_TINY = HunyuanVideoSpec("iad-tiny-hunyuan-video.safetensors", seed=4)
LTX2_TINY = LTX2Spec("iad-tiny-ltx2.safetensors", seed=5)
HUNYUAN_VIDEO15_TINY = HunyuanVideo15Spec("iad-tiny-hunyuan-video-1.5.safetensors", seed=6)
OTHER_FAMILY_SPECS = (LTXV_TINY, HUNYUAN_VIDEO_TINY, LTX2_TINY, HUNYUAN_VIDEO15_TINY)


def other_family_specs() -> tuple:
    """OTHER_FAMILY_SPECS that the running ComfyUI can build (LTX-2 came with ComfyUI 0.7)."""
    from .paths import comfyui_dir

    has_ltx2 = (comfyui_dir() / "comfy" / "ldm" / "lightricks" / "av_model.py").is_file()
    return tuple(spec for spec in OTHER_FAMILY_SPECS if has_ltx2 or not isinstance(spec, LTX2Spec))


def build_ltxv_state_dict(spec: LTXVSpec) -> dict[str, torch.Tensor]:
    from .comfy_env import import_comfy

    import_comfy()
    import comfy.ops
    from comfy.ldm.lightricks.model import LTXVModel

    inner = 32 * spec.head_dim
    model = LTXVModel(in_channels=128, cross_attention_dim=inner, attention_head_dim=spec.head_dim,
                      num_attention_heads=32, caption_channels=4096, num_layers=spec.num_layers,
                      operations=comfy.ops.disable_weight_init)
    return _randomise(model, spec.seed)


def build_hunyuan_video_state_dict(spec: HunyuanVideoSpec) -> dict[str, torch.Tensor]:
    from .comfy_env import import_comfy

    import_comfy()
    import dataclasses

    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo, HunyuanVideoParams

    config = dict(
        image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
        hidden_size=spec.hidden_size, mlp_ratio=4.0, num_heads=spec.hidden_size // 128, depth=spec.depth,
        depth_single_blocks=spec.depth_single_blocks, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 2, 2],
        qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False, use_cond_type_embedding=False,
        vision_in_dim=None,
    )
    # Config fields newer ComfyUI added (feature-detected, so every supported version builds the
    # same HunyuanVideo 1.0 model): meanflow_sum came with the HunyuanVideo 1.5 distilled models.
    known = {f.name for f in dataclasses.fields(HunyuanVideoParams)}
    config.update({k: v for k, v in {"meanflow_sum": False}.items() if k in known})
    model = HunyuanVideo(**config, operations=comfy.ops.disable_weight_init)
    return _randomise(model, spec.seed)


def build_ltx2_state_dict(spec: LTX2Spec) -> dict[str, torch.Tensor]:
    from .comfy_env import import_comfy

    import_comfy()
    import comfy.ops
    from comfy.ldm.lightricks.av_model import LTXAVModel   # ComfyUI v0.2x; the caller checks

    config = spec.transformer_config()
    model = LTXAVModel(in_channels=128, audio_in_channels=128, cross_attention_dim=32 * spec.head_dim,
                       **{k: v for k, v in config.items() if k not in ("connector_num_attention_heads", "connector_attention_head_dim")},
                       connector_num_attention_heads=config["connector_num_attention_heads"],
                       connector_attention_head_dim=config["connector_attention_head_dim"],
                       operations=comfy.ops.disable_weight_init)
    return _randomise(model, spec.seed)


def build_hunyuan_video15_state_dict(spec: HunyuanVideo15Spec) -> dict[str, torch.Tensor]:
    from .comfy_env import import_comfy

    import_comfy()
    import dataclasses

    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo, HunyuanVideoParams

    config = dict(
        image_model="hunyuan_video", in_channels=65, out_channels=32, vec_in_dim=None, context_in_dim=spec.context_in_dim,
        hidden_size=spec.hidden_size, mlp_ratio=4.0, num_heads=spec.hidden_size // 128, depth=spec.depth,
        depth_single_blocks=0, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 1, 1], qkv_bias=True,
        guidance_embed=False, byt5=True, meanflow=False, use_cond_type_embedding=True, vision_in_dim=1152)
    known = {f.name for f in dataclasses.fields(HunyuanVideoParams)}
    config.update({k: v for k, v in {"meanflow_sum": True}.items() if k in known})   # v0.2x: what its detector sets
    model = HunyuanVideo(**config, operations=comfy.ops.disable_weight_init)
    return _randomise(model, spec.seed)


def _metadata(spec) -> dict[str, str]:
    out = {"iad_tiny_model": json.dumps(asdict(spec)), "generator_version": str(GENERATOR_VERSION)}
    if isinstance(spec, LTX2Spec):   # where ComfyUI reads an LTX-2 checkpoint's config from
        out["config"] = json.dumps({"transformer": spec.transformer_config()})
    return out


_OTHER_BUILDERS = {LTXVSpec: build_ltxv_state_dict, HunyuanVideoSpec: build_hunyuan_video_state_dict,
                   LTX2Spec: build_ltx2_state_dict, HunyuanVideo15Spec: build_hunyuan_video15_state_dict}


def ensure_other(spec, directory: Path = TINY_MODELS_DIR) -> Path:
    """Like ``ensure`` for the LTX-Video / HunyuanVideo specs (same caching and atomic write)."""
    target_dir = Path(directory) / _spec_key(spec)
    target = target_dir / spec.filename
    if target.exists():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    state = _OTHER_BUILDERS[type(spec)](spec)
    fd, tmp = tempfile.mkstemp(dir=target_dir, suffix=".partial")
    os.close(fd)
    save_file(state, tmp, metadata=_metadata(spec))
    os.replace(tmp, target)
    return target
