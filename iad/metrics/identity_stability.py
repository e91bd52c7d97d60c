"""Identity stability: does the face stay the *same person* from frame to frame?

FaceSim compares every frame with the reference; stability compares the frames with each other,
so a video that is consistently a slightly different person (stable, low FaceSim) is told apart
from one that flickers between identities (unstable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._util import as_unit_rows, nan_list, summary


@dataclass
class IdentityStabilityResult:
    adjacent: list[float | None]        # cosine between consecutive evaluated frames with a face
    adjacent_mean: float
    adjacent_min: float
    to_centroid: list[float | None]     # per evaluated frame: cosine to the video's mean identity
    to_centroid_mean: float
    to_centroid_min: float
    frames_with_face: int

    def as_dict(self) -> dict:
        r = lambda v: None if not math.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {
            "adjacent_mean": r(self.adjacent_mean), "adjacent_min": r(self.adjacent_min),
            "to_centroid_mean": r(self.to_centroid_mean), "to_centroid_min": r(self.to_centroid_min),
            "frames_with_face": self.frames_with_face,
            "adjacent": self.adjacent, "to_centroid": self.to_centroid,
        }


def identity_stability(frame_embeddings: Sequence) -> IdentityStabilityResult:
    """``frame_embeddings``: one (D,) vector or ``None`` per evaluated frame, in time order.
    Adjacent pairs skip over frames without a face (the next face is compared with the last one
    seen), so a single missed detection does not hide a jump in identity."""
    present = [i for i, e in enumerate(frame_embeddings) if e is not None]
    centroid_scores = np.full(len(frame_embeddings), np.nan)
    if not present:
        return IdentityStabilityResult([], math.nan, math.nan, nan_list(centroid_scores), math.nan, math.nan, 0)
    faces = as_unit_rows([frame_embeddings[i] for i in present])
    adjacent = np.sum(faces[1:] * faces[:-1], axis=1) if len(present) > 1 else np.array([])
    centroid = faces.mean(axis=0)
    centroid /= max(np.linalg.norm(centroid), 1e-12)
    centroid_scores[present] = faces @ centroid
    adj_mean, adj_min = summary(adjacent) if adjacent.size else (math.nan, math.nan)
    cen_mean, cen_min = summary(centroid_scores)
    return IdentityStabilityResult(nan_list(adjacent), adj_mean, adj_min, nan_list(centroid_scores),
                                   cen_mean, cen_min, len(present))
