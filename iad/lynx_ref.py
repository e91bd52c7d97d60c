"""Lynx full's reference adapter (``ref_layers.safetensors``): format, weights and the reference crop.

What Lynx does with it (bytedance/lynx ``WanRefAttnProcessor``, ``encode_reference_images``,
``lynx_infer.py``; docs/lynx.md, "Ref-adapter"):

1. the face is cropped with the extended ArcFace template at 256 px (``align_face(extend_face_crop=True,
   extend_ratio=0.8, face_size=256)``) and VAE-encoded;
2. one transformer pass at timestep 0 on that one-frame latent with the text "image of a face"
   records each block's self-attention input (the modulated ``norm1(x) * (1 + scale) + shift``);
   the unconditional pass uses the record of an all-zero image (mid-grey in [0, 1]);
3. every denoising pass adds ``ref_scale * attention(norm_q(q(x)), norm_k(to_k_ref(ref)), to_v_ref(ref))``
   (no RoPE on this term) to each block's self-attention before its output projection.

The file is an ``nn.ModuleList`` of one ``WanRefAttnProcessor`` per block:
``{i}.to_k_ref.weight`` [D, D], ``{i}.to_k_ref.bias`` [D], ``{i}.to_v_ref.*`` likewise, i = 0..N-1
(released: D = 5120, N = 40, Wan2.1-T2V-14B). ``LynxRefLayers`` keeps those key names, so the file
loads as it is. This module is torch-only; the ComfyUI side is ``iad/patching/wan_ref.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .lynx import (IP_LAYERS_FILE, REF_LAYERS_FILE, RESAMPLER_FILE, LynxFormatError, TensorInfo, _check_float,
                   _load_tensors, read_safetensors_header)

# Lynx's reference prompt and crop (lynx_pipeline.encode_reference_images, face_utils.align_face).
REF_PROMPT = "image of a face"
REF_FACE_SIZE = 256
REF_EXTEND_RATIO = 0.8
REF_TEMPLATE_SHIFT_Y = 10.0
# insightface's 5-point ArcFace template for 112 px (eyes, nose tip, mouth corners).
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
# The unconditional reference: Lynx multiplies the [-1, 1] image by 0, i.e. mid-grey in ComfyUI's [0, 1].
ZERO_IMAGE_VALUE = 0.5

_REF_KEY = re.compile(r"^(\d+)\.(to_k_ref|to_v_ref)\.(weight|bias)$")


@dataclass(frozen=True)
class RefLayout:
    """What ``ref_layers.safetensors`` holds: one K/V projection pair per block, ``dim`` wide."""

    num_blocks: int
    dim: int
    dtype: str

    def parameters(self) -> int:
        return self.num_blocks * 2 * (self.dim * self.dim + self.dim)


def inspect_ref_layers(infos: dict[str, TensorInfo], path="ref_layers.safetensors") -> RefLayout:
    """Validate a ``ref_layers`` header and return its layout; raises LynxFormatError naming the file."""
    if "latents" in infos or "proj_in.weight" in infos:
        raise LynxFormatError(f"{path} holds Lynx resampler weights ({RESAMPLER_FILE}), not the ref-adapter. Pick "
                              f"lynx_full/{REF_LAYERS_FILE}.")
    if any(".to_k_ip." in n or n.endswith(".registers") for n in infos):
        raise LynxFormatError(f"{path} holds Lynx identity layers ({IP_LAYERS_FILE}: keys like '0.to_k_ip.weight'), "
                              f"not the ref-adapter. Pick lynx_full/{REF_LAYERS_FILE}; {IP_LAYERS_FILE} goes to "
                              "IaD Model Loader.")
    foreign = sorted(n for n in infos if not _REF_KEY.match(n))
    if foreign or not infos:
        raise LynxFormatError(
            f"{path} is not a Lynx ref_layers file: {'it is empty' if not infos else f'unexpected keys such as {foreign[:3]}'}. "
            "Expected only '<i>.to_k_ref.weight/bias' and '<i>.to_v_ref.weight/bias', one entry per transformer block, as "
            "released by ByteDance in lynx_full.")
    _check_float(infos, path)
    entries = sorted({int(_REF_KEY.match(n).group(1)) for n in infos})
    if entries != list(range(len(entries))):
        missing = sorted(set(range(max(entries) + 1)) - set(entries))
        raise LynxFormatError(f"{path}: block entries {missing[:5]} are missing (entries must be 0..{max(entries)}); "
                              "the file is incomplete: re-download it.")
    first = infos.get("0.to_k_ref.weight")
    if first is None or len(first.shape) != 2 or first.shape[0] != first.shape[1]:
        raise LynxFormatError(f"{path}: '0.to_k_ref.weight' is missing or not a square matrix (Lynx's ref projections "
                              "map the model width onto itself).")
    dim = first.shape[0]
    for i in entries:
        for proj in ("to_k_ref", "to_v_ref"):
            for part, shape in (("weight", (dim, dim)), ("bias", (dim,))):
                name = f"{i}.{proj}.{part}"
                if name not in infos:
                    raise LynxFormatError(f"{path}: '{name}' is missing; every block needs to_k_ref and to_v_ref with "
                                          "weight and bias. The file is incomplete: re-download it.")
                if infos[name].shape != shape:
                    raise LynxFormatError(f"{path}: '{name}' has shape {list(infos[name].shape)}, expected {list(shape)} "
                                          f"(all entries as wide as entry 0, {dim}).")
    return RefLayout(num_blocks=len(entries), dim=dim, dtype=first.dtype)


def inspect_ref_file(path: str | Path) -> RefLayout:
    path = Path(path)
    if not path.is_file():
        raise LynxFormatError(f"{path} does not exist. Put Lynx full's {REF_LAYERS_FILE} in ComfyUI/models/iad/lynx_full/.")
    return inspect_ref_layers(read_safetensors_header(path), path)


class RefProjection(torch.nn.Module):
    """One block's ``WanRefAttnProcessor`` weights: reference features -> self-attention K and V."""

    def __init__(self, dim: int, operations=torch.nn):
        super().__init__()
        self.to_k_ref = operations.Linear(dim, dim, bias=True)
        self.to_v_ref = operations.Linear(dim, dim, bias=True)


