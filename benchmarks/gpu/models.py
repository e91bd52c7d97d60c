"""The GPU check's models, generated on the machine that runs it (nothing big travels): random weights
in the released files' key names and shapes, written as safetensors and loaded by ComfyUI's own loader.

- Wan 2.1 T2V 1.3B, the whole model (width 1536, 12 heads, feed-forward 8960, 30 blocks), bf16;
- a slice of Wan 2.1 14B (width 5120, 40 heads, feed-forward 13824, the first ``blocks`` blocks), bf16 and
  fp8_scaled (every Linear weight float8_e4m3fn with a per-tensor ``scale_weight`` and the ``scaled_fp8``
  marker: the format of Comfy-Org's repackaged ``*_fp8_scaled`` files, which v0.28.2 converts to its
  quantized tensors);
- an IaD adapter for the 1.3B (the default configuration, every block), Lynx full for the slice at the
  released resampler and token sizes (one ip/ref entry per block of the slice), the Wan VAE (width 96),
  IR-SE50 (tests/harness/lynx_files.py) and a generated face-analysis pack.

``Sizes`` holds the GPU sizes and the CPU smoke run's tiny ones: the same code, other numbers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness import lynx_files
from harness import tiny_models as tiny


@dataclass(frozen=True)
class Sizes:
    wan13: dict                      # WanModel kwargs of the 1.3B
    wan14: dict                      # ... of the 14B slice
    video: tuple[int, int, int]      # width, height, frames (480p x 81 on the GPU)
    text_tokens: int
    steps: int
    windows: tuple[int, int]         # context_length, context_overlap (video frames)
    multigpu_video: tuple[int, int, int]
    lynx: dict = field(default_factory=dict)
    vae_dim: int = 96
    adapter: dict = field(default_factory=dict)
    face: tuple[int, int, int] = (320, 64, 640)   # photo size, face size, face detector input size


GPU = Sizes(wan13=dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
            wan14=dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=4),
            video=(832, 480, 81), text_tokens=512, steps=3, windows=(33, 16), multigpu_video=(480, 272, 33),
            lynx=dict(dim=1280, heads=20, depth=4, queries=16, registers=16), vae_dim=96, adapter={})
SMOKE = Sizes(wan13=dict(dim=128, ffn_dim=256, num_heads=1, num_layers=2),
              wan14=dict(dim=256, ffn_dim=512, num_heads=2, num_layers=2),
              video=(64, 64, 9), text_tokens=16, steps=3, windows=(5, 4), multigpu_video=(64, 64, 5),
              lynx=dict(dim=128, heads=2, depth=2, queries=4, registers=4), vae_dim=8,
              adapter=dict(token_dim=64, num_tokens=4, num_registers=2, resampler_dim=32, resampler_depth=2,
                           resampler_heads=2, resampler_dim_head=16, decoupler_act_dim=16, decoupler_hidden=64),
              face=(128, 64, 128))

WAN13_FILE = "iad-gpu-wan2.1-t2v-1.3B-layout-bf16.safetensors"
WAN14_FILE = "iad-gpu-wan2.1-t2v-14B-slice-bf16.safetensors"
WAN14_FP8_FILE = "iad-gpu-wan2.1-t2v-14B-slice-fp8_scaled.safetensors"
VAE_FILE = "iad-gpu-wan2.1-vae.safetensors"
ADAPTER_FILE = "iad-gpu-adapter-1.3B.safetensors"
LYNX_FOLDER = "iad-gpu-lynx-full"
IRSE50_FILE = "iad-gpu-irse50.safetensors"
FACE_IMAGE = "iad_gpu_face.png"


def _init(name: str, shape: torch.Size, generator: torch.Generator, device) -> torch.Tensor:
    """tests/harness/tiny_models.py's initialisation rules (activations stay O(1) through the net),
    drawn on ``device`` (the GPU makes a 1.3B model's weights in a second)."""
    leaf = name.rsplit(".", 1)[-1]
    if len(shape) == 1 and ("norm" in name or leaf == "gamma"):
        return torch.ones(shape, device=device)
    noise = torch.randn(shape, generator=generator, device=device)
    if len(shape) <= 1 or leaf == "bias" or "modulation" in name:
        return noise * 0.02
    return noise / math.sqrt(max(math.prod(shape[1:]), 1))


def wan_state(kwargs: dict, seed: int, device) -> dict[str, torch.Tensor]:
    """Random bf16 weights under ComfyUI's own WanModel T2V key names and shapes (built on the meta
    device: no memory)."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    with torch.device("meta"):
        shapes = WanModel(model_type="t2v", in_dim=16, out_dim=16, operations=comfy.ops.disable_weight_init,
                          **kwargs).state_dict()
    generator = torch.Generator(device=device).manual_seed(seed)
    return {k: _init(k, v.shape, generator, device).to(torch.bfloat16) for k, v in sorted(shapes.items())}


def fp8_scaled(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every 2-D ``.weight`` (the Linear layers) as float8_e4m3fn over a per-tensor scale, with the
    ``scaled_fp8`` marker (ComfyUI's fp8_scaled diffusion-model files)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 2:
            scale = (value.float().abs().max() / 448.0).clamp_min(1e-12)
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key[:-len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[key] = value
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def _save(state: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(partial), metadata=metadata or {})
    os.replace(partial, path)
    return path


def generate(folder: Path, sizes: Sizes, device, fp8: bool) -> dict[str, Path | None]:
    """Every file the server runs need, in ``folder`` (made once: a file that exists is reused)."""
    from harness import insightface_pack
    from harness.apply_fixtures import module

    folder = Path(folder)
    files: dict[str, Path | None] = {}
    marker = {"iad_gpu_check": json.dumps({"sizes": str(sizes)})}
    path = folder / WAN13_FILE
    if not path.exists():
        _save(wan_state(sizes.wan13, 13, device), path, marker)
    files["wan13"] = path
    path, fp8_path = folder / WAN14_FILE, folder / WAN14_FP8_FILE
    if not path.exists() or (fp8 and not fp8_path.exists()):
        state = wan_state(sizes.wan14, 14, device)
        _save(state, path, marker)
        if fp8:
            _save(fp8_scaled(state), fp8_path, marker)
        del state
    files["wan14"], files["wan14_fp8"] = path, fp8_path if fp8 else None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()   # this process's cached blocks would be missing from the server's GPU
    path = folder / VAE_FILE
    if not path.exists():
        _save(tiny.build_wan_vae_state_dict(tiny.WanVAESpec(VAE_FILE, dim=sizes.vae_dim)), path)
    files["vae"] = path
    path = folder / ADAPTER_FILE
    if not path.exists():
        adapter_module = module("iad.adapter")
        dim, blocks = sizes.wan13["dim"], list(range(sizes.wan13["num_layers"]))
        config = adapter_module.AdapterConfig(**{"family": "wan2.1", "model_dim": dim, "token_dim": dim, "blocks": blocks,
                                                 "name": "gpu-check random adapter", **sizes.adapter})
        module("iad.checkpoint").save_adapter(adapter_module.IdentityAdapter.random(config, seed=0), path, torch.bfloat16)
    files["adapter"] = path
    lynx = folder / LYNX_FOLDER
    if not (lynx / "ref_layers.safetensors").exists():
        width, blocks = sizes.wan14["dim"], sizes.wan14["num_layers"]
        spec = lynx_files.LynxSpec("full", output=width, model_dim=width, entries=blocks, **sizes.lynx)
        lynx_files.write_lynx(lynx, spec, dtype=torch.bfloat16)
        lynx_files.write_ref_layers(lynx, blocks=blocks, dim=width, dtype=torch.bfloat16)
    files["lynx"] = lynx
    path = folder / IRSE50_FILE
    if not path.exists():
        from iad.recognizers.irse50 import expected_keys

        _save(lynx_files.random_irse50_state(expected_keys()), path)
    files["irse50"] = path
    files["face_pack"] = insightface_pack.ensure_pack(insightface_pack.ANTELOPEV2)
    path = folder / FACE_IMAGE
    if not path.exists():
        import numpy as np
        from PIL import Image

        size, face_size, _ = sizes.face
        face = insightface_pack.face_image(size=size, face=face_size, person=0, background=80, centre=(size // 2, size // 2))
        Image.fromarray(np.ascontiguousarray(face)).save(path)
    files["face_image"] = path
    return files
