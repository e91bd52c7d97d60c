"""The identity-drift metric (iad.metrics.drift) on constructed similarity curves whose drift is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from iad.metrics.drift import _block_bootstrap_ci, identity_drift, windows_of


def test_a_steady_identity_has_no_drift_and_a_zero_slope_inside_its_interval():
    fps, n = 16.0, 160
    rng = np.random.default_rng(1)
    sims = (0.6 + 0.01 * rng.standard_normal(n)).tolist()
    d = identity_drift(sims, list(range(n)), fps)
    assert d.duration_s == pytest.approx(10.0) and d.frames_used == n
    assert abs(d.drop) < 0.01 and abs(d.slope_per_second) < 0.002
    lo, hi = d.slope_ci95
    assert lo < 0 < hi and hi - lo < 0.005


def test_a_linear_loss_of_identity_is_measured_exactly():
    """0.8 at t=0 falling 0.05 per second over 10 s: slope -0.05, first second 0.775 (mean over
    t in [0, 1)), last second 0.325, drop 0.45, and the interval is a point (no noise)."""
    fps, n = 16.0, 160
    t = np.arange(n) / fps
    d = identity_drift((0.8 - 0.05 * t).tolist(), list(range(n)), fps)
    assert d.slope_per_second == pytest.approx(-0.05, abs=1e-12)
    assert d.intercept == pytest.approx(0.8, abs=1e-12) and d.trend(16) == pytest.approx(0.75)
    assert d.first_second == pytest.approx(0.8 - 0.05 * t[:16].mean())
    assert d.last_second == pytest.approx(0.8 - 0.05 * t[-16:].mean())
    assert d.drop == pytest.approx(0.05 * 9, abs=1e-12)
    assert d.slope_ci95 == pytest.approx((-0.05, -0.05), abs=1e-9)


def test_noisy_drift_is_significant_and_the_interval_respects_correlated_frames():
    """A drift of -0.02/s under noise correlated over about a second: the block bootstrap's
    interval excludes 0 and contains the truth, and it is wider than resampling single frames
    would give (blocks keep the correlation)."""
    fps, n = 16.0, 320
    rng = np.random.default_rng(3)
    noise = np.convolve(rng.standard_normal(n + 15), np.ones(16) / 4, mode="valid")[:n] * 0.02
    t = np.arange(n) / fps
    sims = 0.7 - 0.02 * t + noise
    d = identity_drift(sims.tolist(), list(range(n)), fps)
    lo, hi = d.slope_ci95
    assert hi < 0 and lo < -0.02 < hi
    one_frame_blocks = _block_bootstrap_ci(t, sims, block=1, resamples=2000, seed=0)
    assert (hi - lo) > 1.5 * (one_frame_blocks[1] - one_frame_blocks[0])


def test_faceless_frames_are_left_out_and_windows_find_the_worst_one():
    """Windows of 33 frames overlapping by 8 over 97 frames (the layout of a Wan context-window
    run): starts 0, 25, 50 and the last one flush with the end; the third window holds the faces of
    someone else and is the worst; frames without a face count in no window."""
    assert windows_of(97, 33, 8) == [(0, 32), (25, 57), (50, 82), (64, 96)]
    assert windows_of(20, 33, 8) == [(0, 19)]
    sims: list[float | None] = [0.7] * 97
    for f in range(58, 64):
        sims[f] = 0.1            # only the third window holds these
    sims[5] = None
    d = identity_drift(sims, list(range(97)), 16.0, window_frames=33, window_overlap=8)
    assert d.frames_used == 96
    means = [w.mean for w in d.windows]
    assert means[0] == pytest.approx(0.7) and means[1] == pytest.approx(0.7)
    assert d.worst_window == 2 and d.windows[2].mean == pytest.approx((27 * 0.7 + 6 * 0.1) / 33)
    assert d.windows[0].frames == 32
    record = d.as_dict()
    assert record["worst_window"]["index"] == 2 and record["worst_window"]["start"] == 50


def test_sampled_frames_short_videos_and_bad_input():
    """ConsisID's 16 sampled frames carry their own frame indices; a video shorter than two seconds
    compares its halves and says so; fewer than three faces give no slope; a bad fps or overlap is
    refused with the reason."""
    idx = np.linspace(0, 159, 16).astype(int).tolist()
    d = identity_drift([0.5] * 16, idx, 16.0, num_frames=160)
    assert d.duration_s == pytest.approx(10.0) and d.slope_per_second == pytest.approx(0.0, abs=1e-12)
    short = identity_drift([0.9, 0.9, 0.9, 0.1, 0.1, 0.1], list(range(6)), 4.0)   # 1.5 s
    assert short.first_second == pytest.approx(0.9) and short.last_second == pytest.approx(0.1)
    assert any("first and last" in note for note in short.notes)
    few = identity_drift([0.5, None, 0.4], [0, 1, 2], 16.0)
    assert math.isnan(few.slope_per_second) and any("no slope" in note for note in few.notes)
    assert few.as_dict()["slope_per_second"] is None
    for fps in (0.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="fps"):
            identity_drift([0.5], [0], fps)
    with pytest.raises(ValueError, match="window_overlap"):
        identity_drift([0.5] * 10, list(range(10)), 16.0, window_frames=4, window_overlap=4)
