"""The evaluation metrics as pure functions, on constructed inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iad.metrics import (
    clip_text_score, dynamic_degree_threshold, expression_copy, expression_vector, face_similarity,
    farneback_magnitudes, identity_stability, motion_metrics, uniform_frame_indices,
)
from iad.metrics.expression import DEFAULT_SCALES, EXPRESSION_FEATURES


def unit(*values) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float32)
    return v / v.norm()


def vector_at_cosine(reference: torch.Tensor, cosine: float) -> torch.Tensor:
    orthogonal = torch.zeros_like(reference)
    orthogonal[1] = 1.0
    orthogonal = orthogonal - (orthogonal @ reference) * reference
    orthogonal = orthogonal / orthogonal.norm()
    return cosine * reference + math.sqrt(1 - cosine ** 2) * orthogonal


# -- FaceSim --------------------------------------------------------------------------------------
def test_uniform_sampling_is_consisids_16_linspace_frames():
    assert uniform_frame_indices(81) == np.linspace(0, 80, 16).astype(int).tolist()
    assert len(uniform_frame_indices(81)) == 16 and uniform_frame_indices(81)[-1] == 80
    assert uniform_frame_indices(5) == [0, 1, 2, 3, 4]     # shorter than 16: every frame, once
    with pytest.raises(ValueError, match="no frames"):
        uniform_frame_indices(0)


def test_facesim_per_frame_cosines_and_missing_faces_are_counted_not_skipped():
    ref = unit(1, 0, 0, 0)
    frames = [ref, None, vector_at_cosine(ref, 0.6), -ref]
    result = face_similarity(ref, frames, frame_indices=[0, 5, 10, 15], face_model="insightface/antelopev2/glintr100")
    assert result.per_frame[0] == pytest.approx(1.0) and result.per_frame[1] is None
    assert result.per_frame[2] == pytest.approx(0.6, abs=1e-6) and result.per_frame[3] == pytest.approx(-1.0)
    assert result.mean == pytest.approx((1 + 0.6 - 1) / 3) and result.min == pytest.approx(-1.0)
    assert result.face_fraction == pytest.approx(0.75)
    assert result.frames_without_face == [5]
    report = result.as_dict()
    assert report["face_model"] == "insightface/antelopev2/glintr100" and report["frames_without_face"] == [5]
    assert "1 of 4 evaluated frames have no detected face" in result.notes[0]


def test_facesim_consisid_clipping_and_multi_reference_mean():
    a, b = unit(1, 0, 0), unit(0, 0, 1)
    clipped = face_similarity(a, [-a, a], clip_negative=True)
    assert clipped.per_frame == [0.0, 1.0] and clipped.mean == pytest.approx(0.5)
    # two references: each frame scores the mean of its cosines to both photos
    both = face_similarity(torch.stack([a, b]), [a, b, unit(1, 0, 1)])
    assert both.per_frame == pytest.approx([0.5, 0.5, math.sqrt(0.5)])
    assert both.reference_count == 2


def test_facesim_with_no_face_anywhere_is_nan_with_zero_fraction_and_dimension_mismatch_is_explained():
    result = face_similarity(unit(1, 0), [None, None])
    assert math.isnan(result.mean) and result.face_fraction == 0.0 and result.frames_without_face == [0, 1]
    assert result.as_dict()["mean"] is None
    with pytest.raises(ValueError, match="same face model"):
        face_similarity(unit(1, 0, 0), [unit(1, 0)])


# -- identity stability -----------------------------------------------------------------------------
def test_identity_stability_constant_identity_is_one_and_flicker_is_detected():
    a, b = unit(1, 0, 0), unit(0, 1, 0)
    steady = identity_stability([a, a, None, a])
    assert steady.adjacent_mean == pytest.approx(1.0) and steady.to_centroid_min == pytest.approx(1.0)
    assert steady.frames_with_face == 3 and steady.to_centroid[2] is None
    flicker = identity_stability([a, b, a, b])
    assert flicker.adjacent_mean == pytest.approx(0.0, abs=1e-9)       # every step switches identity
    assert flicker.to_centroid_mean == pytest.approx(math.sqrt(0.5))    # both halfway from the mean
    drift = identity_stability([a, vector_at_cosine(a, 0.9)])
    assert drift.adjacent == pytest.approx([0.9])


# -- expression ------------------------------------------------------------------------------------
def canonical_landmarks(mouth_gap: float = 0.0, eye_height: float = 6.0, brow_height: float = 20.0,
                        mouth_width: float = 50.0) -> np.ndarray:
    """68 iBUG points of a frontal face with eye centres at (-30, 0) and (30, 0): inter-ocular 60."""
    lm = np.zeros((68, 2))
    for base, cx in ((36, -30.0), (42, 30.0)):
        lm[base + 0] = (cx - 12, 0)
        lm[base + 3] = (cx + 12, 0)
        lm[base + 1] = (cx - 4, -eye_height / 2)
        lm[base + 2] = (cx + 4, -eye_height / 2)
        lm[base + 4] = (cx + 4, eye_height / 2)
        lm[base + 5] = (cx - 4, eye_height / 2)
    for start, cx in ((17, -30.0), (22, 30.0)):
        lm[start:start + 5] = np.stack([np.linspace(cx - 15, cx + 15, 5), np.full(5, -brow_height)], 1)
    lm[0:17] = np.stack([np.linspace(-60, 60, 17), 60 - np.abs(np.linspace(-30, 30, 17))], 1)
    lm[27:36] = np.stack([np.zeros(9), np.linspace(5, 35, 9)], 1)
    mouth_y = 55.0
    lm[48], lm[54] = (-mouth_width / 2, mouth_y), (mouth_width / 2, mouth_y)
    lm[49:54] = np.stack([np.linspace(-16, 16, 5), np.full(5, mouth_y - 5)], 1)
    lm[55:60] = np.stack([np.linspace(16, -16, 5), np.full(5, mouth_y + 5)], 1)
    lm[60], lm[64] = (-20, mouth_y), (20, mouth_y)
    for upper, lower, x in ((61, 67, -10.0), (62, 66, 0.0), (63, 65, 10.0)):
        lm[upper] = (x, mouth_y - mouth_gap / 2)
        lm[lower] = (x, mouth_y + mouth_gap / 2)
    return lm


def transform(points: np.ndarray, angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = math.radians(angle_deg)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return points @ rotation.T * scale + np.array(shift)


def test_expression_vector_measures_the_constructed_face_exactly():
    vector = dict(zip(EXPRESSION_FEATURES, expression_vector(canonical_landmarks(mouth_gap=18), np.array([5.0, -20.0, 3.0]))))
    assert vector["mouth_open"] == pytest.approx(18 / 60)
    assert vector["mouth_width"] == pytest.approx(50 / 60)
    assert vector["eye_open"] == pytest.approx(6 / 24)
    assert vector["brow_raise"] == pytest.approx(20 / 60)
    assert (vector["yaw"], vector["pitch"], vector["roll"]) == (-20.0, 5.0, 3.0)   # insightface pose is pitch, yaw, roll


def test_expression_vector_ignores_face_position_size_and_in_plane_tilt():
    face = canonical_landmarks(mouth_gap=12, eye_height=4, brow_height=25)
    moved = transform(face, angle_deg=25, scale=3.7, shift=(400, -120))
    with_z = np.concatenate([moved, np.random.default_rng(0).normal(size=(68, 1))], axis=1)   # (68, 3) like 1k3d68
    np.testing.assert_allclose(expression_vector(with_z)[:4], expression_vector(face)[:4], rtol=1e-9)
    assert np.isnan(expression_vector(face)[4:]).all()        # no pose given: pose features unknown


def test_identical_expressions_are_all_copies_and_noticeable_changes_are_not():
    reference = expression_vector(canonical_landmarks(), np.zeros(3))
    frames = [expression_vector(canonical_landmarks(), np.zeros(3)) for _ in range(4)]
    copied = expression_copy([reference], frames)
    assert copied.copy_rate == 1.0 and copied.mean_distance == pytest.approx(0.0) and copied.variability == pytest.approx(0.0)

    # The mouth opens by 0, 1, 2, 3 noticeable units (0.1 inter-ocular each = 6 px here).
    step = DEFAULT_SCALES["mouth_open"] * 60
    opening = [expression_vector(canonical_landmarks(mouth_gap=k * step), np.zeros(3)) for k in range(4)]
    result = expression_copy([reference], opening)
    assert result.per_frame_distance == pytest.approx([0.0, 1.0, 2.0, 3.0])
    # a frame copies when its distance is below 1: only the first
    assert result.copy_rate == pytest.approx(0.25)
    assert result.mean_distance == pytest.approx(1.5)
    assert result.variability == pytest.approx(math.sqrt((1.5 ** 2 + 0.5 ** 2 + 0.5 ** 2 + 1.5 ** 2) / 4))


def test_pose_copy_and_face_copy_are_reported_separately():
    reference = expression_vector(canonical_landmarks(), np.zeros(3))
    turned = expression_vector(canonical_landmarks(), np.array([0.0, 30.0, 0.0]))      # yaw 30 deg, same expression
    talking = expression_vector(canonical_landmarks(mouth_gap=24), np.zeros(3))          # mouth 4 units open, same pose
    result = expression_copy([reference], [turned, talking])
    assert result.per_frame_distance == pytest.approx([3.0, 4.0])
    assert result.copy_rate == 0.0
    assert result.copy_rate_face == pytest.approx(0.5)     # the turned head still has the photo's face
    assert result.copy_rate_pose == pytest.approx(0.5)     # the talking face still has the photo's pose


def test_nearest_reference_counts_and_faceless_frames_are_excluded():
    neutral = expression_vector(canonical_landmarks(), np.zeros(3))
    open_mouth = expression_vector(canonical_landmarks(mouth_gap=30), np.zeros(3))
    result = expression_copy([neutral, open_mouth], [open_mouth, None, neutral], frame_indices=[0, 40, 80])
    assert result.copy_rate == 1.0                          # each frame copies one of the two photos
    assert result.per_frame_distance[1] is None and result.frame_indices == [0, 40, 80]
    with pytest.raises(ValueError, match="1k3d68"):
        expression_copy([np.full(7, np.nan)], [neutral])


def test_custom_scales_and_threshold():
    reference = expression_vector(canonical_landmarks(), np.zeros(3))
    frame = expression_vector(canonical_landmarks(), np.array([0.0, 15.0, 0.0]))
    assert expression_copy([reference], [frame]).per_frame_distance == pytest.approx([1.5])
    assert expression_copy([reference], [frame], scales={"yaw": 30.0}).copy_rate == 1.0
    assert expression_copy([reference], [frame], threshold=2.0).copy_rate == 1.0
    with pytest.raises(ValueError, match="unknown expression features"):
        expression_copy([reference], [frame], scales={"smile": 1.0})


# -- motion ----------------------------------------------------------------------------------------
def smooth_texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (height // 8, width // 8)).astype(np.float32)
    return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def test_static_video_has_zero_flow_and_is_not_dynamic():
    frame = np.repeat(smooth_texture(64, 96)[..., None], 3, axis=2)
    result = motion_metrics([frame] * 6, fps=8)
    # Farneback's polynomial fit leaves ~0.01 px of numerical flow on identical frames
    assert max(result.top5_magnitude) < 0.05 and result.video_mean_magnitude < 0.01
    assert result.dynamic is False and result.dynamic_pairs_over_threshold == 0


def test_farneback_recovers_a_known_translation():
    texture = smooth_texture(96, 128)
    shifted = np.roll(texture, 3, axis=1)      # 3 px to the right
    magnitude = farneback_magnitudes(texture, shifted)
    interior = magnitude[16:-16, 16:-16]
    assert float(np.median(interior)) == pytest.approx(3.0, abs=0.3)


def test_dynamic_degree_threshold_is_vbenchs_rule():
    assert dynamic_degree_threshold(480, 832, fps=16) == pytest.approx(6 * 480 / 256)
    assert dynamic_degree_threshold(480, 832, fps=8) == pytest.approx(6 * 480 / 256)
    assert dynamic_degree_threshold(480, 832, fps=4) == pytest.approx(2 * 6 * 480 / 256)    # max(1, 8/fps)


@pytest.mark.parametrize("moving_pairs, dynamic", [(3, False), (4, True)])
def test_dynamic_degree_needs_round_4n_over_16_pairs_over_the_threshold(moving_pairs, dynamic):
    # 16 frames at 8 fps: every frame is sampled, 4 pairs must exceed 6 * 64/256 = 1.5 px.
    texture = smooth_texture(64, 64)
    frames, offset = [], 0
    for t in range(16):
        if 0 < t <= moving_pairs:
            offset += 6
        frames.append(np.roll(texture, offset, axis=1))
    result = motion_metrics(frames, fps=8)
    assert result.dynamic_pairs_required == 4 and result.dynamic_sample_interval == 1
    assert result.dynamic_pairs_over_threshold == moving_pairs
    assert result.dynamic is dynamic


def test_dynamic_degree_subsamples_to_8_fps():
    texture = smooth_texture(64, 64)
    frames = [np.roll(texture, 2 * t, axis=1) for t in range(33)]
    result = motion_metrics(frames, fps=16)       # every 2nd frame: 17 frames, 16 pairs of 4 px
    assert result.dynamic_sample_interval == 2 and result.dynamic_pairs_required == round(4 * 17 / 16)
    assert result.dynamic_pairs_over_threshold == 16 and result.dynamic is True
    assert len(result.mean_magnitude) == 32          # the per-frame curve keeps every pair
    with pytest.raises(ValueError, match="fps"):
        motion_metrics(frames, fps=0)


# -- CLIP-T ----------------------------------------------------------------------------------------
def test_clip_t_is_100_times_clipped_cosine():
    text = unit(1, 0, 0, 0)
    images = torch.stack([text, vector_at_cosine(text, 0.5), -text])
    result = clip_text_score(text, images, text_model="clip_l", image_model="ViT-L/14")
    assert result.per_frame == pytest.approx([100.0, 50.0, 0.0], abs=1e-4)
    assert result.mean == pytest.approx(50.0, abs=1e-4) and result.min == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same CLIP"):
        clip_text_score(unit(1, 0), images)


def test_reduced_resolution_flow_reports_full_resolution_pixels():
    texture = smooth_texture(128, 192)
    frames = [np.roll(texture, 4 * t, axis=1) for t in range(3)]
    full = motion_metrics(frames, fps=8)
    half = motion_metrics(frames, fps=8, flow_scale=0.5)
    assert half.flow_scale == 0.5 and half.dynamic_threshold == full.dynamic_threshold
    # a 4 px shift is 2 px at half size, reported back as ~4 px
    for result in (full, half):
        assert float(np.median(result.top5_magnitude)) == pytest.approx(4.0, abs=0.6)
    with pytest.raises(ValueError, match="flow_scale"):
        motion_metrics(frames, fps=8, flow_scale=2.0)
