"""Tiny samples of public face-video training sets, written in their published formats, with
generated faces the test insightface pack detects (``train_data``'s persons and expressions).

- ``make_consisid(root)``: ConsisID's training layout, laid out like the repository's own demo
  (``asserts/demo_train_data/total_train_data.txt`` listing paths relative to the repository root,
  ``dataname/{videos,captions,refine_bbox_jsons,track_masks_data}``), real field names
  (``path``/``cap``/``fps``/``duration``; ``new_track_id`` boxes; ``valid_frame`` /
  ``corresponding_data`` / ``control_sam2_frame``), plus the broken rows a real download can have.
- ``make_consisid_hf(root)``: the Hugging Face release (``video_caption_train.json`` at the root;
  the tars' inner folders are not documented, so a plausible extraction).
- ``make_opens2v(root)``: ``Jsons/total_part<N>.json`` + ``Videos/total_part<N>/`` with ``cut`` /
  ``face_cut`` ranges inside longer videos, ``crop``, ``cap`` / ``face_cap_qwen``.

Every frame carries its own number in a corner block (``frame_number``), so a test can tell which
source frames a reader returned. Frames are 256x192; detect with ``det_size=256``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import insightface_pack, train_data

WIDTH, HEIGHT, FACE = 256, 192, 64.0
LEFT, RIGHT = 48, 176          # the two face slots (x of the leftmost grid position)
MARK = 8                       # frame-number blocks (two digits base 40), bottom-right corner


@dataclass
class Actor:
    person: int                     # train_data's person (skin hue)
    action: int
    slot: int = LEFT
    visible: set[int] | None = None  # frames the face is drawn in (None: every frame)


@dataclass
class SampleVideo:
    frames: np.ndarray
    boxes: dict[int, dict[int, list[float]]] = field(default_factory=dict)   # actor index -> frame -> xyxy


def frame_number(frame: np.ndarray) -> int:
    """The number painted into ``frame`` by ``draw_video`` (survives H.264 at the writer's quality)."""
    low, high = (int(round((float(block.mean()) - 20.0) / 5.0)) for block in
                 (frame[-MARK:, -MARK:], frame[-MARK:, -2 * MARK:-MARK]))
    return low + 40 * high


def draw_video(actors: list[Actor], frames: int, seed: int = 0) -> SampleVideo:
    rng = np.random.default_rng(seed)
    background = rng.integers(70, 110, size=(HEIGHT // 8, WIDTH // 8, 1)).astype(np.uint8)
    base = np.repeat(np.repeat(np.repeat(background, 8, 0), 8, 1), 3, 2)
    out = SampleVideo(np.zeros((frames, HEIGHT, WIDTH, 3), np.uint8))
    for t in range(frames):
        image = base.copy()
        for i, actor in enumerate(actors):
            if actor.visible is not None and t not in actor.visible:
                continue
            # On the detector's 16 px grid (as in train_data.draw_clip), a different path per action.
            cx = actor.slot + 16 * ((t // 4 + actor.action) % 3)
            cy = HEIGHT / 2 - 16 + 16 * ((t // 6 + actor.action) % 2)
            skin = train_data.person_colour(actor.person)
            box = insightface_pack.draw_face(image, cx, cy, FACE, person=actor.person, colour=skin)
            train_data.draw_expression(image, cx, cy, FACE, skin, actor.action,
                                       train_data.expression_intensity(actor.action, t))
            out.boxes.setdefault(i, {})[t] = [float(v) for v in box]
        image[-MARK:, -MARK:] = 20 + 5 * (t % 40)
        image[-MARK:, -2 * MARK:-MARK] = 20 + 5 * (t // 40)
        out.frames[t] = image
    return out


def _write(path: Path, video: SampleVideo, fps: float = 8.0) -> Path:
    from iad.eval.video_io import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, video.frames, fps=fps)


def _json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4), encoding="utf-8")
    return path


def _consisid_annotation(base: Path, stem: str, video: SampleVideo, persons: dict[str, int]) -> None:
    """refine_bbox_jsons/<stem>.json and track_masks_data/<stem>/*.json for ``persons`` (id -> actor).
    valid_frame lists the frames each face/head mask is non-empty (here: where the face is drawn)."""
    frames: dict[str, dict] = {}
    for pid, actor in persons.items():
        for t, (x1, y1, x2, y2) in video.boxes[actor].items():
            entry = frames.setdefault(str(t), {"face": [], "head": [], "person": []})
            face = {"name": "FACE", "class": 0, "confidence": 0.95, "box": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                    "track_id": int(pid), "new_track_id": int(pid)}
            head = {**face, "name": "head", "class": 1, "box": {"x1": x1 - 8, "y1": y1 - 16, "x2": x2 + 8, "y2": y2 + 4}}
            entry["face"].append(face)
            entry["head"].append(head)
    _json(base / "refine_bbox_jsons" / f"{stem}.json", frames)
    masks = base / "track_masks_data" / stem
    valid = {pid: {k: sorted(video.boxes[a]) for k in ("face", "head", "person")} for pid, a in persons.items()}
    _json(masks / "valid_frame.json", valid)
    _json(masks / "corresponding_data.json",
          {pid: {"face": 3 * n + 1, "head": 3 * n + 2, "person": 3 * n + 3} for n, pid in enumerate(persons)})
    _json(masks / "control_sam2_frame.json", {pid: {k: min(video.boxes[a]) for k in ("face", "head", "person")}
                                              for pid, a in persons.items()})


def _consisid_row(name: str, cap: str, frames: int, fps: float = 8.0) -> dict:
    return {"path": name, "cap": cap, "size": 1000, "resolution": {"height": HEIGHT, "width": WIDTH}, "fps": fps,
            "duration": frames / fps}


SOLO = "aaaaaaaaaaa_segment_0_40_noFacePose_0_40"
DUO = "bbbbbbbbbbb_segment_0_32_noFacePose_0_32"
PLAIN = "ccccccccccc_segment_5_30_noFacePose_0_25"
BROKEN_ANNOTATION = "ddddddddddd_segment_0_20_noFacePose_0_20"


def make_consisid(root: Path) -> Path:
    """The input folder (``<root>/asserts/demo_train_data``). Clips: SOLO (one person, visible in
    frames 4-35 of 40), DUO (person 1 visible 0-11 and 20-31, a gap of 8 > the tolerance of 6;
    person 2 in every frame), PLAIN (no annotations: a whole-video clip; its row's path has no
    ``.mp4``, as ConsisID's step6 writes it). Broken: a missing video, an empty caption, a row that
    is not an object, a malformed valid_frame.json, a bad line in total_train_data.txt."""
    data = root / "asserts" / "demo_train_data"
    base = data / "dataname"
    solo = draw_video([Actor(0, 0, LEFT, set(range(4, 36)))], 40, seed=1)
    duo = draw_video([Actor(1, 1, LEFT, set(range(0, 12)) | set(range(20, 32))), Actor(2, 2, RIGHT)], 32, seed=2)
    plain = draw_video([Actor(3, 3, LEFT)], 25, seed=3)
    broken = draw_video([Actor(4, 0, LEFT)], 20, seed=4)
    for stem, video in ((SOLO, solo), (DUO, duo), (PLAIN, plain), (BROKEN_ANNOTATION, broken)):
        _write(base / "videos" / f"{stem}.mp4", video)
    _consisid_annotation(base, SOLO, solo, {"1": 0})
    _consisid_annotation(base, DUO, duo, {"1": 0, "2": 1})
    _consisid_annotation(base, BROKEN_ANNOTATION, broken, {"1": 0})
    (base / "track_masks_data" / BROKEN_ANNOTATION / "valid_frame.json").write_text('{"1": {"face": [0, 1,', "utf-8")
    rows = [_consisid_row(f"{SOLO}.mp4", "A woman smiling in a room.", 40),
            _consisid_row(f"{DUO}.mp4", "Two people talking, one turns the head.", 32),
            _consisid_row(PLAIN, "A person laughing.", 25),
            _consisid_row("eeeeeeeeeee_missing.mp4", "A clip whose video was not downloaded.", 30),
            _consisid_row(f"{BROKEN_ANNOTATION}.mp4", "A clip with a broken annotation.", 20),
            {**_consisid_row(f"{SOLO}.mp4", "", 40), "cap": ""},
            "not a row"]
    _json(base / "captions" / "dataname_captions.json", rows)
    prefix = "asserts/demo_train_data/dataname"
    (data / "total_train_data.txt").write_text(
        "#video_path,caption_path,dataset_name\n"
        f"{prefix}/videos,{prefix}/captions/dataname_captions.json,{prefix}\n"
        f"{prefix}/videos,{prefix}/captions/dataname_captions.json\n", encoding="utf-8")
    return data


def make_consisid_hf(root: Path) -> Path:
    """The Hugging Face layout: video_caption_train.json at the root, videos/, bboxes/, masks/ as
    extracted tars (inner folders assumed). One annotated clip (SOLO) and one without (PLAIN)."""
    solo = draw_video([Actor(0, 0, LEFT, set(range(4, 36)))], 40, seed=1)
    plain = draw_video([Actor(3, 3, LEFT)], 25, seed=3)
    _write(root / "videos" / "videos" / f"{SOLO}.mp4", solo)
    _write(root / "videos" / "videos" / f"{PLAIN}.mp4", plain)
    tmp = root / "_annotation"
    _consisid_annotation(tmp, SOLO, solo, {"1": 0})
    (root / "bboxes" / "refine_bbox_jsons").mkdir(parents=True)
    (tmp / "refine_bbox_jsons" / f"{SOLO}.json").rename(root / "bboxes" / "refine_bbox_jsons" / f"{SOLO}.json")
    (root / "masks").mkdir()
    (tmp / "track_masks_data" / SOLO).rename(root / "masks" / SOLO)
    for leftover in sorted(tmp.rglob("*"), reverse=True):
        leftover.rmdir()
    tmp.rmdir()
    _json(root / "video_caption_train.json", [_consisid_row(f"{SOLO}.mp4", "A woman smiling in a room.", 40),
                                              _consisid_row(f"{PLAIN}.mp4", "A person laughing.", 25)])
    return root


def _opens2v_meta(path: str, cut: list[int], **extra) -> dict:
    meta = {"cut": cut, "crop": [0, WIDTH, 0, HEIGHT], "tech": 2.0, "motion": 0.01, "fps": 8.0,
            "num_frames": cut[1] - cut[0], "resolution": {"height": HEIGHT, "width": WIDTH},
            "cap": ["A person in a green park, the camera is static."], "path": path, "aesthetic": 5.0}
    meta.update(extra)
    return {"metadata": meta}


def make_opens2v(root: Path) -> Path:
    """Part 1: ``vidA.mp4`` (44 frames) gives two clips, ``vidA_part1`` (cut 0-20, face_cut 2-18)
    and ``vidA_part2`` (cut 20-44, face_cut 22-42, a face_cap_qwen caption); ``sub/vidB.mp4`` gives
    ``vidB_segment_3`` (cut 4-30, no face_cut, a crop that drops the top 16 px, a "watermark" band). Broken: a missing
    video, a reversed cut, an entry without metadata, a duplicate of vidA_part1, one without any
    caption. Part 2: ``vidC.mp4`` one folder deeper than its path says, then a truncated file."""
    vid_a = draw_video([Actor(5, 1, LEFT)], 44, seed=5)
    vid_b = draw_video([Actor(6, 2, LEFT)], 30, seed=6)
    vid_c = draw_video([Actor(7, 3, LEFT)], 20, seed=7)
    _write(root / "Videos" / "total_part1" / "vidA.mp4", vid_a)
    _write(root / "Videos" / "total_part1" / "sub" / "vidB.mp4", vid_b)
    _write(root / "Videos" / "total_part2" / "total_part2" / "vidC.mp4", vid_c)
    part1 = {
        "vidA_part1": _opens2v_meta("vidA.mp4", [0, 20], face_cut=[2, 18]),
        "vidA_part2": _opens2v_meta("vidA.mp4", [20, 44], face_cut=[22, 42],
                                    face_cap_qwen="A woman turns her head and smiles at the camera."),
        "vidB_segment_3": _opens2v_meta("sub/vidB.mp4", [4, 30], crop=[0, WIDTH, 16, HEIGHT]),
        "gone_part1": _opens2v_meta("gone.mp4", [0, 20]),
        "reversed_part1": _opens2v_meta("vidA.mp4", [30, 10]),
        "nometa_part1": {"annotation": {}},
        "vidA_part1_copy": _opens2v_meta("vidA.mp4", [0, 20], face_cut=[2, 18]),
        "nocap_part1": _opens2v_meta("vidA.mp4", [0, 44], cap=[]),
    }
    _json(root / "Jsons" / "total_part1.json", part1)
    text = json.dumps({"vidC_part1": _opens2v_meta("vidC.mp4", [0, 20], face_cut=[1, 19]),
                       "vidC_part2": _opens2v_meta("vidC.mp4", [0, 20])}, indent=4)
    (root / "Jsons" / "total_part2.json").write_text(text[: text.index('"vidC_part2"') + 40], encoding="utf-8")
    return root
