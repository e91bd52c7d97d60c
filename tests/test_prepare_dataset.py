"""python -m iad.prepare on generated clips: face tracks from the real insightface library (generated
pack), latents through ComfyUI's VAE loader (tiny Wan VAE), the pluggable text encoder, references
from another moment, corrupt clips skipped and reported, resumable after an interruption."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from harness import train_data
from harness.paths import REPO_ROOT


@pytest.fixture(scope="module")
def prepared(comfy, tmp_path_factory):
    torch_threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("prepare")
    clips = train_data.make_dataset(root / "clips", persons=2, clips_per_person=1, corrupt=True)
    from iad.prepare import run

    settings = train_data.prepare_settings(clips, root / "dataset")
    state = run(settings)
    torch.set_num_threads(torch_threads)
    return root, clips, settings, state


def _records(folder):
    out = []
    for shard in json.loads((folder / "dataset.json").read_text())["shards"]:
        out += [(shard, r) for r in json.loads((folder / f"{shard}.json").read_text())["clips"]]
    return out


def test_shards_hold_tracks_embeddings_landmarks_latents_text_and_captions(prepared):
    from iad.prepare.encoders import HashTextEncoder

    root, _, settings, state = prepared
    folder = root / "dataset"
    records = _records(folder)
    assert sorted(r["source"] for _, r in records) == ["clip00.mp4", "clip01"]   # an mp4 and a PNG folder
    assert state["embedder"] == "insightface/antelopev2/glintr100"
    encoder = HashTextEncoder()
    for shard, r in records:
        with safe_open(str(folder / f"{shard}.safetensors"), "pt") as f:
            t = {k.split(".", 1)[1]: f.get_tensor(k) for k in f.keys() if k.startswith(r["key"] + ".")}
        assert t["latents"].shape == (16, 2, 8, 8) and torch.isfinite(t["latents"]).all()
        assert torch.allclose(t["text"].float(), encoder(r["caption"]), atol=1e-2)   # fp16 storage
        assert torch.allclose(t["action_text"], encoder(r["action"]).mean(0), atol=1e-5)
        n = t["track.frames"].numel()
        assert n >= 10 and t["track.embeddings"].shape == (n, 512) and t["track.landmarks"].shape == (n, 106, 2)
        assert torch.allclose(t["track.embeddings"].norm(dim=1), torch.ones(n), atol=1e-4)
        assert t["track.kps"].shape == (n, 5, 2) and (t["track.scores"] > 0.5).all()
        # one identity per track: every frame agrees with the track mean
        e = t["track.embeddings"]
        assert float((e @ torch.nn.functional.normalize(e.mean(0), dim=0)).min()) > 0.9
        # references: a different moment, at least reference_gap frames outside the target window
        start, end = r["window"]
        refs = t["ref.frames"]
        assert refs.numel() == r["references"] >= 1
        assert all(f < start - settings_gap(settings) or f >= end + settings_gap(settings) for f in refs.tolist())
        assert t["ref.crops"].shape == (refs.numel(), 112, 112, 3) and t["ref.crops"].dtype == torch.uint8
        assert float((t["ref.embeddings"] @ e.mean(0)).min()) > 0.9            # the same person
        boxes = t["target.bboxes"]                                               # training-resolution pixels
        ok = torch.isfinite(boxes).all(1)
        assert ok.sum() >= 4 and (boxes[ok] >= -1).all() and (boxes[ok] <= 65).all()
    with safe_open(str(folder / "prompt_bank.safetensors"), "pt") as f:
        prompts = json.loads(f.metadata()["prompts"])
        from iad.prepare import load_prompt_bank

        assert prompts == load_prompt_bank() and len(prompts) >= 50
        assert torch.allclose(f.get_tensor("bank.3").float(), encoder(prompts[3]), atol=1e-2)


def settings_gap(settings) -> int:
    return settings.get("reference_gap", 4)


def test_padded_captions_are_stored_without_their_padding_and_batched_as_encoded(comfy, tmp_path):
    """umt5 pads every caption to 512 zero rows (4 MiB a clip in fp16): shards keep the caption's rows,
    records the padded length, and the trainer's batches are the encoder's padded output exactly.
    The action phrase's embedding is the mean of its own rows."""
    from iad.prepare import run
    from iad.train.data import PreparedDataset, build_caption_batch

    torch_threads = torch.get_num_threads()
    clips = train_data.make_dataset(tmp_path / "clips", persons=1, clips_per_person=2)
    settings = dict(train_data.prepare_settings(clips, tmp_path / "dataset"),
                    text_encoder={"kind": "callable", "target": "harness.train_data:Umt5PaddedHashEncoder"})
    run(settings)
    torch.set_num_threads(torch_threads)
    encoder = train_data.Umt5PaddedHashEncoder()
    records = _records(tmp_path / "dataset")
    dataset = PreparedDataset(tmp_path / "dataset", needs_references=False)
    assert len(records) == len(dataset.clips) == 2 and dataset.text_len == 512
    for index, (shard, r) in enumerate(records):
        padded = encoder(r["caption"]).half()
        words = int((padded != 0).any(dim=1).sum())
        with safe_open(str(tmp_path / "dataset" / f"{shard}.safetensors"), "pt") as f:
            stored = f.get_tensor(f"{r['key']}.text")
        assert r["text_tokens"] == 512 and 1 < words < 20
        assert stored.shape == (words, 4096) and torch.equal(stored, padded[:words])
        batch = build_caption_batch(dataset, [index], [0])
        assert torch.equal(batch["context"][0], padded.float())     # the same tensor as with the padding stored
        with safe_open(str(tmp_path / "dataset" / f"{shard}.safetensors"), "pt") as f:
            action_text = f.get_tensor(f"{r['key']}.action_text")
        # the Text Alignment Loss's input: the phrase's token mean, not diluted by 512 - n zero rows
        assert torch.allclose(action_text, encoder.rows(r["action"]).mean(0), atol=1e-6)
    # the prompt bank is stored the same way, and the trainer reads it back padded, as the encoder gave it
    prompts, bank, null = dataset.prompt_bank()
    with safe_open(str(tmp_path / "dataset" / "prompt_bank.safetensors"), "pt") as f:
        stored = {name: f.get_tensor(name) for name in f.keys()}
    assert len(stored) == len(prompts) + 1 and all(1 <= t.shape[0] < 20 for t in stored.values())
    assert torch.equal(stored["null"], encoder("").half()[:1]) and torch.equal(null, encoder("").half())
    for i, prompt in enumerate(prompts):
        assert torch.equal(bank[i], encoder(prompt).half()) and bank[i].shape == (512, 4096), prompt

    # A dataset prepared before the setting (its action_text the mean over the padded rows): adding clips
    # with the new default is refused by name; with "padded_mean" they are made as its other clips were.
    info_path = tmp_path / "dataset" / "dataset.json"
    info = json.loads(info_path.read_text())
    del info["settings"]["action_text"]
    info_path.write_text(json.dumps(info))
    from iad.eval.video_io import write_video

    write_video(clips / "clip02.mp4", train_data.draw_clip(0, 2, 13, seed=2), fps=8)
    (clips / "clip02.json").write_text(json.dumps({"caption": "a person smiling", "action": "smiling", "person": "p0"}))
    with pytest.raises(ValueError, match=r"different settings \(action_text\)"):
        run(settings)
    run(dict(settings, action_text="padded_mean"))
    torch.set_num_threads(torch_threads)
    (shard, r), = [(shard, r) for shard, r in _records(tmp_path / "dataset") if r["source"] == "clip02.mp4"]
    with safe_open(str(tmp_path / "dataset" / f"{shard}.safetensors"), "pt") as f:
        assert torch.allclose(f.get_tensor(f"{r['key']}.action_text"), encoder("smiling").mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="action_text must be one of"):
        run(dict(settings, action_text="mean"))


