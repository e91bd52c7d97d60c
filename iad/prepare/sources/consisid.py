"""ConsisID's training data, as published (facts and citations: docs/training.md, "Public datasets").

Two layouts:

- ConsisID's training layout (``asserts/demo_train_data`` in github.com/PKU-YuanGroup/ConsisID):
  ``total_train_data.txt`` lists ``videos_dir,captions_json,annotation_dir`` per line; the captions
  JSON is a list of ``{"path", "cap", "fps", "duration", ...}``; per video ``<stem>`` the annotation
  dir holds ``refine_bbox_jsons/<stem>.json`` (per-frame face/head/person boxes with the person id
  ``new_track_id``) and ``track_masks_data/<stem>/{valid_frame,corresponding_data}.json``.
- The Hugging Face release (BestWishYsh/ConsisID-preview-Data, tars extracted in place):
  ``video_caption_train.json`` at the root; videos and annotations are found by name below it.

One clip per annotated person (an id with both a face and a head mask, as ConsisID's loader
requires), over the longest run of frames where that person's face or head is visible (gaps up to
``MISS_TOLERANCE`` frames, ConsisID's ``--miss_tolerance``), with that person's face boxes. A video
without annotations is one whole-video clip.

Read from ConsisID's own code (github.com/PKU-YuanGroup/ConsisID): ``models/dataloader.py``
(``ConsisID_Dataset``: the list file, ``path``/``cap``, the annotation paths, valid person ids,
``get_valid_segments``), ``data_preprocess/step4_get_mask.py`` (``valid_frame`` /
``corresponding_data``), ``step3_get_refine_track.py`` (``new_track_id``), ``step6_merge_caption_json.py``
(the caption rows), ``train_single_rank.sh`` (``--miss_tolerance 6``) and ``asserts/demo_train_data``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .clip import DatasetClip

LIST_FILE = "total_train_data.txt"
HF_CAPTIONS = "video_caption_train.json"
MISS_TOLERANCE = 6
LAYOUT_HELP = (f"a ConsisID training set: a folder with {LIST_FILE} (lines 'videos_dir,captions_json,annotation_dir', "
               f"ConsisID's asserts/demo_train_data layout) or with {HF_CAPTIONS} (the Hugging Face "
               "BestWishYsh/ConsisID-preview-Data release, its tars extracted in that folder)")


def layout_problem(root: Path) -> str | None:
    if not root.is_dir():
        return f"{root} is not a folder"
    if (root / LIST_FILE).is_file() or (root / HF_CAPTIONS).is_file():
        return None
    return f"{root} does not look like {LAYOUT_HELP}: neither {root / LIST_FILE} nor {root / HF_CAPTIONS} exists"


@dataclass
class _Part:
    captions: Path
    videos: Path
    annotations: Path | None     # None: search below the root (the Hugging Face layout)


class _Index:
    """Files below the root by name, built on first use (the HF tars' inner folders are not documented)."""

    def __init__(self, root: Path) -> None:
        self.root, self._built = root, False
        self.videos: dict[str, Path] = {}
        self.boxes: dict[str, Path] = {}
        self.masks: dict[str, Path] = {}

    def build(self) -> "_Index":
        if not self._built:
            for folder, dirs, files in os.walk(self.root):
                dirs.sort()
                here = Path(folder)
                if "valid_frame.json" in files:
                    self.masks.setdefault(here.name, here)
                for name in sorted(files):
                    if name.lower().endswith(".mp4"):
                        self.videos.setdefault(name, here / name)
                    elif name.endswith(".json") and {"refine_bbox_jsons", "bboxes"} & set(here.relative_to(self.root).parts):
                        self.boxes.setdefault(name[:-5], here / name)
            self._built = True
        return self


def _resolve(listed: str, list_file: Path) -> Path:
    """A path from the list file: absolute, else under the list file's folder or the first parent
    folder where it exists (ConsisID's demo lists paths relative to the repository root)."""
    path = Path(listed)
    if path.is_absolute():
        return path
    for base in (list_file.parent, *list_file.parent.parents):
        if (base / path).exists():
            return base / path
    return list_file.parent / path


def _parts(root: Path, skipped: list[dict]) -> list[_Part]:
    list_file = root / LIST_FILE
    if not list_file.is_file():
        return [_Part(root / HF_CAPTIONS, root, None)]
    parts = []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{LIST_FILE} line {number}"
        fields = line.split(",")
        if len(fields) != 3 or not all(f.strip() for f in fields):
            skipped.append({"source": where, "reason": f"expected 'videos_dir,captions_json,annotation_dir', got {line!r}"})
            continue
        videos, captions, annotations = (_resolve(f.strip(), list_file) for f in fields)
        missing = [str(p) for p in (videos, annotations) if not p.is_dir()] + ([] if captions.is_file() else [str(captions)])
        if missing:
            skipped.append({"source": where, "reason": f"missing: {', '.join(missing)}"})
            continue
        parts.append(_Part(captions, videos, annotations))
    return parts


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _caption(row: dict) -> str:
    cap = row.get("cap")
    if isinstance(cap, list):
        cap = next((c for c in cap if isinstance(c, str) and c.strip()), "")
    return cap.strip() if isinstance(cap, str) else ""


def longest_visible_run(frames: list[int], tolerance: int = MISS_TOLERANCE) -> tuple[int, int] | None:
    """[start, end) of the longest run of frames with gaps <= ``tolerance`` (the first on ties)."""
    best, run = None, []
    for f in sorted(set(frames)):
        if run and f - run[-1] > tolerance:
            best = run if best is None or len(run) > len(best) else best
            run = []
        run.append(f)
    if run:
        best = run if best is None or len(run) > len(best) else best
    return None if best is None else (best[0], best[-1] + 1)


def _load_json(path: Path, kind: type, what: str) -> object:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, kind):
        raise ValueError(f"{path}: expected {what}")
    return data


