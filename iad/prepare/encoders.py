"""Model-backed steps of data preparation: text embeddings and VAE latents.

The real path loads the user's own files through ComfyUI's loaders (imported lazily, inside
functions), so the precomputed tensors are exactly what ComfyUI feeds the video model:

- text: ``comfy.sd.load_clip([path], clip_type=CLIPType.WAN)`` (umt5-xxl for Wan), then
  ``clip.encode_from_tokens_scheduled(clip.tokenize(text))`` -> ``[L, 4096]``;
- video: ``comfy.sd.VAE(sd=load_torch_file(path))`` and ``vae.encode(frames)`` -> ``[16, T', H/8, W/8]``
  (ComfyUI's raw latent, before ``process_latent_in``; the trainer applies the model's own).

The text step is pluggable because umt5-xxl cannot exist in a tiny form (its config is fixed at
~5 B parameters). ``{"kind": "hash"}`` is a deterministic stand-in for tests and dry runs: every
word maps to a fixed random 4096-d vector. It carries no language understanding; never train a
real adapter with it. ``{"kind": "callable", "target": "pkg.module:factory"}`` plugs in anything
else (``factory()`` returns ``encode(text) -> Tensor[L, 4096]``).
"""

from __future__ import annotations

import hashlib
import importlib
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

WAN_TEXT_DIM = 4096
TEXT_ENCODER_KINDS = ("comfy", "hash", "callable")


class HashTextEncoder:
    """Deterministic stand-in text encoder: ``[len(words) + 1, dim]`` (an end token is appended).

    Each word is a seeded Gaussian vector (seed = hash of the lower-cased word), so the same words
    give the same rows in every process and run, and shared words give shared rows.
    """

    name = "hash"

    def __init__(self, dim: int = WAN_TEXT_DIM, scale: float = 1.0, max_words: int = 64) -> None:
        self.dim, self.scale, self.max_words = int(dim), float(scale), int(max_words)

    def _row(self, token: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(token.encode("utf-8")).digest()[:8], "little")
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)) * self.scale

    def __call__(self, text: str) -> torch.Tensor:
        words = re.findall(r"[\w']+", text.lower())[: self.max_words]
        return torch.stack([self._row(w) for w in words] + [self._row("</s>")])


class ComfyTextEncoder:
    """A ComfyUI text encoder file (``models/text_encoders``) loaded with ComfyUI's CLIP loader."""

    def __init__(self, path: str, clip_type: str = "wan", comfyui_dir: str | None = None) -> None:
        from ..comfy_runtime import import_comfy

        import_comfy(comfyui_dir)
        import comfy.sd

        try:
            kind = getattr(comfy.sd.CLIPType, clip_type.upper())
        except AttributeError:
            raise ValueError(f"text_encoder.type {clip_type!r} is not a ComfyUI CLIP type (Wan uses 'wan')") from None
        self.name = f"comfy:{Path(path).name}:{clip_type}"
        self.clip = comfy.sd.load_clip(ckpt_paths=[str(path)], clip_type=kind)

    def __call__(self, text: str) -> torch.Tensor:
        tokens = self.clip.tokenize(text)
        conditioning = self.clip.encode_from_tokens_scheduled(tokens)
        return conditioning[0][0][0].float().cpu()


def load_text_encoder(spec: dict, comfyui_dir: str | None = None) -> Callable[[str], torch.Tensor]:
    kind = spec.get("kind", "comfy")
    if kind == "hash":
        return HashTextEncoder(dim=int(spec.get("dim", WAN_TEXT_DIM)), scale=float(spec.get("scale", 1.0)))
    if kind == "comfy":
        return ComfyTextEncoder(spec["path"], spec.get("type", "wan"), comfyui_dir)
    if kind == "callable":
        module_name, _, attr = str(spec["target"]).partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        encoder = factory()
        if not hasattr(encoder, "name"):
            encoder.name = f"callable:{spec['target']}"
        return encoder
    raise ValueError(f"text_encoder.kind must be one of {TEXT_ENCODER_KINDS}, got {kind!r}")


def text_encoder_name(encoder) -> str:
    return str(getattr(encoder, "name", type(encoder).__name__))


class ComfyVAE:
    """The Wan VAE through ComfyUI: ``encode(frames uint8 [T, H, W, 3]) -> [C, T', H/8, W/8]``."""

    def __init__(self, path: str, comfyui_dir: str | None = None) -> None:
        from ..comfy_runtime import import_comfy

        import_comfy(comfyui_dir)
        import comfy.sd
        import comfy.utils

        state, metadata = comfy.utils.load_torch_file(str(path), return_metadata=True)
        self.vae = comfy.sd.VAE(sd=state, metadata=metadata)
        self.vae.throw_exception_if_invalid()
        self.name = Path(path).name

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0
        latent = self.vae.encode(pixels)
        return latent[0].float().cpu()

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent)