def test_a_clip_whose_file_changed_is_prepared_again_and_only_its_newest_record_trains(comfy, tmp_path, caplog):
    """iad.prepare knows a clip by its name: a changed file is prepared again into a new shard. The
    trainer reads the newest record of each clip, never both versions, and says which it left out."""
    import logging
    import os

    from iad.eval.video_io import write_video
    from iad.prepare import run
    from iad.train.data import PreparedDataset

    torch_threads = torch.get_num_threads()
    clips = train_data.make_dataset(tmp_path / "clips", persons=1, clips_per_person=2)
    settings = train_data.prepare_settings(clips, tmp_path / "dataset")
    run(settings)
    first = PreparedDataset(tmp_path / "dataset", needs_references=False)
    assert [c.record["source"] for c in first.clips] == ["clip00.mp4", "clip01"] and first.superseded == []
    old_latents = first.tensor(0, "latents")

    write_video(clips / "clip00.mp4", train_data.draw_clip(0, 3, 13, seed=30), fps=8)   # another take, same name
    stat = (clips / "clip00.mp4").stat()
    os.utime(clips / "clip00.mp4", (stat.st_atime, stat.st_mtime + 10))
    run(settings)
    torch.set_num_threads(torch_threads)
    info = json.loads((tmp_path / "dataset" / "dataset.json").read_text())
    assert info["shards"] == ["shard-00000", "shard-00001"]
    with caplog.at_level(logging.WARNING, logger="iad.train"):
        again = PreparedDataset(tmp_path / "dataset", needs_references=False)
    assert sorted(c.record["source"] for c in again.clips) == ["clip00.mp4", "clip01"]
    assert again.superseded == ["clip00.mp4 (shard-00000)"] and "clip00.mp4 (shard-00000)" in caplog.text
    index = next(i for i, c in enumerate(again.clips) if c.record["source"] == "clip00.mp4")
    assert again.clips[index].shard == "shard-00001" and not torch.equal(again.tensor(index, "latents"), old_latents)