def _person_clips(video: Path, rel: str, caption: str, masks: Path, boxes_file: Path | None) -> list[DatasetClip]:
    """One clip per person with face and head masks; ``ValueError`` names the broken file."""
    valid = _load_json(masks / "valid_frame.json", dict, "{person id: {'face': [frames], 'head': [frames]}}")
    persons = _load_json(masks / "corresponding_data.json", dict, "{person id: {'face': id, 'head': id}}")
    boxes = _load_json(boxes_file, dict, "{frame: {'face': [boxes], ...}}") if boxes_file else {}
    ids = [pid for pid, objects in persons.items() if isinstance(objects, dict) and "face" in objects and "head" in objects]
    if not ids:
        raise ValueError(f"{masks / 'corresponding_data.json'}: no person has both a face and a head mask")
    clips = []
    for pid in ids:
        entry = valid.get(pid)
        if not isinstance(entry, dict):
            raise ValueError(f"{masks / 'valid_frame.json'}: no frames for person {pid}")
        frames = [f for key in ("face", "head") for f in entry.get(key, [])]
        if not all(isinstance(f, int) and f >= 0 for f in frames):
            raise ValueError(f"{masks / 'valid_frame.json'}: person {pid}: frame numbers must be integers >= 0")
        span = longest_visible_run(frames)
        if span is None:
            raise ValueError(f"{masks / 'valid_frame.json'}: person {pid} is visible in no frame")
        face_boxes = {}
        for frame in range(*span):
            items = [b for b in (boxes.get(str(frame)) or {}).get("face", []) if str(b.get("new_track_id")) == str(pid)]
            if items:
                box = max(items, key=lambda b: b.get("confidence", 0)).get("box") or {}
                try:
                    face_boxes[frame] = tuple(float(box[k]) for k in ("x1", "y1", "x2", "y2"))
                except (KeyError, TypeError, ValueError):
                    raise ValueError(f"{boxes_file}: frame {frame}: a face box without x1/y1/x2/y2") from None
        person = f"{rel}#person{pid}"
        clips.append(DatasetClip(video, caption, None, person, name=f"{person}[{span[0]}:{span[1]}]", frame_range=span,
                                 face_boxes=face_boxes, dataset="consisid", extra={"dataset_person": str(pid)}))
    return clips


def discover(root: str | os.PathLike) -> tuple[list[DatasetClip], list[dict]]:
    root = Path(root)
    problem = layout_problem(root)
    if problem:
        raise ValueError(problem)
    skipped: list[dict] = []
    clips: list[DatasetClip] = []
    index = _Index(root)
    seen: dict[str, str] = {}
    for part in _parts(root, skipped):
        source = _rel(part.captions, root)
        try:
            rows = _load_json(part.captions, list, 'a list of {"path": ..., "cap": ...} rows')
        except ValueError as exc:
            skipped.append({"source": source, "reason": str(exc)})
            continue
        for number, row in enumerate(rows):
            where = f"{source} row {number}"
            if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not row["path"].strip():
                skipped.append({"source": where, "reason": "malformed row: expected an object with a 'path' string"})
                continue
            name = os.path.basename(row["path"].strip())
            caption = _caption(row)
            if part.annotations is None:
                index.build()
                video = index.videos.get(name) or index.videos.get(f"{name}.mp4")
            else:
                video = next((p for p in (part.videos / name, part.videos / f"{name}.mp4") if p.is_file()), None)
            if video is None:
                skipped.append({"source": where, "reason": f"video {name} missing (looked in {part.videos})"})
                continue
            rel = _rel(video, root)
            if not caption:
                skipped.append({"source": rel, "reason": f"no caption ('cap' in {where})"})
                continue
            stem = video.stem
            if part.annotations is None:
                masks, boxes = index.masks.get(stem), index.boxes.get(stem)
            else:
                masks = part.annotations / "track_masks_data" / stem
                boxes = part.annotations / "refine_bbox_jsons" / f"{stem}.json"
                masks, boxes = (masks if masks.is_dir() else None), (boxes if boxes.is_file() else None)
            try:
                found = (_person_clips(video, rel, caption, masks, boxes) if masks else
                         [DatasetClip(video, caption, None, None, name=rel, dataset="consisid")])
            except ValueError as exc:
                skipped.append({"source": rel, "reason": f"malformed annotation: {exc}"})
                continue
            for clip in found:
                if clip.key in seen:
                    skipped.append({"source": f"{where}", "reason": f"duplicate of {seen[clip.key]} ({clip.key})"})
                    continue
                seen[clip.key] = where
                clips.append(clip)
    return clips, skipped
