"""Reading a prepared dataset and building deterministic batches.

Determinism is by construction, not by saved RNG state: step ``s`` of a run with seed ``S`` uses
the global-batch clip indices from a permutation seeded by ``(S, epoch)`` and per-sample random
draws (references, noise, sigma, prompts) from generators seeded by ``(S, s, position in the
global batch)``. A resumed run, and a run split over several processes, therefore sees exactly
the samples and noise of the uninterrupted single-process run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..prepare.shards import PROMPT_BANK_FILE, DatasetFormatError, read_dataset, read_shard_records
from .resident import AUTO_MAX_BYTES, MODE_TENSORS, ResidentTensors, resident_bytes

_MIX = 0x9E3779B97F4A7C15
log = logging.getLogger("iad.train")


def sample_generator(seed: int, step: int, position: int, salt: int = 0) -> torch.Generator:
    value = (seed * 1_000_003 + step * 7919 + position * 104_729 + salt * 15_485_863) ^ _MIX
    return torch.Generator().manual_seed(value & 0x7FFF_FFFF_FFFF_FFFF)


@dataclass
class Clip:
    shard: str
    key: str
    record: dict
    person: str


class PreparedDataset:
    """Clips of a prepared dataset; tensors are read from the shards on demand (safetensors mmap)."""

    def __init__(self, folder: str | Path, needs_references: bool = True) -> None:
        self.folder = Path(folder)
        self.info = read_dataset(self.folder)
        # A clip whose file changed is prepared again into a later shard (iad.prepare knows a clip by its
        # name): its newest record supersedes the older one (shards are listed in the order they were
        # made), so no clip trains twice in two versions. Said, never silent.
        latest: dict[str, tuple[str, dict]] = {}
        self.superseded: list[str] = []
        for shard in self.info["shards"]:
            for record in read_shard_records(self.folder, shard):
                if record["source"] in latest:
                    self.superseded.append(f"{record['source']} ({latest[record['source']][0]})")
                latest[record["source"]] = (shard, record)
        if self.superseded:
            log.warning("%s: %d clip(s) were prepared again (their file changed between runs; or, in a dataset indexed "
                        "before iad.prepare refused it, two input folders hold clips of the same name); the newest "
                        "record of each is used, these older ones are not: %s",
                        self.folder, len(self.superseded), ", ".join(self.superseded[:10]))
        self.clips: list[Clip] = []
        for shard, record in latest.values():
            person = record.get("person") or f"{record['source']}#track{record['primary_track']}"
            self.clips.append(Clip(shard, record["key"], record, str(person)))
        if not self.clips:
            raise DatasetFormatError(f"{self.folder} has no prepared clips (every clip was skipped? see 'skipped' in "
                                     "dataset.json).")
        self.persons = sorted({c.person for c in self.clips})
        self.person_index = {p: i for i, p in enumerate(self.persons)}
        actions = sorted({c.record.get("action") or c.record["caption"] for c in self.clips})
        self.action_index = {a: i for i, a in enumerate(actions)}
        self._handles: dict[str, object] = {}
        self._keys: dict[str, set[str]] = {}
        self.resident: ResidentTensors | None = None     # hold_in_memory
        # References from a different clip of the same person when a clip has none of its own.
        self.by_person: dict[str, list[int]] = {}
        for i, c in enumerate(self.clips):
            if c.record["references"] > 0:
                self.by_person.setdefault(c.person, []).append(i)
        orphans = [c.record["source"] for c in self.clips if c.record["references"] == 0 and not self.by_person.get(c.person)]
        if orphans and needs_references:   # training the base model itself uses no references
            raise DatasetFormatError(
                f"clips {orphans[:5]} have no reference frames from another moment and no other clip of the same person: "
                "use longer clips (target window + 2 * reference_gap frames) or give clips of one person the same "
                "'person' in their sidecar JSON.")
        shapes = {tuple(self.tensor(i, "latents").shape) for i in range(min(len(self.clips), 4))}
        if len(shapes) != 1:
            raise DatasetFormatError(f"{self.folder}: clips have different latent shapes {sorted(shapes)}")
        self.latent_shape = shapes.pop()
        self.embedder = self.info.get("embedder")
        # Every batch pads its captions to one length: without an attention mask, zero rows change
        # the cross-attention, so the padding must not depend on which clips share a batch.
        self.text_len = max(int(c.record["text_tokens"]) for c in self.clips)
        # The text encoder's feature width (a VAE training set has no text).
        self.text_dim = int(self.tensor(0, "text").shape[-1]) if self.has_tensor(0, "text") else None

    def __len__(self) -> int:
        return len(self.clips)

    def _handle(self, shard: str):
        from safetensors import safe_open

        handle = self._handles.get(shard)
        if handle is None:
            handle = safe_open(str(self.folder / f"{shard}.safetensors"), framework="pt", device="cpu")
            self._handles[shard] = handle
        return handle

    def has_tensor(self, index: int, name: str) -> bool:
        clip = self.clips[index]
        keys = self._keys.get(clip.shard)
        if keys is None:     # a set per shard: safetensors' keys() is a list, searched per call
            keys = self._keys[clip.shard] = set(self._handle(clip.shard).keys())
        return f"{clip.key}.{name}" in keys

    def read_tensor(self, index: int, name: str) -> torch.Tensor:
        """From the clip's shard (a copy out of the memory map)."""
        clip = self.clips[index]
        return self._handle(clip.shard).get_tensor(f"{clip.key}.{name}")

    def tensor_slice(self, index: int, name: str):
        """The tensor's safetensors slice: its shape and dtype without reading it."""
        clip = self.clips[index]
        return self._handle(clip.shard).get_slice(f"{clip.key}.{name}")

    def tensor(self, index: int, name: str) -> torch.Tensor:
        if self.resident is not None and self.resident.has(name):
            return self.resident.tensor(index, name)
        return self.read_tensor(index, name)

    def length(self, index: int, name: str) -> int:
        """The tensor's first dimension (how many references, track faces), without reading it."""
        if self.resident is not None and self.resident.has(name):
            return int(self.resident.tensor(index, name).shape[0])
        return int(self.tensor_slice(index, name).get_shape()[0])

    def rows(self, name: str, indices: list[int], picks: torch.Tensor | None = None) -> torch.Tensor:
        """The clips' tensors ``name`` stacked, ``[B, ...]``; with ``picks`` (``[B]`` or ``[B, k]``) only
        those rows of each: one gather when the tensors are held in memory."""
        gathered = self.resident.rows(name, indices, picks) if self.resident is not None else None
        if gathered is not None:
            return gathered
        tensors = [self.tensor(i, name) for i in indices]
        return torch.stack(tensors if picks is None else [t[p] for t, p in zip(tensors, picks)])

    def texts(self, indices: list[int]) -> torch.Tensor:
        """The clips' captions, ``[B, text_len, width]`` float32, zero-padded (``pad_text``)."""
        padded = self.resident.texts(indices, self.text_len) if self.resident is not None else None
        return padded if padded is not None else pad_text([self.tensor(i, "text") for i in indices], self.text_len)

    def hold_in_memory(self, setting, mode: str) -> str:
        """``data_in_memory``: read the tensors ``mode`` trains on into memory once (True; "auto": when
        they take at most ``AUTO_MAX_BYTES``) or keep reading them from the shards (False). Returns
        what was done, for the log."""
        names = MODE_TENSORS[mode]
        if setting is False:
            return "read from the shards at each batch (data_in_memory is false)"
        if setting == "auto" and resident_bytes(self, names, stop_above=AUTO_MAX_BYTES) > AUTO_MAX_BYTES:
            return f"read from the shards at each batch (over data_in_memory auto's {AUTO_MAX_BYTES / 2**30:.0f} GiB)"
        self.resident = ResidentTensors(self, names)
        return f"held in memory: {self.resident.nbytes / 2**20:.1f} MiB (data_in_memory {setting!r})"

    def prompt_bank(self) -> tuple[list[str], list[torch.Tensor], torch.Tensor]:
        from safetensors import safe_open

        path = self.folder / PROMPT_BANK_FILE
        if not path.is_file():
            raise DatasetFormatError(f"{path} is missing: re-run iad.prepare on this folder to write it.")
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata()
            prompts = json.loads(metadata["prompts"])
            # padded back to the encoder's length (stored without its zero rows; files written before, as stored)
            lengths = json.loads(metadata.get("text_tokens", "{}"))
            texts = {name: f.get_tensor(name) for name in [f"bank.{i}" for i in range(len(prompts))] + ["null"]}
        texts = {name: pad_text([t], lengths.get(name))[0].to(t.dtype) for name, t in texts.items()}
        return prompts, [texts[f"bank.{i}"] for i in range(len(prompts))], texts["null"]

    def __getstate__(self):   # safetensors handles are per process
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