def test_a_clip_named_like_one_of_another_input_folder_is_refused_before_anything_runs(comfy, tmp_path):
    """Two input folders prepared into one dataset: a clip whose name a clip of the other folder already
    holds would replace it (the dataset knows a clip by its name), so the run is refused by name before
    anything runs; with a clip_prefix (--clip-prefix) the folder's clips go in beside those. A copy of
    the same file is the clip already there; a folder moved away holds nothing."""
    import shutil

    from iad.eval.video_io import write_video
    from iad.prepare import run
    from iad.prepare.__main__ import main

    torch_threads = torch.get_num_threads()
    clips = train_data.make_dataset(tmp_path / "clips", persons=1, clips_per_person=2)
    dataset = tmp_path / "dataset"
    run(train_data.prepare_settings(clips, dataset))
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["inputs"] == [str(clips.resolve())] and info["clip_prefixes"] == [""] and info["origin"] == {}

    more = tmp_path / "more"
    more.mkdir()
    write_video(more / "clip00.mp4", train_data.draw_clip(0, 3, 13, seed=40), fps=8)   # another clip, same name
    (more / "clip00.txt").write_text("a person waving in a garden")
    shutil.copytree(clips / "clip01", more / "clip01", copy_function=shutil.copy2)    # the same clip, copied
    shutil.copy2(clips / "clip01.json", more / "clip01.json")
    files_before = sorted(f.name for f in dataset.iterdir())
    with pytest.raises(ValueError, match=r"1 clip\(s\) named like clips of another input folder") as refused:
        run(train_data.prepare_settings(more, dataset))
    assert f"clip00.mp4 (held from {clips.resolve()})" in str(refused.value) and "clip01" not in str(refused.value)
    assert "clip_prefix" in str(refused.value)
    assert sorted(f.name for f in dataset.iterdir()) == files_before
    assert json.loads((dataset / "dataset.json").read_text()) == info

    # the same folder with a prefix, from the command line: its clips go in beside the first folder's
    settings = train_data.prepare_settings(more, dataset)
    argv = ["--input", str(more), "--output", str(dataset), "--vae", settings["vae"], "--text-encoder-kind", "hash",
            "--face-pack", settings["face_pack"], "--det-size", "128", "--resolution", "64", "64", "--num-frames", "5",
            "--clips-per-shard", "2", "--store-pixels", "--no-progress", "--clip-prefix", "more/"]
    assert main(argv) == 0
    torch.set_num_threads(torch_threads)
    info = json.loads((dataset / "dataset.json").read_text())
    assert sorted(info["done"]) == ["clip00.mp4", "clip01", "more/clip00.mp4", "more/clip01"] and len(info["shards"]) == 2
    assert info["inputs"] == [str(clips.resolve()), str(more.resolve())] and info["clip_prefixes"] == ["", "more/"]
    assert info["origin"] == {"more/clip00.mp4": 1, "more/clip01": 1}
    with pytest.raises(ValueError, match="with clip_prefix 'more/', not ''"):    # a folder keeps its prefix
        run(settings)
    with pytest.raises(ValueError, match="clip_prefix must be printable"):
        run(dict(settings, clip_prefix="a\nb"))

    # the first folder moved away: its clips are no longer held by a folder there, so a new take of one
    # prepared from elsewhere is that clip's new version (as from its own folder)
    moved = clips.rename(tmp_path / "clips-moved")
    third = tmp_path / "third"
    third.mkdir()
    write_video(third / "clip00.mp4", train_data.draw_clip(0, 3, 13, seed=41), fps=8)
    (third / "clip00.txt").write_text("a person waving in a garden")
    run(train_data.prepare_settings(third, dataset))
    torch.set_num_threads(torch_threads)
    info = json.loads((dataset / "dataset.json").read_text())
    assert len(info["shards"]) == 3 and info["origin"]["clip00.mp4"] == 2

    # a dataset indexed before the record: its clips' folder is unknown (None), and not checked
    for key in ("inputs", "clip_prefixes", "origin"):
        del info[key]
    (dataset / "dataset.json").write_text(json.dumps(info))
    run(train_data.prepare_settings(moved, dataset))
    torch.set_num_threads(torch_threads)
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["inputs"] == [None, str(moved.resolve())] and info["clip_prefixes"] == ["", ""]
    assert set(info["origin"]) == {"clip00.mp4", "clip01"}


