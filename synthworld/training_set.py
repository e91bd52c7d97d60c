"""The world's clips as an ``iad.prepare``-format dataset, so the adapters train with ``iad.train``.

The world writes the shards itself rather than running ``python -m iad.prepare`` on rendered
videos, for two reasons: its latents come from the world's codec, not from a Wan VAE file that
ComfyUI's VAE loader could read; and the *naive* baseline needs references taken from the target
clip's own frames, which ``iad.prepare`` refuses to produce by design. Faces are aligned with the
renderer's ground-truth keypoints (the same crops the recognizer and the experiment use).

Each person is treated as one recording of their clips back to back: a clip is a target window
and, for IaD, the references are the frames of the person's *other* clips (other moments of the
recording); for naive injection, the references are the target window's own frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import text as world_text
from . import wan_vae, world
from ._iad import library

_shards = library("prepare.shards")
DATASET_FILE, DATASET_FORMAT, FORMAT_VERSION, PROMPT_BANK_FILE = (
    _shards.DATASET_FILE, _shards.DATASET_FORMAT, _shards.FORMAT_VERSION, _shards.PROMPT_BANK_FILE)
atomic_save_tensors, atomic_write_text, write_shard = _shards.atomic_save_tensors, _shards.atomic_write_text, _shards.write_shard

REFERENCE_POLICIES = ("same_clip", "other_clips")
CLIPS_PER_SHARD = 256


def raw_latents(latents: torch.Tensor) -> torch.Tensor:
    """The codec works in the Wan model's latent space (after ``process_latent_in``); the dataset
    stores ComfyUI's raw latents, which the trainer maps back with the base model's own format."""
    import_comfy = library("comfy_runtime").import_comfy

    import_comfy(cpu=True)
    import comfy.latent_formats

    return comfy.latent_formats.Wan21().process_out(latents.float())


def write_training_set(folder: str | Path, ds, latents: torch.Tensor, contexts: torch.Tensor, action_text: torch.Tensor,
                       embeddings: torch.Tensor, crops: np.ndarray, references: str, embedder: str) -> dict:
    """Write ``ds`` (a ``build.Dataset``) as a prepared dataset and return its ``dataset.json``.

    ``latents``: codec latents ``[C, 16, T, h, w]``; ``contexts``: world text ``[C, L, 4096]``;
    ``action_text``: one vector per action class ``[len(ACTIONS), 4096]``; ``embeddings``: unit
    face embeddings ``[C, T, 512]``; ``crops``: aligned face crops ``[C, T, S, S, 3]`` uint8;
    ``references``: ``same_clip`` (naive injection) or ``other_clips`` (IaD, cross-video)."""
    if references not in REFERENCE_POLICIES:
        raise ValueError(f"references must be one of {REFERENCE_POLICIES}, got {references!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = world.FRAMES
    raw = raw_latents(latents)
    person = ds.person.tolist()
    clips_of: dict[int, list[int]] = {}
    for i, p in enumerate(person):
        clips_of.setdefault(p, []).append(i)
    rank = {i: clips_of[p].index(i) for i, p in enumerate(person)}     # the clip's moment in its person's recording
    size = world.SIZE

    def one_clip(i: int) -> tuple[dict, dict]:
        clip, p = ds.clips[i], person[i]
        start = rank[i] * frames
        if references == "same_clip":
            sources = [(i, f) for f in range(frames)]
        else:
            sources = [(j, f) for j in clips_of[p] if j != i for f in range(frames)]
        boxes = torch.from_numpy(ds.boxes[i].astype(np.float32))
        tensors = {
            "latents": raw[i],
            "text": contexts[i].to(torch.float16),
            "action_text": action_text[world.ACTIONS.index(clip.action)].float(),
            "track.frames": torch.arange(start, start + frames, dtype=torch.int64),
            "track.bboxes": boxes,
            "track.kps": torch.from_numpy(ds.kps[i].astype(np.float32)),
            "track.scores": torch.ones(frames),
            "track.embeddings": embeddings[i].float(),
            "track.landmarks": torch.zeros(frames, 106, 2),
            "target.frames": torch.arange(start, start + frames, dtype=torch.int64),
            "target.bboxes": boxes,
            "ref.frames": torch.tensor([rank[j] * frames + f for j, f in sources], dtype=torch.int64),
            "ref.embeddings": torch.stack([embeddings[j, f] for j, f in sources]).float(),
            "ref.crops": torch.from_numpy(np.stack([crops[j, f] for j, f in sources])),
        }
        record = {
            "key": f"c{i}", "source": f"synthworld/person{p:04d}/clip{rank[i]}", "caption": clip.caption,
            "action": world.ACTION_PHRASES.get(clip.action, "a person"), "person": f"person{p:04d}",
            "source_frames": frames * len(clips_of[p]), "fps": 8.0, "window": [start, start + frames], "primary_track": 0,
            "track_frames": frames, "references": len(sources), "dropped_tracks": [],
            "text_tokens": int(contexts.shape[1]), "landmarks": False,
        }
        return tensors, record

    shards = []
    for shard_index, first in enumerate(range(0, len(ds.clips), CLIPS_PER_SHARD)):
        tensors, records = {}, []
        for i in range(first, min(first + CLIPS_PER_SHARD, len(ds.clips))):
            t, record = one_clip(i)
            tensors.update({f"c{i}.{k}": v.clone() for k, v in t.items()})   # own storage: safetensors refuses shared
            records.append(record)
        shards.append(write_shard(folder, shard_index, tensors, records))
    write_prompt_bank(folder)
    # "iad.synth": the package's name when the shipped world was built; kept, as the adapters record it
    return _write_dataset_file(folder, shards, {"source": "iad.synth world", "references": references,
                                                "resolution": [size, size], "num_frames": frames},
                               embedder, raw.shape[1:])


def _write_dataset_file(folder: Path, shards: list[str], settings: dict, embedder: str | None, latent_shape) -> dict:
    """``dataset.json`` of a finished dataset (written last: its presence marks the dataset complete)."""
    info = {"format": DATASET_FORMAT, "format_version": FORMAT_VERSION, "settings": settings, "shards": shards,
            "done": {}, "skipped": [], "embedder": embedder, "latent_shape": list(latent_shape)}
    atomic_write_text(folder / DATASET_FILE, json.dumps(info, indent=1))
    return info


def write_vae_training_set(folder: str | Path, clips: torch.Tensor, latents: torch.Tensor) -> dict:
    """The clips as a dataset for ``iad.train``'s ``mode: vae``: per clip the codec's raw latents and
    the frames they stand for, ``target.pixels`` (the VAE's video of the clip,
    ``wan_vae.presentation_video`` -> uint8 ``[T', H, W, 3]``, as ``iad.prepare`` stores with
    ``store_pixels``). No faces or text: the VAE reads neither."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = raw_latents(latents)
    shards = []
    for shard_index, first in enumerate(range(0, len(clips), CLIPS_PER_SHARD)):
        last = min(first + CLIPS_PER_SHARD, len(clips))
        video = wan_vae.presentation_video(clips[first:last])                   # [B, 3, T', H, W] in [-1, 1]
        pixels = ((video + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1)
        tensors, records = {}, []
        for i in range(first, last):
            tensors[f"c{i}.latents"] = raw[i].clone()
            tensors[f"c{i}.target.pixels"] = pixels[i - first].contiguous()
            records.append({"key": f"c{i}", "source": f"synthworld/clip{i}", "caption": "", "action": None,
                            "person": f"clip{i}", "source_frames": int(clips.shape[1]), "fps": 8.0,
                            "window": [0, int(clips.shape[1])], "primary_track": 0, "track_frames": 0, "references": 0,
                            "dropped_tracks": [], "text_tokens": 0, "landmarks": False})
        shards.append(write_shard(folder, shard_index, tensors, records))
    return _write_dataset_file(folder, shards, {"source": "iad.synth world (VAE)", "store_pixels": True,
                                                "num_frames": int(pixels.shape[1])}, None, raw.shape[1:])


def write_prompt_bank(folder: Path) -> None:
    """The dataset's prompt bank in the world's vocabulary (every action in every scene) and its empty
    prompt, encoded by the world's text encoder: the trainer's caption dropout reads the empty prompt
    (all zeros, what the world's encoder gives ComfyUI's negative "")."""
    prompts = [world.caption(action, scene) for action in world.PROMPT_ACTIONS for scene in world.SCENES]
    tensors = {f"bank.{i}": world_text.encode(p)[0].to(torch.float16) for i, p in enumerate(prompts)}
    tensors["null"] = world_text.encode("")[0].to(torch.float16)
    atomic_save_tensors(folder / PROMPT_BANK_FILE, tensors, {"prompts": json.dumps(prompts)})


def pooled_crops(crops_uint8: np.ndarray, pool: int) -> np.ndarray:
    """Aligned 112 px crops -> ``pool``-times smaller uint8 crops (what the world's recognizer reads,
    at a fraction of the size: the shards keep them for the ICR reward, which the world does not use)."""
    x = torch.from_numpy(crops_uint8).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(x, pool).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
