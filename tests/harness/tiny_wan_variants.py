"""Tiny deterministic stand-ins for every Wan variant ComfyUI loads, in the real format.

Each is built from ComfyUI's own class (``comfy/ldm/wan``) at width 128 (one head of 128, as
ComfyUI's detector derives heads = dim // 128), with every tensor filled by the seeded initialiser
of ``tiny_models``, and saved so that ``comfy.sd.load_diffusion_model`` detects exactly the config
named in the spec (``tests/test_wan_variants_inprocess.py`` checks that for every spec). What the
detector reads (docs/patching.md, "Wan variants"):

- VACE: ``vace_patch_embedding`` (vace_in_dim 96 = 32 latent + 64 mask channels) and ``vace_blocks``;
- Fun Camera: ``control_adapter`` (in 32 with CLIP image tokens = 2.1, in 36 without = 2.2);
- Fun Control 2.1: an I2V layout with 48 input channels; 2.2: T2V with ``ref_conv`` (52 in);
- S2V: ``casual_audio_encoder``; HuMo: ``audio_proj``; Animate: ``face_adapter.fuser_blocks`` (one
  per 5 blocks, so 5 blocks); SCAIL: ``patch_embedding_pose`` (+ ``patch_embedding_mask``: SCAIL-2);
  WanDancer: ``patch_embedding_global`` with 36 input channels;
- the causal model: plain Wan T2V weights whose safetensors metadata says ``causal_ar``.

InfiniteTalk runs on plain Wan I2V weights plus a model-patch file (``MultiTalkModelPatch``, 40
audio heads fixed, so its width must divide by 40: 160 here).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from .paths import TINY_MODELS_DIR
from .tiny_models import _randomise, _spec_key


@dataclass(frozen=True)
class WanVariantSpec:
    filename: str
    config: str                  # what ComfyUI must detect (model_config class name)
    cls: str                     # "module:Class" under comfy.ldm.wan
    kwargs: dict = field(default_factory=dict)
    dim: int = 128
    num_layers: int = 2
    metadata: dict = field(default_factory=dict)
    seed: int = 0
    dtype: str = "float32"
    needs: str = ""              # a file of ComfyUI's the variant needs besides its class and config

    def __hash__(self):
        return hash(self.filename)


VACE = WanVariantSpec("iad-tiny-wan-vace.safetensors", "WAN21_Vace", "model:VaceWanModel",
                      {"in_dim": 16, "vace_layers": 2, "vace_in_dim": 96}, seed=11)
CAMERA21 = WanVariantSpec("iad-tiny-wan2.1-fun-camera.safetensors", "WAN21_Camera", "model:CameraWanModel",
                          {"model_type": "camera", "in_dim": 32}, seed=12, dtype="float16")
CAMERA22 = WanVariantSpec("iad-tiny-wan2.2-fun-camera.safetensors", "WAN22_Camera", "model:CameraWanModel",
                          {"model_type": "camera_2.2", "in_dim": 36}, seed=13)
FUN_CONTROL21 = WanVariantSpec("iad-tiny-wan2.1-fun-control.safetensors", "WAN21_FunControl2V", "model:WanModel",
                               {"model_type": "i2v", "in_dim": 48}, seed=14, dtype="float16")
FUN_CONTROL22 = WanVariantSpec("iad-tiny-wan2.2-fun-control.safetensors", "WAN21_T2V", "model:WanModel",
                               {"model_type": "t2v", "in_dim": 52, "in_dim_ref_conv": 16}, seed=15)
S2V = WanVariantSpec("iad-tiny-wan2.2-s2v.safetensors", "WAN22_S2V", "model:WanModel_S2V", {"in_dim": 16}, seed=16)
HUMO = WanVariantSpec("iad-tiny-wan-humo.safetensors", "WAN21_HuMo", "model:HumoWanModel", {"in_dim": 16}, seed=17,
                      dtype="float16")
ANIMATE = WanVariantSpec("iad-tiny-wan2.2-animate.safetensors", "WAN22_Animate", "model_animate:AnimateWanModel",
                         {"in_dim": 36}, num_layers=5, seed=18, dtype="float16")
SCAIL = WanVariantSpec("iad-tiny-wan-scail.safetensors", "WAN21_SCAIL", "model:SCAILWanModel", {"in_dim": 20},
                       seed=19, dtype="float16")
SCAIL2 = WanVariantSpec("iad-tiny-wan-scail2.safetensors", "WAN21_SCAIL2", "model:SCAIL2WanModel", {"in_dim": 20},
                        seed=20, dtype="float16")
DANCER = WanVariantSpec("iad-tiny-wan2.2-dancer.safetensors", "WAN22_WanDancer", "model_wandancer:WanDancerModel",
                        {"in_dim": 36}, seed=21, dtype="float16")
CAUSAL = WanVariantSpec("iad-tiny-wan-causal.safetensors", "WAN21_CausalAR_T2V", "model:WanModel", {"model_type": "t2v"},
                        metadata={"config": json.dumps({"transformer": {"causal_ar": True}})}, seed=22)
# InfiniteTalk's base: Wan 2.1 I2V at width 160 (its audio patch has 40 heads).
INFINITETALK_BASE = WanVariantSpec("iad-tiny-wan2.1-i2v-160.safetensors", "WAN21_I2V", "model:WanModel",
                                   {"model_type": "i2v", "in_dim": 36}, dim=160, seed=23, dtype="float16",
                                   needs="comfy/ldm/wan/model_multitalk.py")
INFINITETALK_PATCH = "iad-tiny-wan-infinitetalk-patch.safetensors"

VARIANT_SPECS = (VACE, CAMERA21, CAMERA22, FUN_CONTROL21, FUN_CONTROL22, S2V, HUMO, ANIMATE, SCAIL, SCAIL2, DANCER, CAUSAL,
                 INFINITETALK_BASE)


def available(spec: WanVariantSpec) -> bool:
    """Whether the ComfyUI under test has this variant: its class, its config and what else it needs
    (SCAIL, Dancer, the causal model and InfiniteTalk came after 0.3.75). Read from the tree, not
    from a version number, so a user's own ComfyUI is judged by what it has."""
    from .paths import comfyui_dir

    root = comfyui_dir()
    module, name = spec.cls.split(":")
    source = root / "comfy" / "ldm" / "wan" / f"{module}.py"
    return (source.is_file() and f"class {name}(" in source.read_text()
            and f"class {spec.config}(" in (root / "comfy" / "supported_models.py").read_text()
            and (not spec.needs or (root / spec.needs).is_file()))


