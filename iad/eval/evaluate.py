"""One video in, one report out: runs the face analysis once and every metric on its results."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..metrics.clip_score import ClipScoreResult
from ..metrics.drift import DriftResult, identity_drift, windows_of
from ..metrics.expression import ExpressionResult, expression_copy, expression_vector
from ..metrics.facesim import FaceSimResult, face_similarity, uniform_frame_indices
from ..metrics.identity_stability import IdentityStabilityResult, identity_stability
from ..metrics.motion import MotionResult, motion_metrics
from .analysis import ReferenceFaces, analyse_frames, face_model_name

from .sampling import SAMPLING_ALL, SAMPLING_CONSISID, SAMPLINGS  # noqa: F401  (re-exported)
REPORT_VERSION = 1
CLIP_SKIPPED_NO_MODELS = ("CLIP-T skipped: no CLIP models supplied (connect a CLIP text encoder from Load CLIP and a "
                          "CLIP vision model from Load CLIP Vision to the IaD Evaluate Video node)")

ClipScorer = Callable[[np.ndarray, str], ClipScoreResult]


@dataclass
class EvaluationReport:
    source: str
    num_frames: int
    height: int
    width: int
    fps: float
    sampling: str
    face_model: str
    prompt: str | None
    facesim: FaceSimResult
    stability: IdentityStabilityResult
    motion: MotionResult
    expression: ExpressionResult | None
    expression_skipped: str | None
    clip: ClipScoreResult | None
    clip_skipped: str | None
    drift: DriftResult | None = None
    frames_found_after_padding: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "report_version": REPORT_VERSION, "source": self.source, "face_model": self.face_model,
            "video": {"frames": self.num_frames, "height": self.height, "width": self.width, "fps": self.fps},
            "sampling": self.sampling, "prompt": self.prompt,
            "facesim": {**self.facesim.as_dict(), "frames_found_after_padding": self.frames_found_after_padding},
            "identity_stability": self.stability.as_dict(),
            "expression_copy": self.expression.as_dict() if self.expression else {"skipped": self.expression_skipped},
            "motion": self.motion.as_dict(),
            "clip_t": self.clip.as_dict() if self.clip else {"skipped": self.clip_skipped},
            "drift": self.drift.as_dict() if self.drift else None,
            "notes": self.notes,
        }

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.as_dict(), indent=indent)

    def summary_row(self) -> dict:
        """One flat row for the CLI's Markdown/CSV table (NaN where a metric is undefined)."""
        e = self.expression
        return {
            "video": self.source, "frames": self.num_frames, "face_model": self.face_model,
            "facesim_mean": self.facesim.mean, "facesim_min": self.facesim.min,
            "face_fraction": self.facesim.face_fraction,
            "identity_stability": self.stability.adjacent_mean,
            "copy_paste_rate": e.copy_rate if e else math.nan,
            "expression_distance": e.mean_distance if e else math.nan,
            "expression_variability": e.variability if e else math.nan,
            "motion": self.motion.video_mean_magnitude,
            "dynamic": self.motion.dynamic,
            "clip_t": self.clip.mean if self.clip else math.nan,
            **drift_columns(self.drift),
        }


def drift_columns(drift: DriftResult | None) -> dict:
    """The drift numbers of one table row (NaN where undefined)."""
    nan = math.nan
    worst = drift.windows[drift.worst_window] if drift and drift.worst_window is not None else None
    return {
        "drift_first_second": drift.first_second if drift else nan, "drift_last_second": drift.last_second if drift else nan,
        "drift_drop": drift.drop if drift else nan, "drift_slope_per_s": drift.slope_per_second if drift else nan,
        "drift_slope_ci_low": drift.slope_ci95[0] if drift else nan, "drift_slope_ci_high": drift.slope_ci95[1] if drift else nan,
        "worst_window": f"{worst.start}-{worst.end}" if worst else "", "worst_window_facesim": worst.mean if worst else nan,
    }


