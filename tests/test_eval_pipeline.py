"""Evaluation end to end on synthetic videos whose quantities are known: reading files,
face analysis (the pixel-measuring synthetic analyser), every metric, the plot, and the
``python -m iad.eval`` batch with its per-file errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from harness.eval_synthetic import FaceParams, SyntheticFaceAnalyzer, render_face, render_video
from iad.eval import ReferenceFaces, VideoReadError, evaluate_video, read_video
from iad.eval.analysis import detect_largest
from iad.eval.cli import main
from iad.eval.video_io import write_video
from iad.plotting import plot_report

H, W = 192, 320
CENTRE = FaceParams(cx=160, cy=96, s=44)


def face(**changes) -> FaceParams:
    return FaceParams(**{**CENTRE.__dict__, **changes})


@pytest.fixture
def analyzer():
    return SyntheticFaceAnalyzer()


@pytest.fixture
def reference(analyzer):
    return ReferenceFaces.from_images(analyzer, [render_face(H, W, face())])


def test_static_face_has_no_motion_full_identity_and_copies_the_reference(analyzer, reference):
    frames = render_video(12, H, W, lambda t: face())
    report = evaluate_video(frames, analyzer, reference, fps=16)
    assert report.facesim.mean > 0.99 and report.facesim.face_fraction == 1.0
    assert report.stability.adjacent_mean > 0.99
    assert report.motion.video_mean_magnitude < 0.01 and report.motion.dynamic is False
    assert report.expression.copy_rate == 1.0 and report.expression.variability < 0.2
    assert report.face_model == "synthetic/colour-layout-48"


def test_opening_mouth_makes_expression_vary_and_stop_copying(analyzer, reference):
    # the inner-lip gap grows 0 -> 0.6 of the inter-ocular distance (0 -> 6 noticeable units)
    frames = render_video(13, H, W, lambda t: face(mouth_open=0.05 * t))
    report = evaluate_video(frames, analyzer, reference, fps=16)
    e = report.expression
    distances = e.per_frame_distance
    assert distances[0] < 1.0 < distances[-1]
    assert all(b >= a - 0.35 for a, b in zip(distances, distances[1:])), distances   # grows with the mouth
    assert distances[-1] == pytest.approx(6.0, abs=1.0)
    # ground truth: frames whose mouth moved < 1 unit (t <= 1) copy, those >= 2 units (t >= 4) do not;
    # pixel quantisation of a 33 px inter-ocular face decides the two frames in between
    copies = [d < 1.0 for d in distances]
    assert copies[:2] == [True, True] and not any(copies[4:])
    assert 2 / 13 <= e.copy_rate <= 4 / 13 and e.copy_rate_pose == 1.0       # the head never turned
    assert e.variability > 1.0
    assert report.facesim.mean > 0.9                           # same person throughout


def test_two_different_faces_have_low_facesim(analyzer, reference):
    frames = render_video(8, H, W, lambda t: face(person=1))
    report = evaluate_video(frames, analyzer, reference, fps=16)
    assert report.facesim.face_fraction == 1.0
    assert report.facesim.mean < 0.3
    assert report.expression.copy_rate == 1.0                  # a different person with the photo's expression


def test_moving_face_is_dynamic_and_frames_without_face_are_reported(analyzer, reference):
    def params(t):
        return face(cx=60 + 16 * t, person=0)

    frames = render_video(12, H, W, params, texture_seed=3)
    frames[[4, 5]] = 90                                        # two frames lose the face entirely
    report = evaluate_video(frames, analyzer, reference, fps=8)
    assert report.facesim.frames_without_face == [4, 5]
    assert report.facesim.face_fraction == pytest.approx(10 / 12)
    assert report.facesim.per_frame[4] is None and report.facesim.mean > 0.9
    assert report.motion.dynamic is True and report.motion.video_mean_magnitude > 1.0
    data = json.loads(report.to_json())
    assert data["facesim"]["frames_without_face"] == [4, 5] and data["face_model"] == "synthetic/colour-layout-48"
    assert data["clip_t"]["skipped"].startswith("CLIP-T skipped")


def test_consisid_protocol_samples_16_frames_and_retries_with_padding():
    tight = SyntheticFaceAnalyzer(min_margin=4)
    # a tight crop: the face touches the border, found only after padding 25 % on every side
    crop = render_face(80, 64, FaceParams(cx=32, cy=40, s=30))
    found = detect_largest(tight, crop)
    assert found.padded_retry and found.face is not None
    x1, y1, x2, y2 = found.face.bbox
    assert -1 <= x1 and x2 <= 65 and -1 <= y1 and y2 <= 81       # coordinates back in the crop's frame
    assert found.face.landmark_3d_68[:, 0].min() >= -1

    reference = ReferenceFaces.from_images(tight, [crop])
    assert any("after padding" in note for note in reference.notes)
    frames = render_video(81, H, W, lambda t: face(person=1 if t % 2 else 0))
    tight.calls = 0
    report = evaluate_video(frames, tight, reference, fps=16, sampling="consisid16")
    assert report.facesim.frame_indices == np.linspace(0, 80, 16).astype(int).tolist()
    assert tight.calls == 16                                    # one detection per sampled frame
    assert min(v for v in report.facesim.per_frame) >= 0.0        # ConsisID clips at 0
    assert report.as_dict()["facesim"]["negative_cosines_clipped_to_0"] is True


def test_reference_without_a_face_is_a_clear_error(analyzer):
    with pytest.raises(ValueError, match="no face found in reference image 0"):
        ReferenceFaces.from_images(analyzer, [np.full((H, W, 3), 90, np.uint8)])


def test_plot_shows_three_panels_and_marks_missing_faces(analyzer, reference):
    frames = render_video(10, H, W, lambda t: face(mouth_open=0.05 * t))
    frames[3] = 90
    report = evaluate_video(frames, analyzer, reference, fps=16)
    image = np.asarray(plot_report(report))
    assert image.shape[1] == 960 and image.shape[0] > 600
    colours = {tuple(c) for c in image.reshape(-1, 3)[::7]}
    for colour in ((30, 90, 200), (200, 110, 20), (40, 150, 60), (220, 40, 40)):   # identity, expression, motion, no face
        assert colour in colours


def test_video_files_round_trip_and_corrupt_ones_raise_clear_errors(tmp_path):
    frames = render_video(6, H, W, lambda t: face(cx=100 + 4 * t))
    for name in ("a.mp4", "a.webm"):
        video = read_video(write_video(tmp_path / name, frames, fps=24))
        assert video.num_frames == 6 and video.fps == pytest.approx(24) and video.frames.shape[1:] == (H, W, 3)
        assert np.abs(video.frames.astype(int) - frames).mean() < 6     # lossy but faithful
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(VideoReadError, match="not a readable video"):
        read_video(tmp_path / "junk.mp4")
    folder = tmp_path / "seq"
    folder.mkdir()
    for t in (0, 1, 2, 10):    # natural order: 10 comes last
        Image.fromarray(frames[min(t, 5)]).save(folder / f"frame_{t}.png")
    video = read_video(folder)
    assert video.num_frames == 4 and not video.fps_known and np.array_equal(video.frames[3], frames[5])


def _write_batch(root):
    refs = root / "references"
    refs.mkdir(parents=True)
    Image.fromarray(render_face(H, W, face())).save(refs / "reference.png")
    Image.fromarray(render_face(H, W, face(person=1))).save(refs / "other_person.png")
    write_video(root / "static.mp4", render_video(8, H, W, lambda t: face()), fps=16)
    write_video(root / "talking.webm", render_video(8, H, W, lambda t: face(mouth_open=0.08 * t)), fps=16)
    write_video(root / "other_person.mp4", render_video(8, H, W, lambda t: face()), fps=16)
    (root / "talking.txt").write_text("a person talks")
    seq = root / "frames_seq"
    seq.mkdir()
    for t, frame in enumerate(render_video(5, H, W, lambda t: face())):
        Image.fromarray(frame).save(seq / f"{t:04d}.png")
    write_video(root / "no_face.mp4", np.full((6, H, W, 3), 90, np.uint8), fps=16)
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 2000)
    good = (root / "static.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])


def test_cli_batch_reports_every_file_and_survives_bad_ones(tmp_path, capsys):
    root = tmp_path / "videos"
    _write_batch(root)
    code = main([str(root), "--out", str(tmp_path / "out")], analyzer=SyntheticFaceAnalyzer())
    assert code == 1                                         # some files failed, none aborted the batch
    rows = {r["video"]: r for r in csv.DictReader(open(tmp_path / "out" / "report.csv"))}
    assert set(rows) == {"static.mp4", "talking.webm", "other_person.mp4", "frames_seq", "no_face.mp4",
                         "corrupt.mp4", "truncated.mp4"}
    assert rows["static.mp4"]["status"] == "ok" and float(rows["static.mp4"]["facesim_mean"]) > 0.99
    assert float(rows["static.mp4"]["copy_paste_rate"]) == 1.0 and rows["static.mp4"]["dynamic"] == "no"
    assert float(rows["talking.webm"]["copy_paste_rate"]) < 0.5
    assert float(rows["other_person.mp4"]["facesim_mean"]) < 0.3      # its own reference is another person
    assert rows["frames_seq"]["status"] == "ok" and rows["frames_seq"]["frames"] == "5"
    assert rows["no_face.mp4"]["status"] == "ok" and float(rows["no_face.mp4"]["face_fraction"]) == 0.0
    assert "no face detected in any evaluated frame" in rows["no_face.mp4"]["message"]
    assert rows["corrupt.mp4"]["status"] == "error" and "corrupt.mp4" in rows["corrupt.mp4"]["message"]
    assert rows["truncated.mp4"]["status"] in ("ok", "error")      # decodes what it can, or says why not
    if rows["truncated.mp4"]["status"] == "error":
        assert "truncated" in rows["truncated.mp4"]["message"] or "readable" in rows["truncated.mp4"]["message"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "synthetic/colour-layout-48" in markdown and "| corrupt.mp4 | error |" in markdown
    talking = json.loads((tmp_path / "out" / "talking.json").read_text())
    assert talking["prompt"] == "a person talks"
    assert talking["expression_copy"]["copy_paste_rate"] < 0.5
    assert (tmp_path / "out" / "talking.png").stat().st_size > 10_000
    assert "corrupt.mp4" in capsys.readouterr().err


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert main([str(tmp_path)], analyzer=SyntheticFaceAnalyzer()) == 2          # no videos
    assert "no videos" in capsys.readouterr().err
    write_video(tmp_path / "v.mp4", render_video(3, H, W, lambda t: face()), fps=16)
    assert main([str(tmp_path)]) == 2                                             # no --face-pack
    assert "--face-pack is required" in capsys.readouterr().err
    # a missing reference is a per-file error, not a crash
    assert main([str(tmp_path), "--no-plots"], analyzer=SyntheticFaceAnalyzer()) == 1
    row = next(csv.DictReader(open(tmp_path / "iad-eval" / "report.csv")))
    assert row["status"] == "error" and "no reference photo for v" in row["message"]


def test_python_m_iad_eval_with_a_real_insightface_pack(tmp_path):
    """The command a user types, in a fresh process, on the generated insightface pack."""
    import subprocess
    import sys

    from harness import insightface_pack as ip
    from harness.paths import REPO_ROOT

    pack = ip.ensure_pack(ip.ANTELOPEV2)
    root = tmp_path / "videos"
    (root / "references").mkdir(parents=True)
    Image.fromarray(ip.face_image(size=256, face=64, person=0)).save(root / "references" / "reference.png")
    same = np.stack([ip.face_image(size=256, face=64, person=0)] * 5)
    other = np.stack([ip.face_image(size=256, face=64, person=1)] * 5)
    write_video(root / "same.mp4", same, fps=16)
    write_video(root / "other.webm", other, fps=16)
    (root / "broken.webm").write_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 300)
    proc = subprocess.run(
        [sys.executable, "-m", "iad.eval", str(root), "--face-pack", str(pack), "--provider", "CPU",
         "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr                    # broken.webm failed, the others ran
    assert "broken.webm" in proc.stderr and "2/3 videos evaluated" in proc.stdout
    rows = {r["video"]: r for r in csv.DictReader(open(tmp_path / "out" / "report.csv"))}
    assert rows["same.mp4"]["face_model"] == "insightface/antelopev2/glintr100"
    assert float(rows["same.mp4"]["facesim_mean"]) > 0.95 and float(rows["same.mp4"]["face_fraction"]) == 1.0
    assert float(rows["other.webm"]["facesim_mean"]) < 0.5
    assert rows["broken.webm"]["status"] == "error"
    assert "insightface/antelopev2/glintr100" in (tmp_path / "out" / "report.md").read_text()


def test_cli_missing_face_pack_is_a_usage_error_naming_the_folder(tmp_path, capsys):
    write_video(tmp_path / "v.mp4", render_video(3, H, W, lambda t: face()), fps=16)
    assert main([str(tmp_path), "--face-pack", str(tmp_path / "no_such_pack")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "no_such_pack" in err


def test_a_face_that_turns_into_someone_else_drifts_and_its_window_is_the_worst(tmp_path, analyzer, reference):
    """48 frames at 8 fps (6 s) made in windows of 16 frames overlapping by 4: the person is the
    reference for 3 s, then someone else. The drift's first second is the reference, its last
    second someone else, the slope is negative with an interval below 0, the worst window is the
    first one wholly after the switch (the last two tie), the plot draws it and the CLI's table
    carries the columns."""
    frames = render_video(48, H, W, lambda t: face(person=0 if t < 24 else 1))
    report = evaluate_video(frames, analyzer, reference, fps=8, window_frames=16, window_overlap=4)
    d = report.drift
    assert d.first_second > 0.99 and d.last_second < 0.3 and d.drop > 0.7
    assert d.slope_per_second < 0 and d.slope_ci95[1] < 0
    assert [(w.start, w.end) for w in d.windows] == [(0, 15), (12, 27), (24, 39), (32, 47)]
    assert d.worst_window == 2 and report.as_dict()["drift"]["worst_window"]["start"] == 24
    assert np.asarray(plot_report(report)).shape[0] > 600
    steady = evaluate_video(render_video(48, H, W, lambda t: face()), analyzer, reference, fps=8)
    assert abs(steady.drift.drop) < 0.01 and steady.drift.windows == []
    with pytest.raises(ValueError, match="window_overlap"):
        evaluate_video(frames, analyzer, reference, fps=8, window_frames=16, window_overlap=16)

    root = tmp_path / "long"
    (root / "references").mkdir(parents=True)
    Image.fromarray(render_face(H, W, face())).save(root / "references" / "switch.png")
    write_video(root / "switch.mp4", frames, fps=8)
    assert main([str(root), "--out", str(tmp_path / "out"), "--window-frames", "16", "--window-overlap", "4"],
                analyzer=SyntheticFaceAnalyzer()) == 0
    row = next(csv.DictReader(open(tmp_path / "out" / "report.csv")))
    assert float(row["drift_drop"]) > 0.7 and float(row["drift_slope_ci_high"]) < 0 and row["worst_window"] in ("24-39", "32-47")   # the codec breaks the tie
    assert main([str(root), "--window-overlap", "4"], analyzer=SyntheticFaceAnalyzer()) == 2