def test_corrupt_and_uncaptioned_clips_are_skipped_and_reported(prepared):
    _, _, _, state = prepared
    skipped = {s["source"]: s["reason"] for s in state["skipped"]}
    assert set(skipped) == {"broken.mp4", "nocaption.mp4"}
    assert "unreadable video" in skipped["broken.mp4"] and "broken.mp4" in skipped["broken.mp4"]
    assert "no caption" in skipped["nocaption.mp4"] and "nocaption.txt" in skipped["nocaption.mp4"]


def test_resume_redoes_nothing_and_adds_only_new_clips_via_the_cli(prepared):
    root, clips, settings, _ = prepared
    folder = root / "dataset"
    before = {p.name: p.read_bytes() for p in folder.glob("shard-*")}
    config = root / "prepare.json"
    config.write_text(json.dumps(settings))
    cli = [sys.executable, "-m", "iad.prepare", str(config), "--no-progress"]
    done = subprocess.run(cli, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # broken.mp4 and clip00.mp4 make the first shard (2 per shard): a skipped clip leaves its shard one clip
    # short rather than moving clip01 forward, so the shards do not depend on how many processes ran
    assert "2 clips in 2 shards" in done.stdout and "skipped broken.mp4" in done.stdout
    assert {p.name: p.read_bytes() for p in folder.glob("shard-*")} == before      # nothing recomputed
    # A new clip: only it is processed, into a new shard; the old shard is untouched.
    from iad.eval.video_io import write_video

    write_video(clips / "clip09.mp4", train_data.draw_clip(2, 1, 13, seed=9), fps=8)
    (clips / "clip09.txt").write_text("a person turning the head left")
    done = subprocess.run(cli, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    info = json.loads((folder / "dataset.json").read_text())
    assert info["shards"] == ["shard-00000", "shard-00001", "shard-00002"]
    assert [r["source"] for r in json.loads((folder / "shard-00002.json").read_text())["clips"]] == ["clip09.mp4"]
    assert {p.name: p.read_bytes() for p in folder.glob("shard-*") if "00002" not in p.name} == before
    assert not (folder / "plan.json").exists()      # removed once every planned shard is in the index


def test_an_interrupted_run_resumes_where_it_stopped(comfy, tmp_path, monkeypatch):
    import iad.prepare as prepare

    clips = train_data.make_dataset(tmp_path / "clips", persons=2, clips_per_person=1)
    settings = dict(train_data.prepare_settings(clips, tmp_path / "dataset"), clips_per_shard=1)
    original = prepare.Preparer.process
    calls = []

    def crash_on_second(self, clip, key):
        calls.append(clip.key)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        return original(self, clip, key)

    monkeypatch.setattr(prepare.Preparer, "process", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        prepare.run(settings)
    info = json.loads((tmp_path / "dataset" / "dataset.json").read_text())
    assert info["shards"] == ["shard-00000"] and list(info["done"]) == ["clip00.mp4"]
    monkeypatch.setattr(prepare.Preparer, "process", original)
    state = prepare.run(settings)
    assert state["shards"] == ["shard-00000", "shard-00001"] and sorted(state["done"]) == ["clip00.mp4", "clip01"]
    # Different settings on the same folder are refused instead of mixing datasets.
    with pytest.raises(ValueError, match="resolution"):
        prepare.run(dict(settings, resolution=[128, 64]))


def test_settings_are_validated_with_clear_messages(tmp_path):
    from iad.prepare import PrepareConfig

    with pytest.raises(ValueError) as err:
        PrepareConfig(input=str(tmp_path / "missing"), output=str(tmp_path / "o"), vae=str(tmp_path / "vae.safetensors"),
                      text_encoder={"kind": "comfy", "path": str(tmp_path / "umt5.safetensors")}, num_frames=6,
                      resolution=[100, 64])
    message = str(err.value)
    for part in ("input folder", "text_encoder.path", "vae", "resolution", "num_frames must be 4k+1"):
        assert part in message
    with pytest.raises(ValueError, match="unknown preparation settings.*'resolutoin'"):
        PrepareConfig.from_dict({"input": ".", "output": "o", "vae": "v", "resolutoin": [64, 64]})


def test_reference_window_and_track_rules():
    from iad.prepare import choose_window
    from iad.prepare.tracks import TrackPoint, link_tracks, validate_tracks

    start, refs = choose_window(20, 5, list(range(20)), gap=4)
    assert start == 15 and refs == list(range(0, 11))              # window at the end, refs >= 4 frames before
    start, refs = choose_window(20, 5, list(range(0, 3)), gap=2)
    assert start == 15 and refs == [0, 1, 2]
    start, refs = choose_window(20, 5, list(range(12, 20)), gap=2)
    assert start == 15 and refs == [12]                            # the window keeps the faces, one earlier moment
    start, refs = choose_window(20, 5, list(range(0, 8)), gap=2)
    assert start == 0 and refs == [7]                              # faces only early: window at the start

    def point(frame, x, person_vec):
        return TrackPoint(frame, np.array([x, 10, x + 40, 50], np.float32), np.zeros((5, 2), np.float32), 0.9,
                          torch.nn.functional.normalize(person_vec, dim=0), None, None)

    a, b = torch.randn(512, generator=torch.Generator().manual_seed(0)), torch.randn(512, generator=torch.Generator().manual_seed(1))
    detections = {f: [point(f, 10 + f, a if f < 5 else b), point(f, 200, a)] for f in range(10)}
    detections[10] = [point(10, 400, a)]
    tracks = link_tracks(detections)
    assert len(tracks) == 3
    good = validate_tracks(tracks, min_frames=4, min_face_px=24, identity_threshold=0.5)
    assert [len(t.points) for t in good] == [10]
    reasons = sorted(t.drop_reason for t in tracks if t.drop_reason)
    assert reasons[0].startswith("not one identity") and reasons[1].startswith("too short")
