"""Shared by the IaD Apply tests and benchmark: tiny models of every supported family, a tiny
adapter for each, synthetic identities, and in-process sampling through ComfyUI's own sampler.

Everything is seeded: the same call gives bit-identical tensors in every process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from . import tiny_models as tiny
from .comfy_env import import_comfy, import_pack


@dataclass(frozen=True)
class Family:
    name: str
    spec: object
    adapter_family: str
    model_dim: int
    blocks: tuple[int, ...]
    latent_shape: tuple[int, ...]

    def model_path(self) -> Path:
        if isinstance(self.spec, tiny.WanSpec):
            return tiny.ensure(self.spec)
        return tiny.ensure_other(self.spec)


FAMILIES = {
    "wan-t2v": Family("wan-t2v", tiny.WAN21_T2V, "wan2.1", 128, (0, 1), (1, 16, 2, 8, 8)),
    "wan-i2v": Family("wan-i2v", tiny.WAN21_I2V, "wan2.1", 128, (0, 1), (1, 16, 2, 8, 8)),
    "wan2.2-5b": Family("wan2.2-5b", tiny.WAN22_5B, "wan2.2", 128, (1,), (1, 48, 2, 8, 8)),
    "ltxv": Family("ltxv", tiny.LTXV_TINY, "ltxv", 128, (0, 1), (1, 128, 2, 4, 4)),
    # HunyuanVideo: indices 0-1 are the double blocks, 2-3 the single blocks.
    "hunyuan-video": Family("hunyuan-video", tiny.HUNYUAN_VIDEO_TINY, "hunyuan_video", 128, (1, 2, 3), (1, 16, 2, 8, 8)),
}


def pack():
    import_comfy()
    return import_pack()


def module(name: str):
    """A module of the pack as ComfyUI imports it, e.g. ``module("nodes.iad_nodes")``."""
    import importlib

    return importlib.import_module(f"{pack().__name__}.{name}")


def text_tensor(text: str, length: int = 16, width: int = 4096) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return torch.randn(1, length, width, generator=torch.Generator().manual_seed(seed))


def conditioning(family: Family, text: str):
    extra = {}
    if family.name == "hunyuan-video":
        extra["pooled_output"] = text_tensor(text + "/pooled", 1, 768)[0]
    if family.name == "ltxv":
        extra["attention_mask"] = torch.ones(1, 16, dtype=torch.long)  # T5's mask, which LTX-Video requires
    if family.name == "wan-i2v":
        import comfy.clip_vision

        out = comfy.clip_vision.Output()
        out.penultimate_hidden_states = text_tensor(text + "/clip", 257, 1280)
        extra["clip_vision_output"] = out
        extra["concat_latent_image"] = torch.zeros(family.latent_shape)
    return [[text_tensor(text), extra]]


def load_model(family: Family):
    import_comfy()
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(family.model_path()))


def make_adapter(family: Family, seed: int = 0, **overrides):
    adapter_module = module("iad.adapter")
    AdapterConfig, IdentityAdapter = adapter_module.AdapterConfig, adapter_module.IdentityAdapter
    config = AdapterConfig.tiny(family=family.adapter_family, model_dim=family.model_dim, blocks=list(family.blocks), **overrides)
    return IdentityAdapter.random(config, seed=seed)


def face_embeds(seed: int = 0, count: int = 3):
    import numpy as np

    face_types = module("iad.face_types")
    FaceEmbeds, DetectedFace = face_types.FaceEmbeds, face_types.DetectedFace

    g = torch.Generator().manual_seed(seed)
    centre = torch.nn.functional.normalize(torch.randn(512, generator=g), dim=0)
    faces = [DetectedFace(i, np.zeros(4, np.float32), np.zeros((5, 2), np.float32), 0.99,
                          torch.nn.functional.normalize(centre + 0.3 * torch.randn(512, generator=g) / 512 ** 0.5, dim=0))
             for i in range(count)]
    return FaceEmbeds(faces, embedder="insightface/antelopev2/glintr100")


def iad_inputs(family: Family, adapter_seed: int = 0, face_seed: int = 0, **overrides):
    """(IAD_MODEL, IAD_IDENTITY) as the nodes produce them."""
    nodes = module("nodes.iad_nodes")
    iad_model = module("iad.patching").IaDModel.wrap(make_adapter(family, adapter_seed, **overrides), f"tiny-{family.name}")
    identity = nodes.IaDIdentity.execute(iad_model, face_embeds(face_seed)).result[0]
    return iad_model, identity


def apply(model, iad_model, identity, weight=1.0, start=0.0, end=1.0, uncond_identity="none"):
    """IaD Apply. The tests pass the step range explicitly; start 0 here (every step) unless a test is about the range."""
    return module("nodes.iad_nodes").IaDApply.execute(model, iad_model, identity, weight, start, end, uncond_identity).result[0]


def sample(model, family: Family, steps: int = 4, cfg: float = 3.0, seed: int = 0, callback=None):
    """ComfyUI's own sampler (euler/simple) on a seeded noise latent; returns the latent."""
    import comfy.sample

    latent = torch.zeros(family.latent_shape)
    noise = torch.randn(family.latent_shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", conditioning(family, "a person smiles"),
                               conditioning(family, ""), latent, seed=seed, callback=callback, disable_pbar=True)


class CallRecorder:
    """Records every identity attention that runs (via the patch module's observer list)."""

    def __init__(self):
        self.events: list[dict] = []

    def __enter__(self):
        module("iad.patching").IDENTITY_CALL_OBSERVERS.append(self.events.append)
        return self

    def __exit__(self, *exc):
        module("iad.patching").IDENTITY_CALL_OBSERVERS.remove(self.events.append)

    @property
    def sigmas(self) -> list[float]:
        return sorted({round(e["sigma"], 6) for e in self.events}, reverse=True)