def global_batch_indices(num_clips: int, global_batch: int, step: int, seed: int) -> list[int]:
    """Clip indices of step ``step``'s global batch: consecutive slices of per-epoch permutations."""
    out = []
    position = step * global_batch
    while len(out) < global_batch:
        epoch, offset = divmod(position, num_clips)
        perm = torch.randperm(num_clips, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))
        take = min(global_batch - len(out), num_clips - offset)
        out.extend(int(i) for i in perm[offset:offset + take])
        position += take
    return out


def pad_text(texts: list[torch.Tensor], length: int | None = None) -> torch.Tensor:
    """[B, length, width] with zero rows after each text (Wan pads its umt5 context with zeros)."""
    length = max([t.shape[0] for t in texts] + [length or 0])
    out = torch.zeros(len(texts), length, texts[0].shape[-1])
    for i, t in enumerate(texts):
        out[i, : t.shape[0]] = t.float()
    return out


def build_caption_batch(dataset: PreparedDataset, indices: list[int], positions: list[int]) -> dict:
    """A batch for ``mode: base``: latents and captions only (no identity)."""
    return {"latents": dataset.rows("latents", indices).float(), "context": dataset.texts(indices), "positions": list(positions)}


def build_pixel_batch(dataset: PreparedDataset, indices: list[int], positions: list[int]) -> dict:
    """A batch for ``mode: vae``: each clip's latents and the frames they encode (``store_pixels``)."""
    return {"latents": dataset.rows("latents", indices).float(), "pixels": dataset.rows("target.pixels", indices),
            "positions": list(positions)}


