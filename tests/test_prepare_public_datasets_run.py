"""python -m iad.prepare on public datasets as published (issue 33), end to end: the ConsisID and
OpenS2V-5M samples of harness/public_datasets.py through the real pipeline (generated insightface
pack, tiny Wan VAE, hash text encoder). The prepared target window lies inside each clip's annotated
range and its pixels are exactly those frames (cropped where the dataset says); with two people in
a clip, the track kept is the dataset's person; broken rows are reported in dataset.json; resuming
redoes nothing; the CLI takes --input-format and refuses a root of another format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from harness import public_datasets, train_data
from harness.paths import REPO_ROOT
from harness.public_datasets import DUO, PLAIN, SOLO


def _settings(root, output, input_format):
    # 256x192 frames: the generated detector finds the 64 px faces at detection size 256.
    return dict(train_data.prepare_settings(root, output), input_format=input_format, det_size=256)


@pytest.fixture(scope="module")
def prepared(comfy, tmp_path_factory):
    from iad.prepare import run

    threads = torch.get_num_threads()
    base = tmp_path_factory.mktemp("public-run")
    out = {}
    for name, make in (("consisid", public_datasets.make_consisid), ("opens2v", public_datasets.make_opens2v)):
        root = make(base / name)
        settings = _settings(root, base / f"{name}-dataset", name)
        out[name] = (root, settings, run(settings))
    torch.set_num_threads(threads)
    return out


def _records(folder):
    records = {}
    for shard in json.loads((folder / "dataset.json").read_text())["shards"]:
        with safe_open(str(folder / f"{shard}.safetensors"), "pt") as f:
            for r in json.loads((folder / f"{shard}.json").read_text())["clips"]:
                tensors = {k.split(".", 1)[1]: f.get_tensor(k) for k in f.keys() if k.startswith(r["key"] + ".")}
                records[r["source"]] = (r, tensors)
    return records


def _expected_pixels(video_path, window, crop, resolution):
    """The target window cut from a full decode of the source video, cropped and fitted as the
    Preparer fits frames: what the shard must hold."""
    from iad.eval.video_io import read_video
    from iad.prepare.pipeline import _fit

    frames = read_video(video_path).frames[window[0]:window[1]]
    if crop:
        frames = frames[:, crop[2]:crop[3], crop[0]:crop[1]]
    return _fit(np.ascontiguousarray(frames), *resolution)[0]


def test_consisid_clips_are_prepared_inside_their_ranges_with_the_annotated_person(prepared):
    root, settings, state = prepared["consisid"]
    folder = Path(settings["output"])
    records = _records(folder)
    videos = "dataname/videos"
    ranges = {f"{videos}/{SOLO}.mp4#person1[4:36]": (4, 36), f"{videos}/{DUO}.mp4#person1[0:12]": (0, 12),
              f"{videos}/{DUO}.mp4#person2[0:32]": (0, 32), f"{videos}/{PLAIN}.mp4": (0, 25)}
    assert set(records) == set(ranges)
    for source, (start, end) in ranges.items():
        r, t = records[source]
        window = r.get("source_window", r["window"])
        assert start <= window[0] and window[1] <= end and window[1] - window[0] == settings["num_frames"]
        if source != f"{videos}/{PLAIN}.mp4":
            assert r["dataset"] == "consisid" and r["source_range"] == [start, end] and r["person"] == source.split("[")[0]
        video = root / videos / (source.split("#")[0].split("/")[-1])
        assert torch.equal(t["target.pixels"], torch.from_numpy(_expected_pixels(video, window, None, settings["resolution"])))
    # Two people in DUO: each record's track is the annotated person's face (left / right half).
    left = records[f"{videos}/{DUO}.mp4#person1[0:12]"][1]["track.bboxes"]
    right = records[f"{videos}/{DUO}.mp4#person2[0:32]"][1]["track.bboxes"]
    assert (left[:, 0] < 128).all() and (right[:, 0] >= 128).all()
    skipped = {s["source"]: s["reason"] for s in state["skipped"]}
    assert "total_train_data.txt line 3" in skipped and "malformed annotation" in skipped[f"{videos}/ddddddddddd_segment_0_20_noFacePose_0_20.mp4"]
    from iad.train.data import PreparedDataset

    dataset = PreparedDataset(folder)                             # usable for training as it is
    assert len(dataset) == 4 and len(dataset.persons) == 4


def test_opens2v_windows_come_from_inside_face_cut_of_the_long_video_and_the_crop(prepared):
    root, settings, state = prepared["opens2v"]
    records = _records(Path(settings["output"]))
    ranges = {"Videos/total_part1/vidA.mp4[2:18]": ((2, 18), None), "Videos/total_part1/vidA.mp4[22:42]": ((22, 42), None),
              "Videos/total_part1/sub/vidB.mp4[4:30]": ((4, 30), [0, 256, 16, 192]),
              "Videos/total_part2/total_part2/vidC.mp4[1:19]": ((1, 19), None)}
    assert set(records) == set(ranges)
    for source, ((start, end), crop) in ranges.items():
        r, t = records[source]
        window = r["source_window"]
        assert r["source_range"] == [start, end] and start <= window[0] and window[1] <= end
        assert r["crop"] == (crop or [0, 256, 0, 192]) and r["person"] is None and r["source_video"] in source
        expected = _expected_pixels(root / source.split("[")[0], window, crop, settings["resolution"])
        assert torch.equal(t["target.pixels"], torch.from_numpy(expected))
    assert records["Videos/total_part1/vidA.mp4[22:42]"][0]["caption"] == "A woman turns her head and smiles at the camera."
    reasons = {s["source"]: s["reason"] for s in state["skipped"]}
    assert "video gone.mp4 missing" in reasons["Jsons/total_part1.json entry 'gone_part1'"]
    assert "truncated or corrupt" in reasons["Jsons/total_part2.json"]


def test_resume_and_the_cli_flag(prepared, tmp_path):
    root, settings, _ = prepared["opens2v"]
    folder = Path(settings["output"])
    before = {p.name: p.read_bytes() for p in folder.glob("shard-*")}
    config = tmp_path / "prepare.json"
    config.write_text(json.dumps({k: v for k, v in settings.items() if k != "input_format"}))
    cli = [sys.executable, "-m", "iad.prepare", str(config), "--no-progress"]
    done = subprocess.run(cli + ["--input-format", "opens2v"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "4 clips in" in done.stdout and "skipped Jsons/total_part1.json entry 'gone_part1'" in done.stdout
    assert {p.name: p.read_bytes() for p in folder.glob("shard-*")} == before        # nothing recomputed
    done = subprocess.run(cli + ["--input-format", "consisid"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "total_train_data.txt" in done.stderr and "video_caption_train.json" in done.stderr
    done = subprocess.run(cli + ["--input-format", "webvid"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "unknown input_format 'webvid'" in done.stderr