class LynxRefLayers(torch.nn.ModuleList):
    """Every block's reference K/V projections, keyed as Lynx's file (``{i}.to_k_ref.weight`` ...)."""

    def __init__(self, layout: RefLayout, operations=torch.nn):
        super().__init__(RefProjection(layout.dim, operations) for _ in range(layout.num_blocks))
        self.layout = layout

    def block_kv(self, block: int, features: torch.Tensor, norm_k) -> tuple[torch.Tensor, torch.Tensor]:
        """``(norm_k(to_k_ref(f)), to_v_ref(f))`` for one block's recorded features ``f`` [B, L, D];
        ``norm_k`` is that block's own self-attention key norm (Lynx's ``attn.norm_k``)."""
        layer = self[block]
        return norm_k(layer.to_k_ref(features)), layer.to_v_ref(features)


def load_ref_layers(path: str | Path, dtype: torch.dtype | None = None, operations=torch.nn) -> LynxRefLayers:
    """Lynx's ``ref_layers.safetensors`` as ``LynxRefLayers`` (header validated before any data is read)."""
    path = Path(path)
    layout = inspect_ref_file(path)
    state = _load_tensors(path)   # refuses unreadable files and NaN/inf weights, naming the file
    with torch.device("meta"):
        layers = LynxRefLayers(layout, operations)
    layers.load_state_dict(state, assign=True)
    return layers.to(dtype) if dtype is not None else layers


def reference_template(size: int = REF_FACE_SIZE, extend_ratio: float = REF_EXTEND_RATIO) -> np.ndarray:
    """The 5 target points of Lynx's extended crop at ``size`` px (``get_arcface_dst(extend_face_crop=True)``
    then ``estimate_norm``'s scaling: sizes divisible by 128 but not 112 scale by size/128 and shift x
    by 8 * size/128, as insightface does)."""
    dst = ARCFACE_TEMPLATE_112.copy()
    dst[:, 1] += REF_TEMPLATE_SHIFT_Y
    dst = (dst - 112 / 2) * extend_ratio + 112 / 2
    if size % 112 == 0:
        return dst * (size / 112.0)
    if size % 128 == 0:
        ratio = size / 128.0
        dst = dst * ratio
        dst[:, 0] += 8.0 * ratio
        return dst
    raise ValueError(f"Lynx's crop size must be a multiple of 112 or 128, got {size}.")


def reference_crop(rgb: np.ndarray, kps: np.ndarray, size: int = REF_FACE_SIZE,
                   extend_ratio: float = REF_EXTEND_RATIO) -> np.ndarray:
    """Lynx's extended face crop: a similarity transform of the 5 keypoints onto ``reference_template``,
    ``cv2.warpAffine`` (bilinear, border 0). A pure warp: RGB in, RGB out, uint8 (size, size, 3)."""
    import warnings

    import cv2
    from skimage.transform import SimilarityTransform

    kps = np.asarray(kps, dtype=np.float32).reshape(5, 2)
    transform = SimilarityTransform()
    with warnings.catch_warnings():  # scikit-image's deprecation of estimate(), the call insightface uses too
        warnings.simplefilter("ignore", FutureWarning)
        fitted = transform.estimate(kps, reference_template(size, extend_ratio))
    if not fitted:
        raise ValueError("The face keypoints are degenerate (no similarity transform fits them); use another photo.")
    matrix = transform.params[0:2, :]
    return cv2.warpAffine(np.ascontiguousarray(rgb), matrix, (size, size), borderValue=0.0)
