"""Obtaining per-frame face data for the metrics from a face analyser.

The analyser is anything with ``detect(image) -> list[DetectedFace]`` taking an (H, W, 3) uint8
RGB array (``iad.face_analysis.FaceAnalyzer`` does). Detection follows ConsisID's protocol:
the largest face is used; when none is found the frame is padded by 25 % of its size on every
side with mid-grey (ConsisID's ``pad_np_bgr_image(scale=1.25)``) and detected again, and the
coordinates are shifted back. Frames still without a face are recorded as such.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np

from ..face_types import DetectedFace, FaceEmbeds
from ..metrics.expression import expression_vector

PAD_FRACTION = 0.25
PAD_VALUE = 128


@runtime_checkable
class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[DetectedFace]: ...


def face_model_name(detector) -> str:
    """The recognizer named in every report (ConsisID's script never said it used buffalo_l)."""
    for attribute in ("embedder", "model_name", "name"):
        value = getattr(detector, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(detector).__name__


def _area(face: DetectedFace) -> float:
    x1, y1, x2, y2 = np.asarray(face.bbox, dtype=np.float64)[:4]
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def _shift(face: DetectedFace, dx: float, dy: float, image_index: int) -> DetectedFace:
    offset2 = np.array([dx, dy], dtype=np.float32)
    lm3 = None
    if face.landmark_3d_68 is not None:
        lm3 = np.asarray(face.landmark_3d_68, dtype=np.float32).copy()
        lm3[:, :2] -= offset2
    return replace(
        face, image_index=image_index,
        bbox=np.asarray(face.bbox, dtype=np.float32) - np.array([dx, dy, dx, dy], dtype=np.float32),
        kps=np.asarray(face.kps, dtype=np.float32) - offset2,
        landmark_2d_106=None if face.landmark_2d_106 is None else np.asarray(face.landmark_2d_106, np.float32) - offset2,
        landmark_3d_68=lm3,
    )


def pad_image(image: np.ndarray, fraction: float = PAD_FRACTION) -> tuple[np.ndarray, int, int]:
    h, w = image.shape[:2]
    top, left = int(h * fraction), int(w * fraction)
    padded = np.full((h + 2 * top, w + 2 * left, image.shape[2]), PAD_VALUE, dtype=image.dtype)
    padded[top:top + h, left:left + w] = image
    return padded, left, top


@dataclass
class FrameFace:
    face: DetectedFace | None
    padded_retry: bool = False      # found only after padding


def _accepts_retry(detector) -> bool:
    try:
        return "retry" in inspect.signature(detector.detect).parameters
    except (TypeError, ValueError):
        return False


def detect_largest(detector, image: np.ndarray, index: int = 0, retry_with_padding: bool = True) -> FrameFace:
    image = np.ascontiguousarray(image)
    faces = detector.detect(image)
    if faces:
        return FrameFace(replace(max(faces, key=_area), image_index=index))
    if retry_with_padding:
        padded, left, top = pad_image(image)
        # FaceAnalyzer already retried the frame at smaller sizes and with padding: ConsisID's
        # grey-padded attempt is one more detection, not another round of retries.
        faces = detector.detect(padded, retry=False) if _accepts_retry(detector) else detector.detect(padded)
        if faces:
            return FrameFace(_shift(max(faces, key=_area), left, top, index), padded_retry=True)
    return FrameFace(None)


@dataclass
class ReferenceFaces:
    """What the metrics need from the reference photo(s)."""

    embeddings: list            # (D,) per photo
    expressions: list[np.ndarray]
    face_model: str
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_face_embeds(cls, embeds: FaceEmbeds) -> "ReferenceFaces":
        return cls(
            embeddings=[f.embedding for f in embeds.faces],
            expressions=[expression_vector(f.landmark_3d_68, f.pose) for f in embeds.faces],
            face_model=embeds.embedder, notes=list(embeds.info),
        )

    @classmethod
    def from_images(cls, detector, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> "ReferenceFaces":
        names = list(names) if names is not None else [f"reference image {i}" for i in range(len(images))]
        faces, notes = [], []
        for i, image in enumerate(images):
            found = detect_largest(detector, image, i)
            if found.face is None:
                raise ValueError(f"no face found in {names[i]} (also after padding it by 25 %): use a photo where "
                                 "the face is clearly visible, frontal and at least ~100 px wide")
            if found.padded_retry:
                notes.append(f"{names[i]}: face found only after padding (tight crop)")
            faces.append(found.face)
        return cls([f.embedding for f in faces], [expression_vector(f.landmark_3d_68, f.pose) for f in faces],
                    face_model_name(detector), notes)

    @property
    def has_expression(self) -> bool:
        return any(np.any(np.isfinite(v)) for v in self.expressions)


def analyse_frames(detector, frames: np.ndarray, indices: Sequence[int], retry_with_padding: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> list[FrameFace]:
    results = []
    for n, index in enumerate(indices):
        results.append(detect_largest(detector, frames[index], int(index), retry_with_padding))
        if progress is not None:
            progress(n + 1, len(indices))
    return results
