"""Expression copy: does the video's face follow the prompt, or paste the reference photo's
expression and head pose onto every frame?

Per face we compute an *expression vector* from the 68-point landmarks (iBUG layout, which
insightface's ``1k3d68`` model outputs) and the head pose:

================  ==========================================================================
``mouth_open``    mean inner-lip gap (61-67, 62-66, 63-65) / inter-ocular distance
``mouth_width``   mouth-corner distance (48-54) / inter-ocular distance (smiles widen it)
``eye_open``      eye aspect ratio, mean of both eyes: (|37-41| + |38-40|) / (2 |36-39|)
``brow_raise``    mean height of the brow points above their eye's centre / inter-ocular
``yaw``           degrees, from the pose
``pitch``         degrees
``roll``          degrees
================  ==========================================================================

Heights are measured in the face's own frame (rotated so the eye line is horizontal), so an
in-plane head tilt changes ``roll`` only. The inter-ocular distance (between eye centres) is
the face-size normaliser: it does not change with expression.

Each feature is divided by a *noticeable-change scale* (``DEFAULT_SCALES``: the change a viewer
reads as a different expression or pose), and the distance between two faces is the Euclidean
norm of the scaled difference. A frame *copies* the reference when its distance to the nearest
reference photo is below 1 (no feature moved by a noticeable amount - or only small moves in a
few). The **copy-paste rate** is the share of frames with a face that copy the reference; it
falls as the video follows the prompt. Variability (RMS scaled distance of each frame to the
video's own mean expression) separates "frozen on a different expression" (low copy, low
variability) from "alive" (low copy, high variability).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

EXPRESSION_FEATURES = ("mouth_open", "mouth_width", "eye_open", "brow_raise", "yaw", "pitch", "roll")
FACE_FEATURES = EXPRESSION_FEATURES[:4]
POSE_FEATURES = EXPRESSION_FEATURES[4:]
DEFAULT_SCALES: dict[str, float] = {
    "mouth_open": 0.10,    # closed lips ~0.0, speaking 0.1-0.4, wide open 0.6+ (of the inter-ocular distance)
    "mouth_width": 0.10,   # neutral ~0.8-0.9, broad smile ~1.0-1.1
    "eye_open": 0.08,      # open eye ~0.25-0.35, closed ~0.05
    "brow_raise": 0.08,    # a raised brow lifts by ~0.1-0.2
    "yaw": 10.0, "pitch": 10.0, "roll": 10.0,   # degrees
}
COPY_THRESHOLD = 1.0

_RIGHT_EYE = slice(36, 42)     # subject's right eye: image-left in a frontal photo
_LEFT_EYE = slice(42, 48)
_RIGHT_BROW = slice(17, 22)
_LEFT_BROW = slice(22, 27)
_INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))


def expression_vector(landmarks_68: np.ndarray | None, pose: np.ndarray | None = None) -> np.ndarray:
    """(7,) float64 in ``EXPRESSION_FEATURES`` order; NaN where the input is missing.

    ``landmarks_68``: (68, 2) or (68, 3) image coordinates (only x, y are used).
    ``pose``: (3,) pitch, yaw, roll in degrees (insightface's order)."""
    vector = np.full(len(EXPRESSION_FEATURES), np.nan)
    if landmarks_68 is not None:
        points = np.asarray(landmarks_68, dtype=np.float64)
        if points.ndim != 2 or points.shape[0] != 68 or points.shape[1] < 2:
            raise ValueError(f"expected 68 landmarks of shape (68, 2|3), got {points.shape}")
        vector[:4] = _face_features(points[:, :2])
    if pose is not None:
        pose = np.asarray(pose, dtype=np.float64).reshape(-1)
        if pose.shape[0] != 3:
            raise ValueError(f"expected pose (pitch, yaw, roll), got shape {pose.shape}")
        pitch, yaw, roll = pose
        vector[4:] = (yaw, pitch, roll)
    return vector


def _face_features(points: np.ndarray) -> np.ndarray:
    right_eye_centre = points[_RIGHT_EYE].mean(0)
    left_eye_centre = points[_LEFT_EYE].mean(0)
    eye_axis = left_eye_centre - right_eye_centre
    inter_ocular = float(np.linalg.norm(eye_axis))
    if not math.isfinite(inter_ocular) or inter_ocular < 1e-6:
        return np.full(4, np.nan)
    # Rotate into the face's frame: x along the eye line, y pointing down the face.
    cos, sin = eye_axis / inter_ocular
    rotation = np.array([[cos, sin], [-sin, cos]])
    p = (points - (right_eye_centre + left_eye_centre) / 2) @ rotation.T

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(p[a] - p[b]))

    mouth_open = np.mean([dist(a, b) for a, b in _INNER_LIP_PAIRS]) / inter_ocular
    mouth_width = dist(48, 54) / inter_ocular
    right_ear = (dist(37, 41) + dist(38, 40)) / max(2 * dist(36, 39), 1e-6)
    left_ear = (dist(43, 47) + dist(44, 46)) / max(2 * dist(42, 45), 1e-6)
    right_brow = p[_RIGHT_EYE, 1].mean() - p[_RIGHT_BROW, 1].mean()
    left_brow = p[_LEFT_EYE, 1].mean() - p[_LEFT_BROW, 1].mean()
    brow_raise = (right_brow + left_brow) / 2 / inter_ocular
    return np.array([mouth_open, mouth_width, (right_ear + left_ear) / 2, brow_raise])


