"""A tiny generated training set for the data-preparation and trainer tests.

Clips are drawn with the face pattern the generated insightface detector fires on
(``insightface_pack.draw_face``): each clip shows one "person" (a skin hue the generated
recognizer tells apart) whose face drifts and changes size over time, over a textured background.
Some clips are mp4 (PyAV), some are folders of PNG frames; captions and action phrases are
sidecar files. ``corrupt=True`` adds a truncated mp4 and a clip without a caption.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import insightface_pack

ACTIONS = ("smiling", "turning the head left", "nodding", "laughing")


def draw_clip(person: int, action: int, frames: int = 13, size: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    background = rng.integers(70, 110, size=(size // 8, size // 8, 1)).astype(np.uint8)
    base = np.repeat(np.repeat(np.repeat(background, 8, 0), 8, 1), 3, 2)
    out = []
    for t in range(frames):
        image = base.copy()
        # The generated detector's matched filter sits on a 16 px grid: the face hops between grid
        # positions (48/64/80 px), a different path per action.
        cx = size / 2 - 16 + 16 * ((t // 4 + action) % 3)
        cy = size / 2 - 16 + 16 * ((t // 6 + action) % 2)
        insightface_pack.draw_face(image, cx, cy, 64.0, person=person)
        out.append(image)
    return np.stack(out)


def make_dataset(folder: Path, persons: int = 3, clips_per_person: int = 2, frames: int = 13,
                 corrupt: bool = False, size: int = 128) -> Path:
    from iad.eval.video_io import write_video

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for person in range(persons):
        for k in range(clips_per_person):
            action = (person + k) % len(ACTIONS)
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
            n += 1
    if corrupt:
        good = (folder / "clip00.mp4").read_bytes()
        (folder / "broken.mp4").write_bytes(good[:64] + b"\x00garbage" * 10)
        Path(folder / "broken.txt").write_text("a broken clip")
        write_video(folder / "nocaption.mp4", draw_clip(0, 0, frames, size), fps=8)
    return folder


PREPARED_VERSION = 1


def prepare_settings(clips: Path, output: Path) -> dict:
    """PrepareConfig fields for the generated clips: tiny Wan VAE, hash text encoder, generated pack."""
    from . import tiny_models

    pack = insightface_pack.ensure_pack(insightface_pack.ANTELOPEV2)
    return dict(input=str(clips), output=str(output), vae=str(tiny_models.ensure(tiny_models.WAN21_VAE)),
                text_encoder={"kind": "hash"}, face_pack=str(pack), det_size=128, resolution=[64, 64], num_frames=5,
                clips_per_shard=2, progress=False, cpu_threads=1)


def ensure_prepared(persons: int = 3, clips_per_person: int = 2) -> Path:
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
