"""A prepared dataset's training tensors held in memory (``data_in_memory``).

Read from the shards on demand, a batch costs one safetensors call per clip and tensor: 48 clips of the
GPU-scale synthetic world in mode adapter took ~430 of them, most of a step's CPU time, while the
device would wait. Small datasets (the synthetic worlds, a few thousand clips of small latents) are
read once instead, each tensor name of the mode into one stacked column ``[N, ...]`` when every clip's
tensor has one shape and dtype (else one tensor per clip), so that a batch is a few index operations.
Captions are one column padded with zeros to the longest stored caption, each clip's stored length
kept: a batch is then exactly what ``data.pad_text`` makes of the same clips.

Batches built from memory are equal, bit for bit, to batches read from the shards
(tests/test_train_pipeline.py), so the choice changes speed and memory only.
"""

from __future__ import annotations

import torch

# What each mode's batches read (data.py's builders); nothing else is loaded.
MODE_TENSORS = {
    "base": ("latents", "text"),
    "adapter": ("latents", "text", "action_text", "ref.embeddings", "ref.crops", "track.embeddings", "target.bboxes"),
    "vae": ("latents", "target.pixels"),
}
AUTO_MAX_BYTES = 2 * 2**30      # data_in_memory "auto": at most this much per process (each one holds a copy)
_ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                  "F8_E4M3": 1, "F8_E5M2": 1}


def resident_bytes(dataset, names, stop_above: int | None = None) -> int:
    """The memory the resident columns of ``names`` would take, from the shards' headers (nothing read);
    counting stops once the total is over ``stop_above`` (a large dataset's answer is then known)."""
    total = 0
    for name in names:
        text_rows, text_width, text_bytes = 0, 0, 0
        for index in range(len(dataset)):
            if not dataset.has_tensor(index, name):
                continue
            view = dataset.tensor_slice(index, name)
            shape, element = view.get_shape(), _ELEMENT_BYTES.get(view.get_dtype(), 4)
            if name == "text":   # padded to the longest stored caption and the dataset's text length
                text_rows = max(text_rows, shape[0], dataset.text_len)
                text_width, text_bytes = shape[-1], element
                continue
            count = element
            for size in shape:
                count *= size
            total += count
            if stop_above is not None and total > stop_above:
                return total
        total += len(dataset) * text_rows * text_width * text_bytes
    return total


class ResidentTensors:
    """Every clip's tensors ``names`` of ``dataset``, read once. ``columns[name]``: ``[N, ...]`` where
    all clips agree on shape and dtype; ``per_clip[name]``: one tensor per clip otherwise. Tensors handed
    out are views of these: the builders copy them (index, stack) before anything could change them."""

    def __init__(self, dataset, names) -> None:
        self.columns: dict[str, torch.Tensor] = {}
        self.per_clip: dict[str, list[torch.Tensor]] = {}
        self.text_lengths: torch.Tensor | None = None
        for name in names:
            if not all(dataset.has_tensor(i, name) for i in range(len(dataset))):
                continue     # read on demand (and refused there, by name, if a batch needs it)
            tensors = [dataset.read_tensor(i, name) for i in range(len(dataset))]
            if name == "text":
                if any(t.dtype != tensors[0].dtype or t.shape[1:] != tensors[0].shape[1:] for t in tensors):
                    self.per_clip[name] = tensors
                    continue
                self.text_lengths = torch.tensor([t.shape[0] for t in tensors])
                rows = max(int(self.text_lengths.max()), dataset.text_len)
                column = torch.zeros(len(tensors), rows, *tensors[0].shape[1:], dtype=tensors[0].dtype)
                for i, t in enumerate(tensors):
                    column[i, : t.shape[0]] = t
                self.columns[name] = column
            elif all(t.shape == tensors[0].shape and t.dtype == tensors[0].dtype for t in tensors):
                self.columns[name] = torch.stack(tensors)
            else:
                self.per_clip[name] = tensors
            del tensors

    @property
    def nbytes(self) -> int:
        return (sum(c.numel() * c.element_size() for c in self.columns.values())
                + sum(t.numel() * t.element_size() for ts in self.per_clip.values() for t in ts))

    def has(self, name: str) -> bool:
        return name in self.columns or name in self.per_clip

    def tensor(self, index: int, name: str) -> torch.Tensor:
        return self.columns[name][index] if name in self.columns else self.per_clip[name][index]

    def rows(self, name: str, indices: list[int], picks: torch.Tensor | None = None) -> torch.Tensor | None:
        """``torch.stack([tensor(i)[picks[b]] ...])`` as one gather (None when ``name`` is not a column)."""
        column = self.columns.get(name)
        if column is None:
            return None
        index = torch.tensor(indices, dtype=torch.long)
        if picks is None:
            return column[index]
        return column[index[:, None], picks] if picks.dim() == 2 else column[index, picks]

    def texts(self, indices: list[int], length: int) -> torch.Tensor | None:
        """``pad_text`` of the clips' captions to ``length`` (float32), or None where captions are not a column."""
        if self.text_lengths is None:
            return None
        index = torch.tensor(indices, dtype=torch.long)
        rows = max(length, int(self.text_lengths[index].max()))
        return self.columns["text"][index, :rows].float()