def build_batch(dataset: PreparedDataset, indices: list[int], positions: list[int], step: int, seed: int,
                num_references: int) -> dict:
    """One process's batch. ``positions`` are the samples' places in the global batch (seeding): each
    sample's draws (a reference clip where its own has none, which references, which two faces of
    its track) come from its own generator, in that order; the tensors are then gathered at once."""
    sources, picks, track_picks, persons, actions = [], [], [], [], []
    for index, position in zip(indices, positions):
        g = sample_generator(seed, 0, position, salt=1)
        clip = dataset.clips[index]
        source = index
        if clip.record["references"] == 0:   # another clip of the same person
            pool = dataset.by_person[clip.person]
            source = pool[int(torch.randint(len(pool), (1,), generator=g))]
        sources.append(source)
        picks.append(torch.randint(dataset.length(source, "ref.embeddings"), (num_references,), generator=g))
        # Frames for the decoupling losses: the first reference plus two target-window faces of the track.
        track_picks.append(torch.randint(dataset.length(index, "track.embeddings"), (2,), generator=g))
        persons.append(dataset.person_index[clip.person])
        actions.append(dataset.action_index[clip.record.get("action") or clip.record["caption"]])
    picks, track_picks = torch.stack(picks), torch.stack(track_picks)
    refs = dataset.rows("ref.embeddings", sources, picks)                 # [B, R, D]
    track = dataset.rows("track.embeddings", indices, track_picks)        # [B, 2, D]
    frames = torch.stack([refs[:, 0], track[:, 0], track[:, 1]], dim=1)   # per sample: reference, face, face
    return {
        "latents": dataset.rows("latents", indices).float(),
        "context": dataset.texts(indices),
        "references": refs,
        "frame_embeddings": frames.reshape(-1, frames.shape[-1]),       # [3B, D]
        "frame_person": torch.tensor(persons).repeat_interleave(3),
        "frame_action": torch.tensor(actions).repeat_interleave(3),
        "frame_action_text": dataset.rows("action_text", indices).repeat_interleave(3, dim=0).float(),
        "person": torch.tensor(persons),
        "reference_crops": dataset.rows("ref.crops", sources, picks[:, 0]),   # [B, S, S, 3] uint8
        "target_boxes": dataset.rows("target.bboxes", indices),               # [B, F, 4]
        "positions": list(positions),
    }
