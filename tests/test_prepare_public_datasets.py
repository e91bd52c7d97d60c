"""iad.prepare reads public face-video training sets as published (issue 33): tiny samples written in
ConsisID's and OpenS2V-5M's formats (harness/public_datasets.py) -> discovered clips with stable keys
(relative path + range), the annotated frame ranges, crops, captions and person ids, every broken row
skipped with a reason naming the file and row; only the annotated range is decoded; with several
people in a clip, the dataset's person is the track kept (real detection with the generated pack)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness import insightface_pack, public_datasets, train_data
from harness.public_datasets import BROKEN_ANNOTATION, DUO, PLAIN, SOLO, frame_number


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("public")
    return {"consisid": public_datasets.make_consisid(root / "consisid"),
            "consisid_hf": public_datasets.make_consisid_hf(root / "consisid_hf"),
            "opens2v": public_datasets.make_opens2v(root / "opens2v")}


def _by_key(clips):
    keys = [c.key for c in clips]
    assert len(keys) == len(set(keys))
    return {c.key: c for c in clips}


def test_consisid_training_layout(samples):
    from iad.prepare.sources import DatasetClip, discover

    clips, skipped = discover(samples["consisid"], "consisid")
    clips = _by_key(clips)
    videos = "dataname/videos"
    assert sorted(clips) == sorted([f"{videos}/{SOLO}.mp4#person1[4:36]", f"{videos}/{DUO}.mp4#person1[0:12]",
                                    f"{videos}/{DUO}.mp4#person2[0:32]", f"{videos}/{PLAIN}.mp4"])
    solo = clips[f"{videos}/{SOLO}.mp4#person1[4:36]"]
    assert isinstance(solo, DatasetClip) and solo.dataset == "consisid"
    assert solo.caption == "A woman smiling in a room." and solo.action is None
    assert solo.person == f"{videos}/{SOLO}.mp4#person1" and solo.extra == {"dataset_person": "1"}
    assert solo.frame_range == (4, 36) and solo.crop is None and solo.path.name == f"{SOLO}.mp4"
    # The dataset's face boxes of that person, every annotated frame, in source pixels.
    assert sorted(solo.face_boxes) == list(range(4, 36))
    # Person 1 of DUO is visible in 0-11 and 20-31: the gap (8) exceeds ConsisID's tolerance (6), the
    # first of the equally long runs is the range; person 2 is visible throughout.
    duo1, duo2 = clips[f"{videos}/{DUO}.mp4#person1[0:12]"], clips[f"{videos}/{DUO}.mp4#person2[0:32]"]
    assert duo1.frame_range == (0, 12) and duo2.frame_range == (0, 32) and duo1.person != duo2.person
    assert duo1.face_boxes[0][0] < 100 < duo2.face_boxes[0][0]               # left / right person
    # No annotation: the whole video, no person; the row's path had no '.mp4' (ConsisID's step6 form).
    plain = clips[f"{videos}/{PLAIN}.mp4"]
    assert plain.frame_range is None and plain.person is None and not plain.face_boxes
    reasons = {s["source"]: s["reason"] for s in skipped}
    assert reasons == {
        "total_train_data.txt line 3": reasons["total_train_data.txt line 3"],
        "dataname/captions/dataname_captions.json row 3": reasons["dataname/captions/dataname_captions.json row 3"],
        f"{videos}/{BROKEN_ANNOTATION}.mp4": reasons[f"{videos}/{BROKEN_ANNOTATION}.mp4"],
        f"{videos}/{SOLO}.mp4": reasons[f"{videos}/{SOLO}.mp4"],
        "dataname/captions/dataname_captions.json row 6": reasons["dataname/captions/dataname_captions.json row 6"]}
    assert "videos_dir,captions_json,annotation_dir" in reasons["total_train_data.txt line 3"]
    assert "eeeeeeeeeee_missing.mp4 missing" in reasons["dataname/captions/dataname_captions.json row 3"]
    assert "valid_frame.json: not readable JSON" in reasons[f"{videos}/{BROKEN_ANNOTATION}.mp4"]
    assert "no caption" in reasons[f"{videos}/{SOLO}.mp4"] and "row 5" in reasons[f"{videos}/{SOLO}.mp4"]
    assert "malformed row" in reasons["dataname/captions/dataname_captions.json row 6"]


def test_consisid_hugging_face_layout(samples):
    from iad.prepare.sources import discover

    clips = _by_key(discover(samples["consisid_hf"], "consisid")[0])
    assert sorted(clips) == [f"videos/videos/{SOLO}.mp4#person1[4:36]", f"videos/videos/{PLAIN}.mp4"]
    solo = clips[f"videos/videos/{SOLO}.mp4#person1[4:36]"]
    assert solo.frame_range == (4, 36) and len(solo.face_boxes) == 32 and solo.caption == "A woman smiling in a room."


def test_opens2v_ranges_inside_long_videos_crops_captions_and_skips(samples):
    from iad.prepare.sources import discover

    clips, skipped = discover(samples["opens2v"], "opens2v")
    clips = _by_key(clips)
    a1, a2 = clips["Videos/total_part1/vidA.mp4[2:18]"], clips["Videos/total_part1/vidA.mp4[22:42]"]
    assert a1.path == a2.path and a1.frame_range == (2, 18) and a2.frame_range == (22, 42)   # face_cut, not cut
    assert a1.caption == "A person in a green park, the camera is static."                  # cap (a list)
    assert a2.caption == "A woman turns her head and smiles at the camera."                 # face_cap_qwen first
    assert a1.person is None and a1.extra == {"clip_id": "vidA_part1", "source_video": "vidA"}
    b = clips["Videos/total_part1/sub/vidB.mp4[4:30]"]                                      # no face_cut: cut
    assert b.crop == (0, 256, 16, 192) and b.extra["source_video"] == "vidB"
    c = clips["Videos/total_part2/total_part2/vidC.mp4[1:19]"]                              # one folder deeper
    assert c.extra["clip_id"] == "vidC_part1" and len(clips) == 4
    reasons = {s["source"]: s["reason"] for s in skipped}
    entry = "Jsons/total_part1.json entry "
    assert "video gone.mp4 missing" in reasons[entry + "'gone_part1'"]
    assert "metadata.cut must be [start, end)" in reasons[entry + "'reversed_part1'"]
    assert "malformed entry" in reasons[entry + "'nometa_part1'"]
    assert "same video and frame range as Jsons/total_part1.json entry 'vidA_part1'" in reasons[entry + "'vidA_part1_copy'"]
    assert "no caption" in reasons["Videos/total_part1/vidA.mp4[0:44]"] and "'nocap_part1'" in reasons["Videos/total_part1/vidA.mp4[0:44]"]
    assert "truncated or corrupt" in reasons["Jsons/total_part2.json"] and len(reasons) == 6


def test_formats_and_layouts_are_validated_with_the_expected_file(samples, tmp_path):
    from iad.prepare import discover_clips
    from iad.prepare.sources import INPUT_FORMATS, discover, layout_problem

    assert INPUT_FORMATS == ("folder", "consisid", "opens2v")
    with pytest.raises(ValueError, match="unknown input_format 'webvid'; known: folder, consisid, opens2v"):
        discover(samples["opens2v"], "webvid")
    with pytest.raises(ValueError, match="total_train_data.txt.*video_caption_train.json"):
        discover(samples["opens2v"], "consisid")
    with pytest.raises(ValueError, match=r"Jsons/total_part1.json"):
        discover(samples["consisid"], "opens2v")
    (tmp_path / "Jsons").mkdir()
    (tmp_path / "Jsons" / "total_part1.json.zip").write_bytes(b"PK")
    assert "unzip it first" in layout_problem(tmp_path, "opens2v")
    assert layout_problem(samples["consisid"], "consisid") is None and layout_problem(samples["opens2v"], "opens2v") is None
    assert "does not exist" in layout_problem(tmp_path / "nope", "folder")
    # 'folder' is today's behaviour, unchanged.
    clips_dir = train_data.make_dataset(tmp_path / "clips", persons=1, clips_per_person=2)
    got, expected = discover(clips_dir, "folder"), discover_clips(clips_dir)
    assert [(c.key, c.caption, c.person) for c in got[0]] == [(c.key, c.caption, c.person) for c in expected[0]]


def test_only_the_annotated_range_is_decoded(samples, tmp_path):
    """Frames come from inside [start, end), by number (each frame shows its own), for mp4 with
    B-frames and keyframes every 8 frames (the seek path), webm, and folders of frames; stride and
    crop apply; a range past the end of the video is an error naming the file."""
    from fractions import Fraction

    import av

    from iad.eval.video_io import VideoReadError, read_video
    from iad.prepare.sources import load_clip_frames
    from iad.prepare.sources.clip import DatasetClip
    from iad.prepare.sources.frames import _decode, read_frame_range

    video = public_datasets.draw_video([public_datasets.Actor(0, 0)], 60).frames
    for suffix, codec, options in ((".mp4", "libx264", {"g": "8", "bf": "3", "crf": "12"}), (".webm", "libvpx-vp9", {"g": "8"})):
        path = tmp_path / f"gop{suffix}"
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=Fraction(8))
            stream.width, stream.height, stream.pix_fmt, stream.options = video.shape[2], video.shape[1], "yuv420p", options
            for frame in video:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        full = read_video(path).frames
        for start, end, stride in ((17, 41, 1), (33, 58, 4), (9, None, 5), (0, 60, 1), (58, 70, 1)):
            got = read_frame_range(path, start, end, stride).frames
            expected = full[start:end:stride]
            assert got.shape == expected.shape and np.array_equal(got, expected), (suffix, start, end, stride)
        if suffix == ".mp4":   # (VP9 at its default rate blurs the number blocks; its frames still match above)
            assert [frame_number(f) for f in read_frame_range(path, 33, 58, 4).frames] == list(range(33, 58, 4))
            assert _decode(path, 33, 58, 4, seek=True)[0] is not None     # numbered by timestamp after a real seek
        with pytest.raises(VideoReadError, match=f"gop{suffix}: no frame at or after frame 70"):
            read_frame_range(path, 70, 80)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    from PIL import Image

    for i, frame in enumerate(video[:20]):
        Image.fromarray(frame).save(frames_dir / f"frame_{i}.png")
    assert [frame_number(f) for f in read_frame_range(frames_dir, 5, 15, 2).frames] == [5, 7, 9, 11, 13]
    with pytest.raises(VideoReadError, match="starts at frame 25 but the folder has 20 frames"):
        read_frame_range(frames_dir, 25, 30)
    # A dataset clip: range, stride and crop; the source frame numbers are kept for the record.
    clip = DatasetClip(tmp_path / "gop.mp4", "c", None, None, name="gop.mp4[10:30]", frame_range=(10, 30),
                       crop=(16, 256, 8, 192))
    loaded = load_clip_frames(clip, frame_stride=3)
    assert loaded.source_frames == list(range(10, 30, 3)) and loaded.origin == (16, 8) and loaded.fps == pytest.approx(8 / 3)
    assert loaded.frames.shape == (7, 184, 240, 3)
    assert [frame_number(f) for f in loaded.frames] == loaded.source_frames


def test_the_datasets_person_is_the_track_kept(samples):
    """DUO shows two people; ConsisID annotates both. Detect and link faces as the Preparer does
    (generated insightface pack), then keep the track the dataset's boxes name: the left face for
    person 1, the right one for person 2, whichever track the detector lists first."""
    from iad.face_analysis import FaceAnalyzer
    from iad.prepare import ClipSkipped, ClipSource
    from iad.prepare.sources import discover, load_clip_frames, pick_primary_track, record_fields
    from iad.prepare.tracks import TrackPoint, link_tracks, validate_tracks

    analyzer = FaceAnalyzer.load(str(insightface_pack.ensure_pack(insightface_pack.ANTELOPEV2)), det_size=256)
    clips = _by_key(discover(samples["consisid"], "consisid")[0])
    for key, side in ((f"dataname/videos/{DUO}.mp4#person1[0:12]", "left"), (f"dataname/videos/{DUO}.mp4#person2[0:32]", "right")):
        clip = clips[key]
        loaded = load_clip_frames(clip, frame_stride=2)
        detections = {i: [TrackPoint(i, f.bbox, f.kps, f.det_score, f.embedding, f.landmark_2d_106, f.aligned_crop)
                          for f in analyzer.detect(frame, retry=False, image_index=i)] for i, frame in enumerate(loaded.frames)}
        good = validate_tracks(link_tracks(detections), 4, 24.0, 0.5)
        assert {p.bbox[0] < 128 for t in good for p in t.points} == {True, False}         # both people tracked
        track = pick_primary_track(list(reversed(good)), clip, loaded)
        assert all((p.bbox[0] < 128) == (side == "left") for p in track.points), key
        fields = record_fields(clip, loaded, (1, 4))
        assert fields["source_range"][0] == clip.frame_range[0] and fields["source_range"][1] <= clip.frame_range[1]
        assert fields["source_window"] == [loaded.source_frames[1], loaded.source_frames[3] + 1]
        assert fields["dataset"] == "consisid" and fields["dataset_person"] == key.split("#person")[1][0]
        # Boxes that match no detected face: skipped with the reason, not a wrong person.
        from dataclasses import replace

        stray = replace(clip, face_boxes={f: (0.0, 0.0, 10.0, 10.0) for f in clip.face_boxes})
        with pytest.raises(ClipSkipped, match="no detected face track matches the dataset's face boxes"):
            pick_primary_track(good, stray, loaded)
    plain = clips[f"dataname/videos/{PLAIN}.mp4"]
    assert pick_primary_track(["first", "second"], plain, load_clip_frames(plain)) == "first"   # the Preparer's rule
    assert record_fields(ClipSource(plain.path, "c", None, None), load_clip_frames(plain), (0, 5)) == {}   # folder clips


def test_fingerprint_follows_the_annotation_and_json_is_streamed(samples, tmp_path):
    from dataclasses import replace

    from iad.prepare.sources import discover
    from iad.prepare.sources.jsonstream import JsonStreamError, iter_object_items

    clip = discover(samples["opens2v"], "opens2v")[0][0]
    assert clip.fingerprint() == clip.fingerprint()
    assert replace(clip, frame_range=(3, 18)).fingerprint() != clip.fingerprint()
    assert replace(clip, caption="another").fingerprint() != clip.fingerprint()
    data = {f"k{i}": {"metadata": {"cut": [i, i + 10], "n": 12345678 * i, "s": "a\"b" * i}} for i in range(40)}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(data, indent=2))
    for chunk in (1, 3, 7, 1 << 20):          # entries and numbers split across reads
        assert list(iter_object_items(path, chunk_chars=chunk)) == list(data.items())
    path.write_text('{"a": {"b": 1}, "c": ')
    with pytest.raises(JsonStreamError, match="entry 1 is not valid JSON"):
        list(iter_object_items(path, chunk_chars=4))


def test_clips_survive_a_json_plan(samples):
    """A preparation plan stores clips as JSON (dataclass fields, path relative to the input folder);
    the clip read back is the same clip: same class, range, crop, boxes, key and fingerprint."""
    from iad.prepare import ClipSource
    from iad.prepare.sources import clip_from_entry, discover

    for name, fmt in (("consisid", "consisid"), ("opens2v", "opens2v")):
        root = samples[name]
        for clip in discover(root, fmt)[0]:
            entry = {field: getattr(clip, field) for field in clip.__dataclass_fields__}
            entry["path"] = clip.path.relative_to(root).as_posix()
            back = clip_from_entry(json.loads(json.dumps(entry)), root)
            assert back == clip and back.key == clip.key and back.fingerprint() == clip.fingerprint()
    plain = ClipSource(samples["opens2v"] / "x.mp4", "caption", None, "p1")
    entry = {field: getattr(plain, field) for field in plain.__dataclass_fields__}
    assert clip_from_entry(json.loads(json.dumps({**entry, "path": "x.mp4"})), samples["opens2v"]) == plain