def scaled_distance(a: np.ndarray, b: np.ndarray, scales: np.ndarray, features: Sequence[int] | None = None) -> float:
    """Euclidean norm of ``(a - b) / scales`` over the features finite in both (NaN if none)."""
    diff = (np.asarray(a) - np.asarray(b)) / scales
    if features is not None:
        diff = diff[list(features)]
    diff = diff[np.isfinite(diff)]
    return float(np.sqrt(np.sum(diff ** 2))) if diff.size else math.nan


@dataclass
class ExpressionResult:
    frame_indices: list[int]
    per_frame_distance: list[float | None]      # to the nearest reference, noticeable units
    per_frame_features: list[list[float | None] | None]
    reference_features: list[list[float | None]]
    copy_rate: float                            # share of frames with a face and distance < threshold
    copy_rate_face: float                       # expression features only (mouth, eyes, brows)
    copy_rate_pose: float                       # head pose only
    mean_distance: float
    variability: float
    features_used: list[str]
    threshold: float
    scales: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        r = lambda v: None if v is None or not math.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {
            "copy_paste_rate": r(self.copy_rate), "copy_paste_rate_face": r(self.copy_rate_face),
            "copy_paste_rate_pose": r(self.copy_rate_pose), "mean_distance_to_reference": r(self.mean_distance),
            "variability": r(self.variability), "threshold": self.threshold, "features": list(EXPRESSION_FEATURES),
            "features_used": self.features_used, "scales": self.scales, "reference_features": self.reference_features,
            "frame_indices": self.frame_indices, "per_frame_distance": self.per_frame_distance,
            "per_frame_features": self.per_frame_features, "notes": self.notes,
        }


def _scales_array(scales: Mapping[str, float] | None) -> tuple[np.ndarray, dict[str, float]]:
    merged = dict(DEFAULT_SCALES)
    merged.update(scales or {})
    unknown = set(merged) - set(EXPRESSION_FEATURES)
    if unknown:
        raise ValueError(f"unknown expression features {sorted(unknown)}; known: {EXPRESSION_FEATURES}")
    array = np.array([merged[k] for k in EXPRESSION_FEATURES], dtype=np.float64)
    if np.any(array <= 0):
        raise ValueError("expression scales must be positive")
    return array, merged


def _round_list(vector: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else round(float(v), 6) for v in vector]


