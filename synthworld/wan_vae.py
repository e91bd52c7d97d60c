"""A tiny Wan 2.1 VAE for the synthetic world: ComfyUI's own ``WanVAE`` class, trained on the
world's clips, saved with the key names of ``wan_2.1_vae.safetensors`` so *Load VAE* and *VAE
Decode* / *VAE Encode* use it like the real one.

Why it is shaped like this:

- Wan's VAE compresses 8x in space and 4x in time (a clip of ``4k+1`` frames <-> ``k+1`` latent
  frames). The world's diffusion model works on ``8x8`` latents of 9 frames (its latent codec,
  ``codec.py``, is 4x in space and 1x in time on the world's 32x32x9 clips). So the VAE's *video*
  is the world clip shown at 64x64 (each pixel 2x2) and 33 frames: world frame ``k`` is video
  frame ``4k`` and the three frames between are linear blends (``presentation_video``). Average
  pooling by 2 of video frame ``4k`` gives world frame ``k`` back; that is how the world's judges
  read what *VAE Decode* returns (``world_frames``).
- Its latent space is the codec's: the encoder learns to map the 64x64x33 video to the codec's
  latents (in ComfyUI's raw, pre-``process_in`` Wan 2.1 space) and the decoder to map those
  latents back to the video. The world's base model and adapters, trained on codec latents, are
  therefore unchanged, and the experiment keeps decoding with the exact codec.
- Training uses windows of consecutive world frames (each is itself a valid clip of the world),
  in two phases: windows of 3 frames (9 video frames, 3 latent frames; cheap), then of 5. Both
  halves of the VAE are causal in time and carry caches of the previous chunk's features, and
  those caches are full only from the fourth or fifth latent frame on: trained on 3-frame
  windows alone, the VAE decoded frames 0-2 of held-out clips with a mean absolute error of 0.02
  and every later frame with 0.14. (Whole frames in space: random 4x4-latent crops cost a
  quarter per sample but gave twice the error for the same time.)

Torch-only at import; ComfyUI's class is imported inside the functions that need it.
Single-threaded, seeded: the saved file is identical bit for bit on the same software stack.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from . import world
from ._iad import library

VAE_DIM = 8                      # ComfyUI reads the width back from ``decoder.head.0.gamma``
TIME_STRIDE = 4                  # Wan 2.1: 4 video frames per latent frame after the first
SPACE_SCALE = 2                  # video pixels per world pixel (8x VAE / 4x codec)
WINDOW = 3                       # world frames per training window (first phase)
TUNE_WINDOW = 5                  # second phase: long enough for every cache of the causal convolutions to be full
VIDEO_SIZE = world.SIZE * SPACE_SCALE
VIDEO_FRAMES = TIME_STRIDE * (world.FRAMES - 1) + 1


def build_vae(seed: int):
    """ComfyUI's Wan 2.1 VAE class at the world's width, seeded."""
    import_comfy = library("comfy_runtime").import_comfy

    import_comfy(cpu=True)
    import comfy.ldm.wan.vae as wan_vae

    with torch.random.fork_rng(devices=[]):      # seeded without touching the caller's global RNG
        torch.manual_seed(seed)
        vae = wan_vae.WanVAE(dim=VAE_DIM, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                             temperal_downsample=[False, True, True], dropout=0.0).float()
        # ComfyUI's layers skip weight initialisation (they expect a file): torch's default init
        for module in vae.modules():
            for base in (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear):
                if isinstance(module, base):
                    base.reset_parameters(module)
    return vae


def presentation_video(clips: torch.Tensor) -> torch.Tensor:
    """World clips ``[B, T, 3, 32, 32]`` in [0, 1] -> the VAE's video ``[B, 3, 4(T-1)+1, 64, 64]`` in
    [-1, 1] (ComfyUI's VAE space): 2x2 pixels, three blended frames between consecutive frames."""
    b, t = clips.shape[:2]
    frames = [clips[:, 0]]
    for k in range(1, t):
        for j in range(1, TIME_STRIDE + 1):
            a = j / TIME_STRIDE
            frames.append(clips[:, k - 1] * (1 - a) + clips[:, k] * a)
    video = torch.stack(frames, 2)                                          # [B, 3, T', 32, 32]
    video = video.repeat_interleave(SPACE_SCALE, -1).repeat_interleave(SPACE_SCALE, -2)
    return video * 2 - 1


def world_frames(images: torch.Tensor) -> torch.Tensor:
    """What *VAE Decode* returns for one clip (ComfyUI IMAGE ``[4(T-1)+1, 64s, 64s, 3]`` in [0, 1],
    possibly upscaled by an integer ``s``) -> the world's frames ``[T, 3, 32, 32]``."""
    if images.dim() != 4 or (images.shape[0] - 1) % TIME_STRIDE:
        raise ValueError(f"expected 4k+1 decoded frames [T, H, W, 3], got {tuple(images.shape)}")
    pool = images.shape[1] // world.SIZE
    keep = images[::TIME_STRIDE].permute(0, 3, 1, 2).float()
    return F.avg_pool2d(keep, pool) if pool > 1 else keep


def state_dict_for_file(vae, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The module's weights as ``wan_2.1_vae.safetensors`` stores them (ComfyUI's key names)."""
    return {k: v.detach().to(dtype).contiguous() for k, v in vae.state_dict().items()}


def file_metadata() -> dict[str, str]:
    # "iad.synth": the package's name when the shipped files were built; it stays, being in their bytes
    return {"iad_synthworld_vae": json.dumps({"dim": VAE_DIM, "video_size": VIDEO_SIZE, "video_frames": VIDEO_FRAMES,
                                              "latent_space": "iad.synth codec (raw Wan 2.1 latents)"})}
