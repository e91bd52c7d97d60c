"""The prepared-dataset format: ``dataset.json`` + shards of ``.safetensors`` tensors and ``.json``
records. Nothing is pickled. Written by :mod:`iad.prepare`, read by :mod:`iad.train`.

```
<out>/dataset.json                 format "comfyui-iad-dataset", settings, shard list, skipped clips, the
                                   input folders, their clip prefixes and each clip's folder (``inputs``,
                                   ``clip_prefixes``, ``origin``: iad/prepare/plan.py ``claim_clips``)
<out>/prompt_bank.safetensors      text embeddings of the prompt bank and of the empty prompt (stored without
                                   their zero rows, as captions are; metadata ``text_tokens``: the padded lengths)
<out>/shard-00000.safetensors      tensors, one group per clip: "<k>.latents", "<k>.text", ...
<out>/shard-00000.json             one record per clip (``clips``: key, source, caption, action, person, ...)
                                   and the clips of the shard's unit that were skipped (``skipped``)
<out>/plan.json                    while a run is unfinished: the planned shards (iad/prepare/plan.py)
```

Per clip ``k`` (``c0``, ``c1``...):

| tensor | shape | dtype |
|---|---|---|
| ``k.latents`` | ``[C, T', h, w]`` ComfyUI raw VAE latent of the target window | float32 |
| ``k.text`` | ``[L', 4096]`` caption embedding without its trailing zero rows (the record's ``text_tokens`` is the encoder's length ``L``) | float16 |
| ``k.action_text`` | ``[4096]`` mean of the action phrase's rows (caption when absent), padding excluded (``action_text`` setting) | float32 |
| ``k.track.frames`` | ``[n]`` source frame indices with a face in the primary track | int64 |
| ``k.track.bboxes`` / ``.kps`` / ``.scores`` | ``[n, 4]`` / ``[n, 5, 2]`` / ``[n]`` | float32 |
| ``k.track.embeddings`` | ``[n, 512]`` unit face embeddings | float32 |
| ``k.track.landmarks`` | ``[n, 106, 2]`` (zeros when the pack has no 2D-106 model) | float32 |
| ``k.target.frames`` | ``[F]`` source frame indices of the window | int64 |
| ``k.target.bboxes`` | ``[F, 4]`` face box in *training-resolution* pixels (NaN: no face) | float32 |
| ``k.ref.frames`` / ``.embeddings`` / ``.crops`` | ``[R]`` / ``[R, 512]`` / ``[R, S, S, 3]`` aligned crops | int64 / float32 / uint8 |

Text encoders pad: ComfyUI's umt5 gives 512 rows whatever the caption's length, zeros after its
tokens, 4 MiB a clip in fp16, as much as a 33-frame 480p latent. The shard keeps the rows up to the last
non-zero one (:func:`trim_zero_padding`); the trainer pads every caption back with zeros to the dataset's
``text_tokens`` (``iad.train.data.pad_text``), so a batch is the same tensor as with the padding stored.
Datasets written with the padding stored read the same.

References come from frames at least ``reference_gap`` frames outside the target window (a
different moment); ``R`` may be 0, in which case the trainer takes references from another clip
of the same ``person``.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import torch

DATASET_FORMAT = "comfyui-iad-dataset"
SHARD_FORMAT = "comfyui-iad-shard"
FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
PROMPT_BANK_FILE = "prompt_bank.safetensors"


class DatasetFormatError(ValueError):
    """A prepared dataset that cannot be used; the message names the file and the fix."""


def trim_zero_padding(text: torch.Tensor) -> torch.Tensor:
    """``text`` ([L, D]) without its trailing all-zero rows (at least one row is kept)."""
    nonzero = (text != 0).any(dim=-1).nonzero()
    keep = int(nonzero[-1]) + 1 if len(nonzero) else 1
    return text[:keep].contiguous()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        _sort_metadata(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sort_metadata(path: str) -> None:
    """safetensors writes its metadata in hash-map order, which changes from process to process;
    sorted, the same tensors and metadata give the same bytes (one process or many, any run)."""
    with open(path, "r+b") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        metadata = header.get("__metadata__") or {}
        if len(metadata) < 2:
            return
        header["__metadata__"] = dict(sorted(metadata.items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) <= size:   # same content, same length: only the order changes (padding as safetensors pads)
            f.seek(8)
            f.write(text + b" " * (size - len(text)))


def write_shard(folder: Path, index: int, tensors: dict[str, torch.Tensor], records: list[dict], **fields) -> str:
    """Tensors first, then the records: a shard counts as written once its .json exists. ``fields``
    go into the .json next to ``clips`` (iad.prepare: ``skipped``, ``embedder``, ``text_encoder_name``)."""
    name = f"shard-{index:05d}"
    atomic_save_tensors(folder / f"{name}.safetensors", tensors, {"format": SHARD_FORMAT, "format_version": str(FORMAT_VERSION)})
    atomic_write_text(folder / f"{name}.json", json.dumps({"format": SHARD_FORMAT, "format_version": FORMAT_VERSION,
                                                         "clips": records, **fields}, indent=1))
    return name


def read_dataset(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / DATASET_FILE
    if not path.is_file():
        raise DatasetFormatError(f"{folder} is not a prepared IaD dataset (no {DATASET_FILE}). "
                                 "Create one with `python -m iad.prepare --input VIDEOS --output FOLDER ...`.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetFormatError(f"{path} is not valid JSON ({exc}); re-run iad.prepare into a new folder.") from None
    if info.get("format") != DATASET_FORMAT:
        raise DatasetFormatError(f"{path} is not an IaD dataset description (format {info.get('format')!r}).")
    if int(info.get("format_version", 0)) != FORMAT_VERSION:
        raise DatasetFormatError(f"{path} has dataset format version {info.get('format_version')}; this ComfyUI-IaD "
                                 f"reads version {FORMAT_VERSION}. Re-run iad.prepare with this version.")
    return info


def read_shard_records(folder: Path, name: str) -> list[dict]:
    path = Path(folder) / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetFormatError(f"{path} is listed in dataset.json but missing; re-run iad.prepare to resume.") from None
    if data.get("format") != SHARD_FORMAT:
        raise DatasetFormatError(f"{path} is not an IaD shard record file.")
    return data["clips"]