def expression_copy(
    reference_vectors: Sequence[np.ndarray],
    frame_vectors: Sequence[np.ndarray | None],
    frame_indices: Sequence[int] | None = None,
    scales: Mapping[str, float] | None = None,
    threshold: float = COPY_THRESHOLD,
) -> ExpressionResult:
    """Copy-paste rate and distances of each frame's expression to the reference photo(s).

    ``reference_vectors``: one ``expression_vector`` per reference photo (a frame copies the
    reference if it copies *any* of them). ``frame_vectors``: one per evaluated frame, ``None``
    when the frame has no face."""
    scale, merged = _scales_array(scales)
    refs = [np.asarray(v, dtype=np.float64) for v in reference_vectors]
    refs = [v for v in refs if np.any(np.isfinite(v))]
    if not refs:
        raise ValueError("the reference photo has no landmarks or pose: expression copy needs the face pack's "
                         "landmark model (1k3d68.onnx, in antelopev2 and buffalo_l)")
    indices = list(range(len(frame_vectors))) if frame_indices is None else [int(i) for i in frame_indices]
    if len(indices) != len(frame_vectors):
        raise ValueError(f"{len(frame_vectors)} frame vectors but {len(indices)} frame indices")
    ref_finite = np.any([np.isfinite(v) for v in refs], axis=0)
    present = [i for i, v in enumerate(frame_vectors) if v is not None and np.any(np.isfinite(v))]
    frame_finite = (np.any([np.isfinite(frame_vectors[i]) for i in present], axis=0)
                    if present else np.zeros(len(EXPRESSION_FEATURES), bool))
    used = [k for k, name in enumerate(EXPRESSION_FEATURES) if ref_finite[k] and frame_finite[k]]
    face_idx = [k for k in used if EXPRESSION_FEATURES[k] in FACE_FEATURES]
    pose_idx = [k for k in used if EXPRESSION_FEATURES[k] in POSE_FEATURES]

    def nearest(vector: np.ndarray, features: Sequence[int]) -> float:
        if not features:
            return math.nan
        return min(scaled_distance(vector, ref, scale, features) for ref in refs)

    distances = np.full(len(frame_vectors), np.nan)
    copies = {"all": [], "face": [], "pose": []}
    for i in present:
        vector = np.asarray(frame_vectors[i], dtype=np.float64)
        distances[i] = nearest(vector, used)
        copies["all"].append(distances[i] < threshold)
        if face_idx:
            copies["face"].append(nearest(vector, face_idx) < threshold)
        if pose_idx:
            copies["pose"].append(nearest(vector, pose_idx) < threshold)
    rate = lambda flags: float(np.mean(flags)) if flags else math.nan  # noqa: E731
    finite = distances[np.isfinite(distances)]
    if present:
        stacked = np.stack([np.asarray(frame_vectors[i], dtype=np.float64) for i in present])
        centre = np.nanmean(np.where(np.isfinite(stacked), stacked, np.nan), axis=0)
        spread = [scaled_distance(v, centre, scale, used) for v in stacked]
        spread = np.array([s for s in spread if math.isfinite(s)])
        variability = float(np.sqrt(np.mean(spread ** 2))) if spread.size else math.nan
    else:
        variability = math.nan
    notes = []
    missing = [name for k, name in enumerate(EXPRESSION_FEATURES) if k not in used]
    if missing:
        notes.append(f"features not available in both the reference and the video: {missing}")
    if not present:
        notes.append("no frame has a face with landmarks: the copy-paste rate is undefined")
    return ExpressionResult(
        frame_indices=indices,
        per_frame_distance=_round_list(distances),
        per_frame_features=[_round_list(np.asarray(v, dtype=np.float64)) if v is not None else None for v in frame_vectors],
        reference_features=[_round_list(v) for v in refs],
        copy_rate=rate(copies["all"]), copy_rate_face=rate(copies["face"]), copy_rate_pose=rate(copies["pose"]),
        mean_distance=float(finite.mean()) if finite.size else math.nan, variability=variability,
        features_used=[EXPRESSION_FEATURES[k] for k in used], threshold=float(threshold), scales=merged, notes=notes,
    )
