"""FaceSim: cosine similarity between the reference identity embedding(s) and each frame's face.

Frames without a detected face are *counted and reported* (ConsisID's script silently skips
them, which inflates the mean of a video that loses the face): ``face_fraction`` is the share of
evaluated frames with a face, and the mean/min are over those frames only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._util import as_unit_rows, nan_list, summary

CONSISID_FRAMES = 16


def uniform_frame_indices(total_frames: int, count: int = CONSISID_FRAMES) -> list[int]:
    """ConsisID's sampling: ``linspace(0, total-1, count)`` truncated to int, duplicates removed
    (a video shorter than ``count`` frames is evaluated on all of its frames)."""
    if total_frames <= 0:
        raise ValueError("the video has no frames")
    if count <= 0:
        raise ValueError(f"frame count must be positive, got {count}")
    return sorted(set(np.linspace(0, total_frames - 1, count).astype(int).tolist()))


@dataclass
class FaceSimResult:
    frame_indices: list[int]                 # which video frames were evaluated
    per_frame: list[float | None]            # cosine per evaluated frame (None: no face)
    mean: float                              # over frames with a face (NaN when none)
    min: float
    face_fraction: float                     # frames with a face / frames evaluated
    frames_without_face: list[int]           # video frame indices
    reference_count: int
    clip_negative: bool
    face_model: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "face_model": self.face_model,
            "mean": _json(self.mean), "min": _json(self.min), "face_fraction": self.face_fraction,
            "frames_evaluated": len(self.frame_indices), "frames_without_face": self.frames_without_face,
            "frame_indices": self.frame_indices, "per_frame": self.per_frame,
            "reference_count": self.reference_count, "negative_cosines_clipped_to_0": self.clip_negative,
            "notes": self.notes,
        }


def _json(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), 6)


def face_similarity(
    reference_embeddings,
    frame_embeddings: Sequence,
    frame_indices: Sequence[int] | None = None,
    face_model: str = "unknown",
    clip_negative: bool = False,
) -> FaceSimResult:
    """Per-frame identity similarity.

    ``reference_embeddings``: (R, D) or (D,) - several reference photos are averaged *per
    cosine* (the mean of the R cosines), so one atypical photo cannot flip the direction.
    ``frame_embeddings``: one entry per evaluated frame, a (D,) vector or ``None`` (no face).
    ``clip_negative``: ConsisID clips each cosine at 0 before averaging.
    """
    reference = as_unit_rows(reference_embeddings)
    indices = list(range(len(frame_embeddings))) if frame_indices is None else [int(i) for i in frame_indices]
    if len(indices) != len(frame_embeddings):
        raise ValueError(f"{len(frame_embeddings)} frame embeddings but {len(indices)} frame indices")
    scores = np.full(len(frame_embeddings), np.nan)
    present = [i for i, e in enumerate(frame_embeddings) if e is not None]
    if present:
        frames = as_unit_rows([frame_embeddings[i] for i in present])
        if frames.shape[1] != reference.shape[1]:
            raise ValueError(
                f"frame embeddings have {frames.shape[1]} dimensions but the reference has {reference.shape[1]}: "
                "use the same face model for the reference and the video")
        cosines = (frames @ reference.T).mean(axis=1)
        if clip_negative:
            cosines = np.maximum(cosines, 0.0)
        scores[present] = cosines
    mean, minimum = summary(scores)
    missing = [indices[i] for i, e in enumerate(frame_embeddings) if e is None]
    notes = []
    if missing:
        notes.append(f"{len(missing)} of {len(indices)} evaluated frames have no detected face: "
                     f"frames {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    return FaceSimResult(
        frame_indices=indices, per_frame=nan_list(scores), mean=mean, min=minimum,
        face_fraction=(len(present) / len(indices)) if indices else 0.0, frames_without_face=missing,
        reference_count=reference.shape[0], clip_negative=clip_negative, face_model=face_model, notes=notes,
    )