def _build(spec: WanVariantSpec) -> dict[str, torch.Tensor]:
    from .comfy_env import import_comfy

    import_comfy()
    import importlib

    import comfy.ops

    module, name = spec.cls.split(":")
    cls = getattr(importlib.import_module(f"comfy.ldm.wan.{module}"), name)
    model = cls(dim=spec.dim, ffn_dim=2 * spec.dim, num_heads=spec.dim // 128, num_layers=spec.num_layers, out_dim=16,
                operations=comfy.ops.disable_weight_init, **spec.kwargs)
    dtype = getattr(torch, spec.dtype)
    return {k: v.to(dtype) for k, v in _randomise(model, spec.seed).items()}


def _build_infinitetalk_patch(dim: int, seed: int) -> dict[str, torch.Tensor]:
    from .comfy_env import import_comfy

    import_comfy()
    import comfy.ops
    from comfy_extras.nodes_model_patch import MultiTalkModelPatch

    patch = MultiTalkModelPatch(in_dim=dim, intermediate_dim=8, out_dim=8, operations=comfy.ops.disable_weight_init)
    return {k: v.to(torch.float16) for k, v in _randomise(patch, seed).items()}


def _write(target: Path, state: dict, metadata: dict) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    os.close(fd)
    save_file(state, tmp, metadata=metadata)
    os.replace(tmp, target)
    return target


def ensure_variant(spec: WanVariantSpec, directory: Path = TINY_MODELS_DIR) -> Path:
    """The generated file for ``spec`` (made once, atomically; cached by the spec's content)."""
    target = Path(directory) / f"variant-{_spec_key(spec)}" / spec.filename
    if target.exists():
        return target
    meta = {"iad_tiny_model": json.dumps(asdict(spec)), **spec.metadata}
    return _write(target, _build(spec), meta)


def ensure_infinitetalk_patch(directory: Path = TINY_MODELS_DIR) -> Path:
    """The tiny InfiniteTalk model patch (``ModelPatchLoader`` reads it from models/model_patches)."""
    dim, seed = INFINITETALK_BASE.dim, 24
    target = Path(directory) / f"variant-infinitetalk-{dim}-{seed}" / INFINITETALK_PATCH
    if target.exists():
        return target
    return _write(target, _build_infinitetalk_patch(dim, seed), {"iad_tiny_model": json.dumps({"dim": dim, "seed": seed})})
