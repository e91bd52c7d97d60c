"""A clip taken from a public dataset's metadata, and what the Preparer needs to honour it.

``DatasetClip`` is a ``ClipSource`` with what such metadata adds, all optional: the frame range
inside the source video, a crop (OpenS2V's watermark-free region), the dataset's own face boxes of
the annotated person, and a stable key (relative path + range, since one long video gives several
clips). ``load_clip_frames`` / ``pick_primary_track`` / ``record_fields`` take any ``ClipSource``:
for the plain folder clips they do exactly what the Preparer did before (whole video, first good
track, no extra record fields)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..pipeline import ClipSkipped, ClipSource

# Our detector's track is the dataset's person when their face boxes overlap this much on average.
MIN_BOX_AGREEMENT = 0.3


@dataclass
class DatasetClip(ClipSource):
    name: str = ""                                   # the key: relative video path + [start:end] (+ #person)
    frame_range: tuple[int, int] | None = None       # [start, end) in source-video frames; None: whole video
    crop: tuple[int, int, int, int] | None = None    # x0, x1, y0, y1 in source pixels; None: full frame
    face_boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)  # source frame -> xyxy
    dataset: str = ""                                # "consisid", "opens2v"
    extra: dict = field(default_factory=dict)        # dataset fields kept in the shard record

    @property
    def key(self) -> str:
        return self.prefix + (self.name or self.path.name)

    def fingerprint(self) -> str:
        """The file's, plus the annotation: an edited range, crop, boxes or caption redoes the clip."""
        spec = json.dumps([self.frame_range, self.crop, sorted(self.face_boxes.items()), self.caption, self.person])
        return f"{super().fingerprint()}:{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def clip_from_entry(entry: dict, input_dir) -> ClipSource:
    """A clip back from its JSON form (its dataclass fields, ``path`` relative to ``input_dir`` or
    absolute; what a preparation plan stores): a ``DatasetClip`` when it came from a dataset reader,
    with the types restored so that its fingerprint is the one it had."""
    path = Path(entry["path"])
    base = {name: entry[name] for name in ClipSource.__dataclass_fields__ if name in entry}   # plans before prefix
    base["path"] = path if path.is_absolute() else Path(input_dir) / path
    if not entry.get("dataset"):
        return ClipSource(**base)
    frame_range, crop = entry.get("frame_range"), entry.get("crop")
    return DatasetClip(**base, name=entry.get("name", ""), dataset=entry["dataset"], extra=dict(entry.get("extra") or {}),
                       frame_range=None if frame_range is None else (int(frame_range[0]), int(frame_range[1])),
                       crop=None if crop is None else tuple(int(v) for v in crop),
                       face_boxes={int(k): tuple(float(v) for v in box) for k, box in (entry.get("face_boxes") or {}).items()})


@dataclass
class ClipFrames:
    frames: np.ndarray          # (N, H, W, 3) uint8, after range, stride and crop
    fps: float                  # of the returned frames (source rate / stride)
    source_frames: list[int]    # the source-video frame number of each returned frame
    origin: tuple[int, int]     # (x0, y0) of the crop in source pixels


def load_clip_frames(clip: ClipSource, frame_stride: int = 1) -> ClipFrames:
    """The clip's frames: only its range of the source video (every ``frame_stride``-th), cropped.
    Raises ``VideoReadError`` (unreadable file, range past the end) and ``ClipSkipped`` (a crop
    outside the frame)."""
    from ...eval.video_io import read_video
    from .frames import read_frame_range

    frame_range = getattr(clip, "frame_range", None)
    if frame_range is None:
        video = read_video(clip.path)
        frames, start = video.frames[::frame_stride], 0
    else:
        start, end = frame_range
        video = read_frame_range(clip.path, start, end, frame_stride)
        frames = video.frames
    origin = (0, 0)
    crop = getattr(clip, "crop", None)
    if crop is not None:
        x0, x1, y0, y1 = crop
        height, width = frames.shape[1:3]
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        if x1 - x0 < 16 or y1 - y0 < 16:
            raise ClipSkipped(f"the dataset's crop {list(crop)} leaves no image inside the {width}x{height} frames")
        frames, origin = np.ascontiguousarray(frames[:, y0:y1, x0:x1]), (x0, y0)
    source_frames = [start + i * frame_stride for i in range(len(frames))]
    return ClipFrames(frames, float(video.fps) / frame_stride, source_frames, origin)


def pick_primary_track(tracks: list, clip: ClipSource, loaded: ClipFrames):
    """The track to train on among the good ones. Without dataset face boxes: the first (the
    Preparer's rule). With them: the track that overlaps the dataset's person most, so a clip with
    several people keeps the one the dataset annotated; ``ClipSkipped`` when none agrees."""
    from ..tracks import iou

    boxes = getattr(clip, "face_boxes", None)
    if not boxes:
        return tracks[0]
    shift = np.array([loaded.origin[0], loaded.origin[1]] * 2, np.float32)
    best, best_score = None, 0.0
    for track in tracks:
        overlaps = [iou(p.bbox, np.asarray(boxes[loaded.source_frames[p.frame]], np.float32) - shift)
                    for p in track.points if loaded.source_frames[p.frame] in boxes]
        score = float(np.mean(overlaps)) if overlaps else 0.0
        if score > best_score:
            best, best_score = track, score
    if best is None or best_score < MIN_BOX_AGREEMENT:
        raise ClipSkipped(f"no detected face track matches the dataset's face boxes of {clip.person or 'the person'} "
                          f"(best mean IoU {best_score:.2f} < {MIN_BOX_AGREEMENT})")
    return best


def record_fields(clip: ClipSource, loaded: ClipFrames, window: tuple[int, int]) -> dict:
    """Shard-record fields that say where the clip came from: for dataset clips the source range,
    the target window in source-video frames, the crop and the dataset's own fields; nothing for
    folder clips (their records stay as they were)."""
    if not isinstance(clip, DatasetClip):
        return {}
    frames = loaded.source_frames
    last = frames[min(window[1], len(frames)) - 1]
    return {"dataset": clip.dataset, "source_range": [frames[0], frames[-1] + 1],
            "source_window": [frames[window[0]], last + 1], "crop": list(clip.crop) if clip.crop else None,
            **clip.extra}
