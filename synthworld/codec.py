"""The world's latent codec: frames <-> Wan-shaped latents ``[B, 16, T, H/4, W/4]``.

The world's diffusion model and adapters work in this codec's latent space: a fixed linear codec
(whitened PCA of 4x4 RGB patches, 48 values -> 16 channels, one latent frame per video frame)
that is exact and free to compute, where a convolutional VAE good enough for the judges would
cost far more CPU time than the build has. The world's Wan 2.1 VAE (``wan_vae.py``) is trained
afterwards into this same latent space, for ComfyUI's native VAE nodes; it is blurrier, so the
experiment decodes with the codec. It is computed in
float64 from a seeded set of rendered frames, so it is reproducible bit for bit, and it keeps the
world's faces recognisable (see ``reconstruction_error``). The codec works in the *model's*
latent space (what Wan's ``latent_format.process_in`` produces), so ComfyUI's sampler output
goes through ``process_in`` before :meth:`PatchCodec.decode` (synthworld/nodes.py does this).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PATCH = 4
CHANNELS = 16


class PatchCodec:
    def __init__(self, mean: torch.Tensor, components: torch.Tensor, scales: torch.Tensor):
        self.mean = mean.float()              # [48]
        self.components = components.float()  # [16, 48] orthonormal rows
        self.scales = scales.float()          # [16] std of each coefficient (whitening)

    @classmethod
    def fit(cls, frames: torch.Tensor) -> "PatchCodec":
        """frames ``[N, 3, H, W]`` in [0, 1]."""
        patches = F.pixel_unshuffle(frames.double(), PATCH).permute(0, 2, 3, 1).reshape(-1, 3 * PATCH * PATCH)
        mean = patches.mean(0)
        cov = (patches - mean).T @ (patches - mean) / patches.shape[0]
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)[:CHANNELS]
        comps = evecs[:, order].T
        # a deterministic sign: the largest-magnitude entry of each component is positive
        signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        comps = comps * signs
        return cls(mean, comps, evals[order].clamp_min(1e-12).sqrt())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"codec.mean": self.mean.contiguous(), "codec.components": self.components.contiguous(),
                "codec.scales": self.scales.contiguous()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "PatchCodec":
        return cls(state["codec.mean"], state["codec.components"], state["codec.scales"])

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` in [0, 1] -> ``[B, 16, T, H/4, W/4]`` (unit-variance channels)."""
        b, t, c, h, w = video.shape
        p = F.pixel_unshuffle(video.reshape(b * t, c, h, w).float(), PATCH)          # [BT, 48, h, w]
        coef = torch.einsum("nchw,kc->nkhw", p - self.mean[None, :, None, None], self.components)
        coef = coef / self.scales[None, :, None, None]
        return coef.reshape(b, t, CHANNELS, h // PATCH, w // PATCH).permute(0, 2, 1, 3, 4).contiguous()

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``[B, 16, T, h, w]`` -> ``[B, T, 3, 4h, 4w]`` clamped to [0, 1]."""
        b, k, t, h, w = latent.shape
        coef = latent.permute(0, 2, 1, 3, 4).reshape(b * t, k, h, w).float() * self.scales[None, :, None, None]
        p = torch.einsum("nkhw,kc->nchw", coef, self.components) + self.mean[None, :, None, None]
        frames = F.pixel_shuffle(p, PATCH).clamp(0, 1)
        return frames.reshape(b, t, 3, h * PATCH, w * PATCH)
