"""What the user reads: the errors (what, where, how to fix), image names, face boxes, and the
same-person check across reference photos."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..face_types import FaceEmbeds

SAME_PERSON_THRESHOLD = 0.3       # ArcFace cosine below which two photos are likely different people
SMALL_FACE_PX = 48                # faces narrower than this give unreliable identity


class FaceAnalysisError(RuntimeError):
    """A problem the user can fix; the message says what, where and how."""


class FacePackError(FaceAnalysisError):
    """The model pack is missing, incomplete or unreadable."""


class NoFaceError(FaceAnalysisError):
    """No face in one (or several) of the images."""

    def __init__(self, message: str, image_indices: Sequence[int]):
        super().__init__(message)
        self.image_indices = list(image_indices)


class FaceImageError(ValueError):
    """An input image that cannot be analysed (empty, NaN, wrong shape)."""


def which_image(index: int, count: int) -> str:
    return f"image {index + 1} of {count} (batch index {index})"


def box_text(bbox: np.ndarray) -> str:
    x1, y1, x2, y2 = (int(round(float(v))) for v in bbox[:4])
    return f"x {x1}..{x2}, y {y1}..{y2}"


def same_person_warning(embeds: FaceEmbeds, threshold: float = SAME_PERSON_THRESHOLD, image_count: int | None = None) -> str | None:
    """A warning naming the reference photos that do not look like the others (pairwise ArcFace
    cosine below ``threshold``), or None when they agree."""
    z = embeds.embeddings()
    n = z.shape[0]
    if n < 2:
        return None
    count = image_count or max(f.image_index for f in embeds.faces) + 1
    sim = (z @ z.T).numpy()
    names = [which_image(f.image_index, count) for f in embeds.faces]
    agrees = sim >= threshold
    np.fill_diagonal(agrees, False)
    # The identity is the largest group that agrees with one photo; everyone else is an outlier.
    anchor = max(range(n), key=lambda k: (int(agrees[k].sum()), float(sim[k].sum())))
    if not agrees[anchor].any():
        if n == 2:
            return (f"Identity warning: {names[0]} and {names[1]} do not look like the same person (cosine "
                    f"{sim[0, 1]:.2f} < {threshold:.2f}). Use photos of one person only.")
        return (f"Identity warning: no two of the {n} reference photos look like the same person (mean pairwise cosine "
                f"{(sim.sum() - n) / (n * (n - 1)):.2f} < {threshold:.2f}). Use photos of one person only.")
    group = {anchor} | {k for k in range(n) if agrees[anchor, k]}
    outliers = [k for k in range(n) if k not in group]
    if not outliers:
        return None
    mean_to_group = {k: float(np.mean([sim[k, g] for g in group])) for k in outliers}
    listed = "; ".join(f"{names[k]} (mean cosine to the others {mean_to_group[k]:.2f})" for k in outliers)
    return (f"Identity warning: {listed} do{'es' if len(outliers) == 1 else ''} not look like the same person as the "
            f"other {len(group)} photos (threshold {threshold:.2f}). Remove {'it' if len(outliers) == 1 else 'them'} or "
            "check the face selection.")
