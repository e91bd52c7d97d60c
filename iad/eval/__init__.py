"""Evaluation of generated videos: ``python -m iad.eval`` (CLI) and the IaD Evaluate Video node
build on ``evaluate_video``. Metric definitions: ``docs/metrics.md``."""

from .analysis import FaceDetector, ReferenceFaces, detect_largest, face_model_name
from .evaluate import SAMPLING_ALL, SAMPLING_CONSISID, SAMPLINGS, EvaluationReport, evaluate_video
from .video_io import Video, VideoReadError, read_image, read_video

__all__ = [
    "FaceDetector", "ReferenceFaces", "detect_largest", "face_model_name",
    "SAMPLING_ALL", "SAMPLING_CONSISID", "SAMPLINGS", "EvaluationReport", "evaluate_video",
    "Video", "VideoReadError", "read_image", "read_video",
]
