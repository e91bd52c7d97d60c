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
    text_width: int = 4096
    audio_shape: tuple[int, ...] | None = None   # LTX-2: the audio latent sampled with the video

    def model_path(self) -> Path:
        if isinstance(self.spec, tiny.WanSpec):
            return tiny.ensure(self.spec)
        return tiny.ensure_other(self.spec)

    def available(self) -> bool:
        """Whether the running ComfyUI has this model (LTX-2 came with ComfyUI v0.2x)."""
        return not isinstance(self.spec, tiny.LTX2Spec) or self.spec in tiny.other_family_specs()


FAMILIES = {
    "wan-t2v": Family("wan-t2v", tiny.WAN21_T2V, "wan2.1", 128, (0, 1), (1, 16, 2, 8, 8)),
    "wan-i2v": Family("wan-i2v", tiny.WAN21_I2V, "wan2.1", 128, (0, 1), (1, 16, 2, 8, 8)),
    "wan2.2-5b": Family("wan2.2-5b", tiny.WAN22_5B, "wan2.2", 128, (1,), (1, 48, 2, 8, 8)),
    "ltxv": Family("ltxv", tiny.LTXV_TINY, "ltxv", 128, (0, 1), (1, 128, 2, 4, 4)),
    # HunyuanVideo: indices 0-1 are the double blocks, 2-3 the single blocks.
    "hunyuan-video": Family("hunyuan-video", tiny.HUNYUAN_VIDEO_TINY, "hunyuan_video", 128, (1, 2, 3), (1, 16, 2, 8, 8)),
    # LTX-2: video latent (128 channels) and audio latent (8 channels x 16 mel bins) sampled together.
    "ltx2": Family("ltx2", tiny.LTX2_TINY, "ltx2", 128, (0, 1), (1, 128, 2, 4, 4), text_width=128, audio_shape=(1, 8, 5, 16)),
    # HunyuanVideo 1.5: 32 latent channels, double blocks 0-2 only.
    "hunyuan-video-1.5": Family("hunyuan-video-1.5", tiny.HUNYUAN_VIDEO15_TINY, "hunyuan_video15", 128, (0, 2), (1, 32, 2, 8, 8)),
}


def available_families(names) -> list[str]:
    """``names`` without the families the running ComfyUI lacks (for parametrising tests)."""
    return [name for name in names if FAMILIES[name].available()]


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
    if family.name == "ltx2":   # LTX-2's text encoder output (Gemma features), before ComfyUI's connectors
        return [[text_tensor(text, width=family.text_width), extra]]
    if family.name == "hunyuan-video-1.5":
        extra["pooled_output"] = None   # Qwen2.5-VL gives no pooled vector
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


def overhead_variants(model, adapter, name: str = "bench") -> dict:
    """What the step-time benchmarks compare: the unpatched model, IaD active in every step, and
    IaD with a range the sampled sigmas never reach (0.999-1.0)."""
    iad_model = module("iad.patching").IaDModel.wrap(adapter, name)
    identity = module("nodes.iad_nodes").IaDIdentity.execute(iad_model, face_embeds()).result[0]
    return {"unpatched": model,
            "IaD active every step": apply(model, iad_model, identity, start=0.0, end=1.0),
            "IaD, range never active": apply(model, iad_model, identity, start=0.999, end=1.0)}


def time_steps(variants: dict, x, sigma, kwargs: dict, rounds: int):
    """One CFG model call per variant and round, the variants in a fresh seeded order each round
    (round 0 warms up and is not timed). Timed on this thread's CPU clock with one torch thread, so
    other processes on the cores do not count. Returns (medians, mins, last output per variant)."""
    import random
    import statistics
    import time

    import comfy.model_management as mm

    torch.set_num_threads(1)
    times: dict[str, list[float]] = {k: [] for k in variants}
    outputs = {}
    order = list(variants)
    rng = random.Random(0)
    for round_index in range(rounds + 1):
        rng.shuffle(order)
        for key in order:
            m = variants[key]
            mm.load_models_gpu([m])
            options = dict(m.model_options["transformer_options"], sigmas=sigma, cond_or_uncond=[0, 1])
            start = time.thread_time()
            out = m.model.apply_model(x, sigma, transformer_options=options, **kwargs)
            if round_index > 0:
                times[key].append(time.thread_time() - start)
            outputs[key] = out.float()
    mm.unload_all_models()
    return ({k: statistics.median(v) for k, v in times.items()}, {k: min(v) for k, v in times.items()}, outputs)


def apply(model, iad_model, identity, weight=1.0, start=0.0, end=1.0, uncond_identity="none"):
    """IaD Apply. The tests pass the step range explicitly; start 0 here (every step) unless a test is about the range."""
    return module("nodes.iad_nodes").IaDApply.execute(model, iad_model, identity, weight, start, end, uncond_identity).result[0]


def sample_parts(model, family: Family, steps: int = 4, cfg: float = 3.0, seed: int = 0, callback=None) -> list[torch.Tensor]:
    """ComfyUI's own sampler (euler/simple) on a seeded noise latent: ``[video]``, or for LTX-2
    ``[video, audio]`` (sampled together as ComfyUI's nested audio-video latent)."""
    import comfy.sample

    latent = torch.zeros(family.latent_shape)
    noise = torch.randn(family.latent_shape, generator=torch.Generator().manual_seed(seed))
    if family.audio_shape is not None:
        import comfy.nested_tensor

        audio_noise = torch.randn(family.audio_shape, generator=torch.Generator().manual_seed(seed + 1))
        latent = comfy.nested_tensor.NestedTensor((latent, torch.zeros(family.audio_shape)))
        noise = comfy.nested_tensor.NestedTensor((noise, audio_noise))
    out = comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", conditioning(family, "a person smiles"),
                              conditioning(family, ""), latent, seed=seed, callback=callback, disable_pbar=True)
    return list(out.unbind()) if getattr(out, "is_nested", False) else [out]


def sample(model, family: Family, steps: int = 4, cfg: float = 3.0, seed: int = 0, callback=None) -> torch.Tensor:
    """``sample_parts`` as one tensor (LTX-2: video and audio flattened one after the other)."""
    parts = sample_parts(model, family, steps, cfg, seed, callback)
    return parts[0] if len(parts) == 1 else torch.cat([p.flatten() for p in parts])


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
