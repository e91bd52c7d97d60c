"""Where the face is: the ArcFace alignment crop the recognizer takes, and the face-box mask."""

from __future__ import annotations

import warnings

import numpy as np


def align_crop(image: np.ndarray, kps: np.ndarray, crop_size: int) -> np.ndarray:
    """The ArcFace-aligned (crop_size x crop_size) crop for 5 keypoints: a pure warp, so the channel
    order passes through (BGR in, BGR out)."""
    from insightface.utils import face_align

    with warnings.catch_warnings():  # scikit-image deprecation inside insightface, once per face otherwise
        warnings.simplefilter("ignore", FutureWarning)
        return face_align.norm_crop(image, landmark=np.asarray(kps, dtype=np.float32), image_size=crop_size)


def face_mask(bbox: np.ndarray, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32 mask, 1 inside the ellipse inscribed in the face box. Written into ``out``
    (e.g. a view of a MASK batch) when given; only the box region is computed."""
    mask = np.zeros((height, width), dtype=np.float32) if out is None else out
    x1, y1, x2, y2 = (float(v) for v in bbox[:4])
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx, ry = max((x2 - x1) / 2, 1e-3), max((y2 - y1) / 2, 1e-3)
    top, bottom = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)) + 1, height)
    left, right = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)) + 1, width)
    if top >= bottom or left >= right:
        return mask
    ys = (np.arange(top, bottom, dtype=np.float32) + 0.5 - cy) / ry
    xs = (np.arange(left, right, dtype=np.float32) + 0.5 - cx) / rx
    region = mask[top:bottom, left:right]
    np.maximum(region, (ys[:, None] ** 2 + xs[None, :] ** 2) <= 1.0, out=region)
    return mask
