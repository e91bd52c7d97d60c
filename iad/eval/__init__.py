"""Evaluation of generated videos: ``python -m iad.eval`` (CLI) and the IaD Evaluate Video node
build on ``evaluate_video``. Metric definitions: ``docs/metrics.md``.

The names below load on first use (PEP 562): ``python -m iad.eval --help`` must not wait for torch.
"""

from ..lazy_exports import lazy_getattr

_EXPORTS = {
    "FaceDetector": "analysis", "ReferenceFaces": "analysis", "detect_largest": "analysis", "face_model_name": "analysis",
    "SAMPLING_ALL": "sampling", "SAMPLING_CONSISID": "sampling", "SAMPLINGS": "sampling",
    "EvaluationReport": "evaluate", "evaluate_video": "evaluate",
    "Video": "video_io", "VideoReadError": "video_io", "read_image": "video_io", "read_video": "video_io",
}
__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, globals(), _EXPORTS)
