"""OpenS2V-5M (github.com/PKU-YuanGroup/OpenS2V-Nexus; huggingface.co/datasets/BestWishYsh/OpenS2V-5M),
as published: ``Jsons/total_part<N>.json`` (one JSON object keyed by clip id, each entry
``{"metadata": {...}}``) and the videos of part N extracted under ``Videos/total_part<N>/``.

Per entry: ``metadata.path`` (the video, relative to the part's video folder), ``metadata.cut``
(``[start, end)`` frames of that source video without jump cuts; one long video gives several
clips), ``metadata.face_cut`` (the sub-range where a face is visible, same frame numbering: used
when present), ``metadata.crop`` (``[x0, x1, y0, y1]``, the watermark-free region: applied), and
captions (``face_cap_glm`` / ``face_cap_Aria`` / ``face_cap_qwen`` in the order OpenS2V's own
tools prefer them, else ``cap``, a list). OpenS2V has no person identities: clips of one source
video are grouped for its cross-video pairs, but one video can show several people, so ``person``
stays empty and the group goes into the record as ``source_video``.

When ``Jsons/total_part*.json`` are absent, the mask-and-box files are read instead
(``Jsons/mask_and_bbox_High-Quality/`` then ``Jsons/mask_and_bbox/``): the same entries plus
subject masks. Files are read entry by entry (they are 0.6 GB to tens of GB).

Read from OpenS2V-Nexus's code and the dataset card: ``data_process/README.md`` (Step 0: ``cut``,
``crop``, ``path``), ``data_process/demo_dataloader.py`` (video path per part, ``face_cut`` and
``crop`` applied, ``face_cap_qwen`` as the caption, the source-video group), ``step1_get_bbox.py`` /
``step2_get_pure_person_clip.py`` (``face_cut`` in the source video's frame numbers) and
``step4-1_get_tag_api.py`` (the caption order); the file tree of the Hugging Face release."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .clip import DatasetClip
from .jsonstream import JsonStreamError, iter_object_items

JSON_SETS = ("Jsons", "Jsons/mask_and_bbox_High-Quality", "Jsons/mask_and_bbox")
CAPTION_KEYS = ("face_cap_glm", "face_cap_Aria", "face_cap_qwen", "cap")
LAYOUT_HELP = ("OpenS2V-5M as published: a folder with Jsons/total_part<N>.json (or Jsons/mask_and_bbox*/"
               "total_part<N>.json) and the videos of part N extracted under Videos/total_part<N>/")


def _json_files(root: Path) -> list[Path]:
    for folder in JSON_SETS:
        files = sorted((root / folder).glob("*.json"), key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
        if files:
            return files
    return []


def layout_problem(root: Path) -> str | None:
    if not root.is_dir():
        return f"{root} is not a folder"
    if _json_files(root):
        return None
    zipped = sorted((root / "Jsons").glob("**/*.json.zip")) if (root / "Jsons").is_dir() else []
    hint = f" (found {zipped[0].name}: unzip it first)" if zipped else ""
    return f"{root} does not look like {LAYOUT_HELP}: no {root / 'Jsons' / 'total_part1.json'} or similar{hint}"


class _VideoFinder:
    """``metadata.path`` -> file: under ``Videos/<part>/``, ``Videos/``, the root, then (once, on the
    first miss) an index of the files under ``Videos/`` by their last path components, for
    extractions that add a folder level."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tails: dict[int, dict[tuple[str, ...], Path]] = {}

    def candidates(self, part: str, rel: str) -> list[Path]:
        return [self.root / "Videos" / part / rel, self.root / "Videos" / rel, self.root / rel]

    def find(self, part: str, rel: str) -> Path | None:
        for path in self.candidates(part, rel):
            if path.is_file():
                return path
        tail = tuple(Path(rel).parts)
        depth = len(tail)
        if depth not in self._tails:
            table: dict[tuple[str, ...], Path] = {}
            for folder, dirs, files in os.walk(self.root / "Videos"):
                dirs.sort()
                for name in files:
                    path = Path(folder) / name
                    key = tuple(path.relative_to(self.root / "Videos").parts[-depth:])
                    if len(key) == depth:
                        table.setdefault(key, path)
            self._tails[depth] = table
        return self._tails[depth].get(tail)


