"""Motion: dense optical-flow magnitude (OpenCV Farneback: no weights) and a VBench-style
dynamic-degree decision.

- ``mean_magnitude`` per consecutive frame pair is OpenS2V's motion measure (mean Farneback flow).
- ``top5_magnitude`` per pair is VBench's per-pair statistic: the mean of the largest 5 % of
  flow magnitudes (VBench computes it on RAFT flow; Farneback is a weight-free stand-in that
  under-estimates fast motion, so the decision is "VBench-style", not a VBench number).
- Dynamic degree (VBench ``dynamic_degree.py``): frames are subsampled to about 8 fps
  (every ``max(1, round(fps/8))``-th frame); the video is *dynamic* when at least
  ``round(4 * n/16)`` of the sampled pairs (n = sampled frames) have
  ``top5 > max(1, 8/fps) * 6 * min(H, W) / 256`` pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# cv2.calcOpticalFlowFarneback parameters: OpenCV's documented example values, which OpenS2V-style
# motion scripts use as well.
FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
TOP_FRACTION = 0.05


@dataclass
class MotionResult:
    pair_frames: list[int]              # pair k is frames (pair_frames[k], pair_frames[k] + 1)
    mean_magnitude: list[float]         # per consecutive pair, pixels/frame
    top5_magnitude: list[float]
    video_mean_magnitude: float         # OpenS2V-style motion score
    dynamic: bool | None                # None: fewer than two frames
    dynamic_threshold: float
    dynamic_pairs_over_threshold: int
    dynamic_pairs_required: int
    dynamic_sample_interval: int
    fps: float
    flow_scale: float = 1.0

    def as_dict(self) -> dict:
        r = lambda v: round(float(v), 6)  # noqa: E731
        return {
            "method": "OpenCV Farneback optical flow", "flow_scale": self.flow_scale,
            "mean_magnitude": r(self.video_mean_magnitude) if math.isfinite(self.video_mean_magnitude) else None,
            "dynamic_degree": {
                "dynamic": self.dynamic, "threshold_px": r(self.dynamic_threshold),
                "pairs_over_threshold": self.dynamic_pairs_over_threshold,
                "pairs_required": self.dynamic_pairs_required,
                "sample_interval": self.dynamic_sample_interval, "fps": self.fps,
                "rule": "dynamic if >= round(4*n/16) sampled pairs have top-5% flow > max(1,8/fps)*6*min(H,W)/256",
            },
            "per_pair_mean": [r(v) for v in self.mean_magnitude],
            "per_pair_top5": [r(v) for v in self.top5_magnitude],
        }


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(np.rint(frame.astype(np.float32) * (255.0 if frame.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        return frame
    if frame.shape[-1] == 1:
        return frame[..., 0]
    return cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2GRAY)


def farneback_magnitudes(frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
    """(H, W) flow magnitude in pixels from ``frame_a`` to ``frame_b`` (RGB or gray, uint8 or 0-1)."""
    import cv2

    flow = cv2.calcOpticalFlowFarneback(_gray(frame_a), _gray(frame_b), None, **FARNEBACK_PARAMS)
    return np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)


def top_fraction_mean(magnitude: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Mean of the largest ``int(fraction * H*W)`` magnitudes (VBench's ``get_score``)."""
    flat = magnitude.reshape(-1)
    count = max(1, int(flat.size * fraction))
    return float(np.partition(flat, flat.size - count)[flat.size - count:].mean())


def dynamic_degree_threshold(height: int, width: int, fps: float) -> float:
    return max(1.0, 8.0 / fps) * 6.0 * (min(height, width) / 256.0)


def dynamic_sample_interval(fps: float) -> int:
    return max(1, round(fps / 8.0))


def motion_metrics(frames: Sequence[np.ndarray], fps: float, flow_scale: float = 1.0) -> MotionResult:
    """Flow statistics over consecutive frames plus the VBench-style dynamic-degree decision.

    ``flow_scale`` < 1 computes the flow on frames resized by that factor (much faster: Farneback's
    cost is proportional to the pixel count) and reports magnitudes back in full-resolution
    pixels, so thresholds stay comparable; fine sub-pixel motion is then under-resolved."""
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if not 0.05 <= flow_scale <= 1.0:
        raise ValueError(f"flow_scale must be between 0.05 and 1, got {flow_scale}")
    grays = [_gray(f) for f in frames]
    if len({g.shape for g in grays}) > 1:
        raise ValueError("all frames of a video must have the same size")
    height, width = grays[0].shape[:2] if grays else (0, 0)
    if flow_scale < 1.0 and grays:
        import cv2

        size = (max(8, round(width * flow_scale)), max(8, round(height * flow_scale)))
        grays = [cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in grays]
    to_full = width / grays[0].shape[1] if grays else 1.0
    means, tops = [], []
    for a, b in zip(grays[:-1], grays[1:]):
        magnitude = farneback_magnitudes(a, b)
        means.append(float(magnitude.mean()) * to_full)
        tops.append(top_fraction_mean(magnitude) * to_full)
    interval = dynamic_sample_interval(fps)
    threshold = dynamic_degree_threshold(height, width, fps) if grays else math.nan
    sampled = list(range(0, len(grays), interval))
    # VBench's count_num can round to 0 for very short clips (then any video is "dynamic"):
    # we require at least one pair over the threshold.
    required = max(1, round(4 * (len(sampled) / 16.0)))
    if interval == 1:
        sampled_tops = tops
    else:
        sampled_tops = [top_fraction_mean(farneback_magnitudes(grays[i], grays[j])) * to_full
                        for i, j in zip(sampled[:-1], sampled[1:])]
    over = sum(1 for t in sampled_tops if t > threshold)
    return MotionResult(
        pair_frames=list(range(len(means))), mean_magnitude=means, top5_magnitude=tops,
        video_mean_magnitude=float(np.mean(means)) if means else math.nan,
        dynamic=(over >= required) if sampled_tops else None, dynamic_threshold=threshold,
        dynamic_pairs_over_threshold=over, dynamic_pairs_required=required,
        dynamic_sample_interval=interval, fps=float(fps), flow_scale=float(flow_scale),
    )
