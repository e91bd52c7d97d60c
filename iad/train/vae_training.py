"""``mode: vae``: the Wan VAE loaded through ComfyUI's own VAE loader, and its training objective."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..comfy_runtime import training_forward
from .base_model import IncompatibleBaseModelError
from .config import TrainConfig
from .data import sample_generator


def load_vae(config: TrainConfig, device: torch.device):
    """``mode: vae``: the Wan VAE through ComfyUI's own VAE loader (what *Load VAE* builds), its
    module in fp32 master weights; returns (module, latent_format)."""
    from ..comfy_runtime import import_comfy

    import_comfy(config.comfyui_dir, cpu=True if device.type == "cpu" else None)
    import comfy.latent_formats

    from ..prepare.encoders import ComfyVAE

    try:
        vae = ComfyVAE(config.base_model, config.comfyui_dir).vae
    except Exception as exc:   # ComfyUI raises several kinds for a file that is not a VAE
        raise IncompatibleBaseModelError(
            f"base_model {config.base_model}: ComfyUI could not load it as a VAE ({exc})") from None
    module = vae.first_stage_model
    if type(module).__module__.split(".")[-2:-1] != ["wan"]:
        raise IncompatibleBaseModelError(
            f"base_model {config.base_model} is a {type(module).__module__}.{type(module).__name__}; mode 'vae' trains "
            "Wan 2.1/2.2 VAEs (ComfyUI/models/vae/wan_2.1_vae.safetensors or wan2.2_vae.safetensors)")
    channels = getattr(module, "z_dim", 16)
    latent_format = comfy.latent_formats.Wan22() if channels == 48 else comfy.latent_formats.Wan21()
    module.float().to(device).requires_grad_(False)
    module.eval()
    return module, latent_format


class VAETrainable(nn.Module):
    """``mode: vae``: the Wan VAE's parameters (those ``trainable`` selects). The decoder learns to
    turn a clip's latents into its frames (pixel MSE, ComfyUI's [-1, 1] VAE space) and the encoder
    to turn the frames into the latents (MSE in the model's whitened latent space, where every
    channel has unit scale), on windows of ``vae.window`` latent frames."""

    def __init__(self, vae: nn.Module, latent_format, config: TrainConfig):
        super().__init__()
        self.vae = vae
        self.latent_format = latent_format
        self.config = config
        self._runtime: dict = {"gather": None}   # (nothing to gather: no batch-level terms)

    def windows(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw latents [B, C, w, h, w], video [B, 3, s(w-1)+1, H, W] in [-1, 1]) of each sample's window."""
        cfg = self.config.vae
        latents, pixels = batch["latents"], batch["pixels"]       # [B, C, T', h, w], [B, T, H, W, 3] uint8
        frames, latent_frames = pixels.shape[1], latents.shape[2]
        stride = (frames - 1) // (latent_frames - 1) if latent_frames > 1 else 1
        if latent_frames > 1 and stride * (latent_frames - 1) + 1 != frames:
            raise ValueError(f"{frames} stored frames do not match {latent_frames} latent frames (expected "
                             f"{stride}k+1); re-prepare the dataset with store_pixels: true")
        size = cfg.window if 0 < cfg.window < latent_frames else latent_frames
        lat, vid = [], []
        for b, position in enumerate(batch["positions"]):
            start = 0
            if cfg.random_start and size < latent_frames:
                g = sample_generator(self.config.seed, 0, position, salt=6)
                start = int(torch.randint(latent_frames - size + 1, (1,), generator=g))
            lat.append(latents[b, :, start:start + size])
            vid.append(pixels[b, stride * start: stride * (start + size - 1) + 1])
        video = torch.stack(vid).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        return torch.stack(lat).float(), video

    @training_forward
    def forward(self, batch: dict, step: int, with_extras: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config.vae
        device = next(self.vae.parameters()).device
        latents, video = (t.to(device) for t in self.windows(batch))
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if self.config.precision == "bf16"
                    else contextlib.nullcontext())
        parts: dict[str, torch.Tensor] = {}
        with autocast:
            if cfg.decode > 0:
                parts["vae_decode"] = F.mse_loss(self.vae.decode(latents).float(), video)
            if cfg.encode > 0:
                encoded = self.vae.encode(video).float()
                parts["vae_encode"] = F.mse_loss(self.latent_format.process_in(encoded),
                                                  self.latent_format.process_in(latents))
        total = cfg.decode * parts.get("vae_decode", 0.0) + cfg.encode * parts.get("vae_encode", 0.0)
        parts["total"] = total
        return total, parts