def evaluate_video(
    frames: np.ndarray,
    detector,
    reference: ReferenceFaces,
    fps: float,
    prompt: str | None = None,
    sampling: str = SAMPLING_ALL,
    clip_scorer: ClipScorer | None = None,
    source: str = "video",
    clip_negative: bool | None = None,
    flow_scale: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
    window_frames: int = 0,
    window_overlap: int = 0,
) -> EvaluationReport:
    """``frames``: (N, H, W, 3) uint8 RGB. ``sampling``: ``"all"`` frames, or ``"consisid16"``
    (16 uniform frames and cosines clipped at 0, as ConsisID reports FaceSim-Arc).
    ``flow_scale``: resolution factor for the optical flow (``iad.metrics.motion``).
    ``window_frames`` > 0: the video was made in windows of that many frames sharing
    ``window_overlap`` frames; the drift reports each window's identity and the worst one."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{source}: expected video frames of shape (N, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{source}: expected uint8 frames, got {frames.dtype}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown frame sampling {sampling!r}; use one of {SAMPLINGS}")
    n = frames.shape[0]
    if window_frames or window_overlap:   # refused before the face analysis runs, not after
        windows_of(n, int(window_frames), int(window_overlap))
    indices = list(range(n)) if sampling == SAMPLING_ALL else uniform_frame_indices(n)
    if clip_negative is None:
        clip_negative = sampling == SAMPLING_CONSISID
    model = face_model_name(detector)
    notes = list(reference.notes)
    if reference.face_model and reference.face_model != model:
        notes.append(f"the reference embeddings were made with {reference.face_model!r} and the video's with "
                     f"{model!r}: FaceSim compares embeddings of different models only if they are the same recognizer")

    found = analyse_frames(detector, frames, indices, progress=progress)
    embeddings = [f.face.embedding if f.face is not None else None for f in found]
    facesim = face_similarity(reference.embeddings, embeddings, indices, face_model=model, clip_negative=clip_negative)
    stability = identity_stability(embeddings)

    expression, expression_skipped = None, None
    frame_expressions = [expression_vector(f.face.landmark_3d_68, f.face.pose) if f.face is not None else None
                         for f in found]
    if not reference.has_expression:
        expression_skipped = ("expression copy skipped: the reference face has no 68-point landmarks or pose; the face "
                              "pack needs its landmark model (1k3d68.onnx, part of antelopev2 and buffalo_l)")
    elif not any(v is not None and np.any(np.isfinite(v)) for v in frame_expressions):
        expression_skipped = "expression copy skipped: no video frame has a face with landmarks or pose"
    else:
        expression = expression_copy(reference.expressions, frame_expressions, indices)

    motion = motion_metrics(frames, fps, flow_scale=flow_scale)
    # drift is read from the unclipped cosines: clipping at 0 would hide a face turning into someone else's
    raw = facesim if not clip_negative else face_similarity(reference.embeddings, embeddings, indices, face_model=model)
    drift = identity_drift(raw.per_frame, raw.frame_indices, fps, num_frames=n, window_frames=window_frames,
                           window_overlap=window_overlap)

    clip, clip_skipped = None, None
    if clip_scorer is None:
        clip_skipped = CLIP_SKIPPED_NO_MODELS
    elif not prompt or not prompt.strip():
        clip_skipped = "CLIP-T skipped: no prompt given"
    else:
        clip = clip_scorer(frames[indices], prompt)

    return EvaluationReport(
        source=source, num_frames=n, height=int(frames.shape[1]), width=int(frames.shape[2]), fps=float(fps),
        sampling=sampling, face_model=model, prompt=prompt or None, facesim=facesim, stability=stability,
        motion=motion, expression=expression, expression_skipped=expression_skipped, clip=clip,
        clip_skipped=clip_skipped, drift=drift, frames_found_after_padding=[f.face.image_index for f in found if f.padded_retry],
        notes=notes + facesim.notes,
    )
