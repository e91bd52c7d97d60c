"""Identity drift: how a video's identity similarity changes over time.

The complaint this measures: the face is right in the first second and someone else's by the
fourth, or it changes from one window (or extension) of a long video to the next. FaceSim's mean
hides that; drift reports the trend:

- ``first_second`` / ``last_second``: mean similarity of the frames in the video's first and
  last second; ``drop`` = first - last (positive: the identity was lost);
- ``slope_per_second``: the least-squares slope of similarity against time (seconds), with a
  95 % interval from a moving-block bootstrap (neighbouring frames are correlated, so frames are
  resampled in blocks of one second rather than one by one);
- for a video made in windows (``window_frames`` frames each, neighbours sharing
  ``window_overlap``): each window's mean similarity and the worst window.

Frames without a face are left out (FaceSim counts them); every number is NaN where it has too
few frames (the notes say which). Definitions: docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._util import finite_or_none

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass
class DriftWindow:
    start: int          # first video frame of the window
    end: int            # last video frame (inclusive)
    mean: float         # mean similarity of its frames with a face (NaN: none)
    frames: int         # frames with a face

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "mean": finite_or_none(self.mean), "frames": self.frames}


@dataclass
class DriftResult:
    fps: float
    duration_s: float
    first_second: float
    last_second: float
    drop: float
    slope_per_second: float
    slope_ci95: tuple[float, float]
    frames_used: int
    windows: list[DriftWindow] = field(default_factory=list)
    worst_window: int | None = None     # index into windows
    intercept: float = math.nan         # the fitted similarity at time 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        worst = self.windows[self.worst_window] if self.worst_window is not None else None
        return {
            "fps": self.fps, "duration_s": round(self.duration_s, 6), "frames_used": self.frames_used,
            "first_second": finite_or_none(self.first_second), "last_second": finite_or_none(self.last_second),
            "drop": finite_or_none(self.drop), "slope_per_second": finite_or_none(self.slope_per_second),
            "slope_ci95": [finite_or_none(v) for v in self.slope_ci95],
            "windows": [w.as_dict() for w in self.windows],
            "worst_window": None if worst is None else {"index": self.worst_window, **worst.as_dict()},
            "notes": self.notes,
        }

    def trend(self, frame: float) -> float:
        """The fitted similarity at a video frame (for the plot)."""
        return self.intercept + self.slope_per_second * frame / self.fps


def _slope(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y on t; NaN slope when t does not vary."""
    tc = t - t.mean()
    denom = float((tc * tc).sum())
    if denom <= 0:
        return math.nan, math.nan
    slope = float((tc * (y - y.mean())).sum() / denom)
    return slope, float(y.mean() - slope * t.mean())


def _block_bootstrap_ci(t: np.ndarray, y: np.ndarray, block: int, resamples: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the slope, resampling moving blocks of ``block`` consecutive
    frames (with a face) until the series' length is reached."""
    n = len(t)
    block = max(1, min(block, n))
    starts = n - block + 1
    rng = np.random.default_rng(seed)
    count = math.ceil(n / block)
    slopes = []
    for _ in range(resamples):
        picks = rng.integers(0, starts, size=count)
        idx = (picks[:, None] + np.arange(block)[None]).reshape(-1)[:n]
        s, _ = _slope(t[idx], y[idx])
        if math.isfinite(s):
            slopes.append(s)
    if len(slopes) < resamples // 2:
        return math.nan, math.nan
    lo, hi = np.percentile(slopes, [2.5, 97.5])
    return float(lo), float(hi)


def windows_of(num_frames: int, window_frames: int, window_overlap: int = 0) -> list[tuple[int, int]]:
    """The frame ranges ``[start, end]`` of windows of ``window_frames`` frames, each sharing
    ``window_overlap`` frames with the previous one; the last window ends at the last frame (as
    context windows and extensions cover the whole video)."""
    if window_frames <= 0 or not 0 <= window_overlap < window_frames:
        raise ValueError(f"window_frames must be positive and window_overlap in [0, window_frames), got "
                         f"{window_frames} and {window_overlap}")
    window_stride = window_frames - window_overlap
    if window_frames >= num_frames:
        return [(0, num_frames - 1)]
    starts = list(range(0, num_frames - window_frames + 1, window_stride))
    if starts[-1] + window_frames < num_frames:
        starts.append(num_frames - window_frames)
    return [(s, s + window_frames - 1) for s in starts]


def identity_drift(
    per_frame: Sequence[float | None],
    frame_indices: Sequence[int],
    fps: float,
    num_frames: int | None = None,
    window_frames: int = 0,
    window_overlap: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> DriftResult:
    """Drift of a per-frame similarity (e.g. ``FaceSimResult.per_frame`` with its
    ``frame_indices``) in a video of ``num_frames`` frames at ``fps``. ``window_frames`` > 0:
    also each window's mean (neighbouring windows share ``window_overlap`` frames)."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    if len(per_frame) != len(frame_indices):
        raise ValueError(f"{len(per_frame)} similarities but {len(frame_indices)} frame indices")
    frames = np.asarray(frame_indices, dtype=np.int64)
    values = np.array([math.nan if v is None else float(v) for v in per_frame], dtype=np.float64)
    num_frames = int(num_frames if num_frames is not None else (frames.max() + 1 if frames.size else 0))
    duration = num_frames / fps
    keep = np.isfinite(values)
    t, y = frames[keep] / fps, values[keep]
    notes = []

    def mean_in(lo: float, hi: float) -> float:
        inside = (t >= lo) & (t < hi)
        return float(y[inside].mean()) if inside.any() else math.nan

    # The first and last second; a video shorter than two seconds compares its halves.
    span = min(1.0, duration / 2) if duration > 0 else 0.0
    first, last = mean_in(0.0, span), mean_in(duration - span, duration + 1e-9)
    if duration < 2.0 and num_frames > 0:
        notes.append(f"the video is {duration:.2f} s long: first and last are its first and last {span:.2f} s")
    slope, intercept = (_slope(t, y) if len(t) >= 3 else (math.nan, math.nan))
    ci = (math.nan, math.nan)
    if len(t) >= 3 and math.isfinite(slope) and resamples > 0:   # resamples 0: the slope alone
        ci = _block_bootstrap_ci(t, y, block=max(1, round(fps)), resamples=resamples, seed=seed)
    if len(t) < 3:
        notes.append(f"only {len(t)} frames with a face: no slope")
    elif len(t) < 2 * max(1, round(fps)):
        notes.append("fewer than two seconds of frames with a face: the slope's interval is wide or undefined")

    windows, worst = [], None
    if window_frames:
        for start, end in windows_of(num_frames, window_frames, window_overlap):
            inside = keep & (frames >= start) & (frames <= end)
            windows.append(DriftWindow(start, end, float(values[inside].mean()) if inside.any() else math.nan,
                                       int(inside.sum())))
        scored = [i for i, w in enumerate(windows) if math.isfinite(w.mean)]
        worst = min(scored, key=lambda i: windows[i].mean) if scored else None
    return DriftResult(fps=float(fps), duration_s=duration, first_second=first, last_second=last,
                       drop=first - last, slope_per_second=slope, slope_ci95=ci, frames_used=int(len(t)),
                       windows=windows, worst_window=worst, intercept=intercept, notes=notes)