def _frame_range(meta: dict) -> tuple[int, int]:
    for key in ("face_cut", "cut"):
        value = meta.get(key)
        if value is None:
            continue
        if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                      for v in value) or not 0 <= value[0] < value[1]):
            raise ValueError(f"metadata.{key} must be [start, end) frame numbers with 0 <= start < end, got {value!r}")
        return value[0], value[1]
    raise ValueError("metadata has neither 'face_cut' nor 'cut' (the clip's frame range)")


def _crop(meta: dict) -> tuple[int, int, int, int] | None:
    value = meta.get("crop")
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 4 or not all(isinstance(v, (int, float)) for v in value)
            or value[1] <= value[0] or value[3] <= value[2]):
        raise ValueError(f"metadata.crop must be [x0, x1, y0, y1] with x0 < x1 and y0 < y1, got {value!r}")
    return tuple(int(v) for v in value)


def _caption(meta: dict) -> str:
    for key in CAPTION_KEYS:
        value = meta.get(key)
        if isinstance(value, list):
            value = next((v for v in value if isinstance(v, str) and v.strip()), None)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def source_video_id(key: str) -> str:
    """The source-video group of a clip id, as OpenS2V's cross-video pairs name it: the key before
    ``_segment``, else before ``_part``."""
    group = key.split("_segment")[0]
    return key.split("_part")[0] if group == key else group


def discover(root: str | os.PathLike) -> tuple[list[DatasetClip], list[dict]]:
    root = Path(root)
    problem = layout_problem(root)
    if problem:
        raise ValueError(problem)
    finder = _VideoFinder(root)
    clips: list[DatasetClip] = []
    skipped: list[dict] = []
    seen: dict[str, str] = {}
    for json_file in _json_files(root):
        source = json_file.relative_to(root).as_posix()
        part = json_file.stem
        try:
            for key, entry in iter_object_items(json_file):
                where = f"{source} entry {key!r}"
                meta = entry.get("metadata") if isinstance(entry, dict) else None
                if not isinstance(meta, dict) or not isinstance(meta.get("path"), str) or not meta["path"].strip():
                    skipped.append({"source": where, "reason": "malformed entry: expected {\"metadata\": {\"path\": ...}}"})
                    continue
                try:
                    start, end = _frame_range(meta)
                    crop = _crop(meta)
                except ValueError as exc:
                    skipped.append({"source": where, "reason": f"malformed entry: {exc}"})
                    continue
                rel = meta["path"].strip().lstrip("/")
                video = finder.find(part, rel)
                if video is None:
                    looked = ", ".join(str(p) for p in finder.candidates(part, rel))
                    skipped.append({"source": where, "reason": f"video {rel} missing (looked for {looked})"})
                    continue
                name = f"{video.relative_to(root).as_posix()}[{start}:{end}]"
                caption = _caption(meta)
                if not caption:
                    skipped.append({"source": name, "reason": f"no caption ({', '.join(CAPTION_KEYS)} in {where})"})
                    continue
                if name in seen:
                    skipped.append({"source": where, "reason": f"same video and frame range as {seen[name]} ({name})"})
                    continue
                seen[name] = where
                extra = {"clip_id": key, "source_video": source_video_id(key)}
                clips.append(DatasetClip(video, caption, None, None, name=name, frame_range=(start, end), crop=crop,
                                         dataset="opens2v", extra=extra))
        except (JsonStreamError, OSError, UnicodeDecodeError) as exc:
            skipped.append({"source": source, "reason": f"stopped reading: {exc}"})
    return clips, skipped
