"""A tiny generated training set for the data-preparation and trainer tests.

Clips are drawn with the face pattern the generated insightface detector fires on
(``insightface_pack.draw_face``): each clip shows one "person" doing one "action" over a textured
background, the face drifting over the detector's grid. Some clips are mp4 (PyAV), some are
folders of PNG frames; captions, action phrases and the person are sidecar files.
``corrupt=True`` adds a truncated mp4 and a clip without a caption.

Identity and action both show in the generated recognizer's embedding (a random projection of
the aligned crop's 8x8 colour map), so the decoupler has something to decouple:

- the person is the skin hue (8 hues 45 degrees apart, all at brightness 180: the detector, which
  sees only brightness, finds every person the same way);
- the action is an "expression": one region of the face (lower / left / upper / right part, eyes
  and mouth left dark) blends towards an action hue, with an intensity that changes from frame to
  frame. Same brightness again, so detection is unaffected.

A face's embedding therefore moves with the expression about as much as it differs between
neighbouring persons (``embedding_stats`` measures it), and frames of one clip differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import insightface_pack

ACTIONS = ("smiling", "turning the head left", "nodding", "laughing")
PERSON_HUES = tuple(45.0 * k for k in range(8))            # neighbouring persons: embedding cosine ~0.7
ACTION_HUES = (22.5, 112.5, 202.5, 292.5)                   # between the person hues
# Expression regions in units of the face half-size h (x right, y down), as half-plane tests.
ACTION_REGIONS = (
    lambda x, y: y > 0.1,     # smiling: lower face
    lambda x, y: x < -0.1,    # turning the head left: left side
    lambda x, y: y < -0.1,    # nodding: upper face
    lambda x, y: x > 0.1,     # laughing: right side
)
INTENSITIES = (0.35, 0.55, 0.75, 0.95)


def person_colour(person: int) -> tuple[int, int, int]:
    hue = PERSON_HUES[person % len(PERSON_HUES)] + 22.5 * (person // len(PERSON_HUES) % 2)
    return insightface_pack._hue_colour(hue)


def expression_intensity(action: int, t: int) -> float:
    """How strongly frame ``t`` shows the action (varies within a clip, never 0)."""
    return INTENSITIES[(3 * t + action) % len(INTENSITIES)]


def draw_expression(image: np.ndarray, cx: float, cy: float, size: float, skin: tuple[int, int, int], action: int,
                    intensity: float) -> None:
    """Blend the action's region of the skin (only skin pixels: eyes, mouth and ring stay) towards
    the action hue. Both colours have brightness 180, so the blend does too."""
    h = size / 2.0
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    x, y = (xs + 0.5 - cx) / h, (ys + 0.5 - cy) / h
    skin_pixels = (np.abs(image.astype(np.int16) - np.array(skin, np.int16)).sum(-1) <= 3)
    mask = skin_pixels & ACTION_REGIONS[action % len(ACTION_REGIONS)](x, y)
    target = np.array(insightface_pack._hue_colour(ACTION_HUES[action % len(ACTION_HUES)]), np.float32)
    blended = (1 - intensity) * np.array(skin, np.float32) + intensity * target
    image[mask] = np.clip(np.round(blended), 0, 255).astype(np.uint8)


def draw_clip(person: int, action: int, frames: int = 13, size: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    background = rng.integers(70, 110, size=(size // 8, size // 8, 1)).astype(np.uint8)
    base = np.repeat(np.repeat(np.repeat(background, 8, 0), 8, 1), 3, 2)
    skin = person_colour(person)
    out = []
    for t in range(frames):
        image = base.copy()
        # The generated detector's matched filter sits on a 16 px grid: the face hops between grid
        # positions (48/64/80 px), a different path per action.
        cx = size / 2 - 16 + 16 * ((t // 4 + action) % 3)
        cy = size / 2 - 16 + 16 * ((t // 6 + action) % 2)
        insightface_pack.draw_face(image, cx, cy, 64.0, person=person, colour=skin)
        draw_expression(image, cx, cy, 64.0, skin, action, expression_intensity(action, t))
        out.append(image)
    return np.stack(out)


def clip_plan(persons: int, clips_per_person: int) -> list[tuple[int, int]]:
    """(person, action) of each clip, in dataset order. Person p's k-th clip does action (p + k) % 4.
    When every person does every action, the order puts a full persons x actions block first
    (persons 0-3 x actions 0-1): the trainer's fixed evaluation batch is the first 8 clips, and in a
    balanced block identity and action are uncorrelated, so a decoupled z_id / z_act can be too."""
    plan = [(p, (p + k) % len(ACTIONS)) for p in range(persons) for k in range(clips_per_person)]
    if clips_per_person >= len(ACTIONS) and persons >= 4:
        plan.sort(key=lambda pa: (pa[0] // 4, pa[1] // 2, pa[0], pa[1]))
    return plan


def make_dataset(folder: Path, persons: int = 3, clips_per_person: int = 2, frames: int = 13,
                 corrupt: bool = False, size: int = 128) -> Path:
    from iad.eval.video_io import write_video

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for n, (person, action) in enumerate(clip_plan(persons, clips_per_person)):
        video = draw_clip(person, action, frames, size, seed=n)
        name = f"clip{n:02d}"
        if n % 2 == 0:
            write_video(folder / f"{name}.mp4", video, fps=8)
            stem = folder / name
        else:
            frame_dir = folder / name
            frame_dir.mkdir(exist_ok=True)
            from PIL import Image

            for i, f in enumerate(video):
                Image.fromarray(f).save(frame_dir / f"frame_{i:03d}.png")
            stem = folder / name
        meta = {"caption": f"a person {ACTIONS[action]} in a room", "action": ACTIONS[action], "person": f"p{person}"}
        Path(f"{stem}.json").write_text(json.dumps(meta))
    if corrupt:
        good = (folder / "clip00.mp4").read_bytes()
        (folder / "broken.mp4").write_bytes(good[:64] + b"\x00garbage" * 10)
        Path(folder / "broken.txt").write_text("a broken clip")
        write_video(folder / "nocaption.mp4", draw_clip(0, 0, frames, size), fps=8)
    return folder


PREPARED_VERSION = 3


class Umt5PaddedHashEncoder:
    """The hash encoder's rows zero-padded to 512, as ComfyUI's umt5 gives every caption
    (``comfy/text_encoders/wan.py``: ``min_length=512``, padding zeroed); for ``text_encoder``
    ``{"kind": "callable", "target": "harness.train_data:Umt5PaddedHashEncoder"}``."""

    name = "hash-padded-512"
    length = 512

    def __init__(self) -> None:
        from iad.prepare.encoders import HashTextEncoder

        self.rows = HashTextEncoder()

    def __call__(self, text: str):
        import torch

        rows = self.rows(text)
        return torch.cat([rows, rows.new_zeros(self.length - rows.shape[0], rows.shape[1])])


def prepare_settings(clips: Path, output: Path) -> dict:
    """PrepareConfig fields for the generated clips: tiny Wan VAE, hash text encoder, generated pack."""
    from . import tiny_models

    pack = insightface_pack.ensure_pack(insightface_pack.ANTELOPEV2)
    return dict(input=str(clips), output=str(output), vae=str(tiny_models.ensure(tiny_models.WAN21_VAE)),
                text_encoder={"kind": "hash"}, face_pack=str(pack), det_size=128, resolution=[64, 64], num_frames=5,
                clips_per_shard=2, progress=False, cpu_threads=1, store_pixels=True)


def ensure_prepared(persons: int = 8, clips_per_person: int = 4) -> Path:
    """A prepared dataset of the generated clips, made once and cached under .cache (process-safe)."""
    import hashlib
    import os
    import shutil
    import tempfile

    from iad.prepare import run
    from .paths import CACHE_DIR

    key = hashlib.sha256(json.dumps([PREPARED_VERSION, persons, clips_per_person]).encode()).hexdigest()[:12]
    target = CACHE_DIR / "prepared-datasets" / key
    if (target / "dataset.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix="partial-"))
    try:
        clips = make_dataset(work / "clips", persons, clips_per_person)
        run(prepare_settings(clips, work / "dataset"))
        try:
            os.replace(work / "dataset", target)
        except OSError:   # another process finished first
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


TINY_ADAPTER = dict(token_dim=64, num_tokens=4, num_registers=2, resampler_dim=32, resampler_depth=1, resampler_heads=2,
                    resampler_dim_head=16, decoupler_act_dim=16, decoupler_hidden=64)


def train_config(data: Path, output: Path, **overrides) -> dict:
    """A TrainConfig dict for the tiny Wan 2.1 T2V model on a prepared dataset (CPU, one thread)."""
    from . import tiny_models

    config = dict(base_model=str(tiny_models.ensure(tiny_models.WAN21_T2V)), data=str(data), output_dir=str(output),
                  adapter=dict(TINY_ADAPTER), name="iad-tiny-trained", steps=20, batch_size=2, log_every=5,
                  checkpoint_every=1000, resume="auto", cpu_threads=1, device="cpu", optimizer={"lr": 3e-3})
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def embedding_stats(data: Path) -> dict[str, float]:
    """How identity and action mix in a prepared dataset's raw face embeddings (every tracked frame):
    the mean cosine between frames of one person (over all its clips and expressions), the mean
    cosine between frames of different persons (all pairs and the nearest other person), and the
    share of frames whose nearest other frame (cosine) belongs to another person."""
    import torch
    import torch.nn.functional as F

    from iad.train.data import PreparedDataset

    dataset = PreparedDataset(data)
    embeddings, persons = [], []
    for i, clip in enumerate(dataset.clips):
        track = dataset.tensor(i, "track.embeddings").float()
        embeddings.append(track)
        persons += [dataset.person_index[clip.person]] * track.shape[0]
    e = F.normalize(torch.cat(embeddings), dim=-1)
    p = torch.tensor(persons)
    cos = e @ e.T
    eye = torch.eye(len(e), dtype=torch.bool)
    same, other = (p[:, None] == p[None, :]) & ~eye, p[:, None] != p[None, :]
    by_pair = {}
    for a in range(len(dataset.persons)):
        for b in range(len(dataset.persons)):
            if a != b:
                by_pair[(a, b)] = float(cos[p == a][:, p == b].mean())
    nearest_other = [max(v for (a, _), v in by_pair.items() if a == k) for k in range(len(dataset.persons))]
    nearest = cos.masked_fill(eye, -2).argmax(1)
    return {"persons": len(dataset.persons), "clips": len(dataset.clips), "frames": len(e),
            "within_person_cos": float(cos[same].mean()), "within_person_min_cos": float(cos[same].min()),
            "between_person_cos": float(cos[other].mean()), "nearest_other_person_cos": sum(nearest_other) / len(nearest_other),
            "nearest_frame_other_person": float((p[nearest] != p).float().mean())}


def synthetic_dataset(folder: Path, latent_shape: list[int], clips: int = 8, persons: int = 4, text_tokens: int = 24,
                      text_dim: int = 4096) -> Path:
    """A prepared dataset in iad.prepare's format with random latents and embeddings (no VAE, no
    faces: for timing, for numerics at batch size 1, and for the other model families, whose latent
    channels and text width it takes). ``benchmarks/bench_train.py`` uses it."""
    import torch

    from iad.prepare import load_prompt_bank
    from iad.prepare.encoders import HashTextEncoder
    from iad.prepare.shards import (DATASET_FILE, DATASET_FORMAT, FORMAT_VERSION, PROMPT_BANK_FILE, atomic_save_tensors,
                                    atomic_write_text, write_shard)

    if (folder / DATASET_FILE).is_file():
        return folder
    g = torch.Generator().manual_seed(0)
    text = HashTextEncoder(dim=text_dim)
    tensors, records = {}, []
    frames = 4 * (latent_shape[1] - 1) + 1
    for i in range(clips):
        person = i % persons
        centre = torch.nn.functional.normalize(torch.randn(512, generator=torch.Generator().manual_seed(person)), dim=0)
        emb = torch.nn.functional.normalize(centre + 0.1 * torch.randn(12, 512, generator=g), dim=1)
        caption = f"a person doing action {i % 3}"
        t = {"latents": torch.randn(latent_shape, generator=g), "text": text(caption)[:text_tokens].half(),
             "action_text": text(f"action {i % 3}").mean(0), "track.frames": torch.arange(12),
             "track.bboxes": torch.tensor([[8.0, 8, 40, 40]]).repeat(12, 1), "track.kps": torch.zeros(12, 5, 2),
             "track.scores": torch.ones(12), "track.embeddings": emb, "track.landmarks": torch.zeros(12, 106, 2),
             "target.frames": torch.arange(frames), "target.bboxes": torch.tensor([[8.0, 8, 40, 40]]).repeat(frames, 1),
             "ref.frames": torch.arange(2), "ref.embeddings": emb[:2].clone(), "ref.crops": torch.zeros(2, 112, 112, 3, dtype=torch.uint8)}
        tensors.update({f"c{i}.{k}": v for k, v in t.items()})
        records.append({"key": f"c{i}", "source": f"clip{i}", "caption": caption, "action": f"action {i % 3}",
                        "person": f"p{person}", "primary_track": 0, "references": 2,
                        "text_tokens": int(t["text"].shape[0]), "window": [0, frames]})
    folder.mkdir(parents=True, exist_ok=True)
    write_shard(folder, 0, tensors, records)
    prompts = load_prompt_bank()
    bank = {f"bank.{i}": text(p).half() for i, p in enumerate(prompts)}
    bank["null"] = text("").half()
    atomic_save_tensors(folder / PROMPT_BANK_FILE, bank, {"prompts": json.dumps(prompts)})
    atomic_write_text(folder / DATASET_FILE, json.dumps({
        "format": DATASET_FORMAT, "format_version": FORMAT_VERSION, "shards": ["shard-00000"], "skipped": [],
        "embedder": "insightface/antelopev2/glintr100", "latent_shape": latent_shape, "done": {}}))
    return folder
