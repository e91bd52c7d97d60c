"""Video evaluation metrics as pure functions over per-frame data.

Every metric here takes already-extracted per-frame quantities (embeddings, landmarks, poses,
frames for optical flow) and returns plain numbers, so each is validated on constructed inputs
with known answers. Obtaining those quantities from a face analyser lives in ``iad.eval``.
See ``docs/metrics.md`` for the definitions.
"""

from .clip_score import ClipScoreResult, clip_text_score
from .expression import (
    EXPRESSION_FEATURES,
    ExpressionResult,
    expression_copy,
    expression_vector,
)
from .drift import DriftResult, DriftWindow, identity_drift, windows_of
from .facesim import FaceSimResult, face_similarity, uniform_frame_indices
from .identity_stability import IdentityStabilityResult, identity_stability
from .motion import MotionResult, dynamic_degree_threshold, farneback_magnitudes, motion_metrics

__all__ = [
    "ClipScoreResult", "clip_text_score",
    "EXPRESSION_FEATURES", "ExpressionResult", "expression_copy", "expression_vector",
    "DriftResult", "DriftWindow", "identity_drift", "windows_of",
    "FaceSimResult", "face_similarity", "uniform_frame_indices",
    "IdentityStabilityResult", "identity_stability",
    "MotionResult", "dynamic_degree_threshold", "farneback_magnitudes", "motion_metrics",
]
