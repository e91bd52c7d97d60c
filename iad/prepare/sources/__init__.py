"""Where ``iad.prepare`` finds its clips: ``discover(input_folder, input_format)``.

- ``folder``: a folder of clips with captions (the package docstring of ``iad.prepare``).
- ``consisid``: ConsisID's training data as published (``consisid.py``).
- ``opens2v``: OpenS2V-5M as published (``opens2v.py``).

Each returns ``(clips, skipped)``: ``ClipSource`` objects (``DatasetClip`` for the public sets,
with the frame range, crop and face boxes from their metadata) and ``{"source", "reason"}`` for
every row that cannot be used (missing video, malformed metadata), naming the file and row. A root
that does not look like the chosen format is a ``ValueError`` saying which file was expected."""

from __future__ import annotations

import os
from pathlib import Path

from .clip import ClipFrames, DatasetClip, clip_from_entry, load_clip_frames, pick_primary_track, record_fields

INPUT_FORMATS = ("folder", "consisid", "opens2v")


def _module(input_format: str):
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"unknown input_format {input_format!r}; known: {', '.join(INPUT_FORMATS)}")
    if input_format == "consisid":
        from . import consisid
        return consisid
    if input_format == "opens2v":
        from . import opens2v
        return opens2v
    return None


def layout_problem(input_folder: str | os.PathLike, input_format: str = "folder") -> str | None:
    """Why ``input_folder`` cannot be read as ``input_format`` (cheap: file checks only), or None."""
    module = _module(input_format)
    root = Path(input_folder)
    if module is None:
        return None if root.is_dir() else f"input folder {str(root)!r} does not exist"
    return module.layout_problem(root)


def discover(input_folder: str | os.PathLike, input_format: str = "folder") -> tuple[list, list[dict]]:
    module = _module(input_format)
    if module is None:
        from ..pipeline import discover_clips

        return discover_clips(input_folder)
    return module.discover(input_folder)


__all__ = ["INPUT_FORMATS", "discover", "layout_problem", "DatasetClip", "ClipFrames", "clip_from_entry",
           "load_clip_frames", "pick_primary_track", "record_fields"]
