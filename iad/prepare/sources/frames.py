"""Reading only a frame range ``[start, end)`` of a video: public datasets annotate clips as frame
ranges inside long source videos (OpenS2V-5M's ``cut`` / ``face_cut``), and decoding a whole
long video to keep a few seconds of it would hold every frame in memory.

Frame ``i`` means the ``i``-th frame in presentation order, counted from 0 (what decord's
``VideoReader[i]``, used by those datasets' own loaders, returns). Video files are read with PyAV:
a seek to the keyframe before ``start``, then frames are numbered from their timestamps. When a
stream has no usable timestamps or rate, or the seek lands past ``start``, the file is decoded from
the beginning and frames are counted instead (slower, same frames). Folders of numbered frames
read only the files in the range."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...eval.video_io import DEFAULT_FPS, IMAGE_SUFFIXES, Video, VideoReadError, natural_key, read_image


def read_frame_range(path: str | Path, start: int = 0, end: int | None = None, stride: int = 1) -> Video:
    """Frames ``start, start + stride, ...`` below ``end`` (``None``: to the last frame) of a video
    file or frame folder. A range that begins after the last frame is a ``VideoReadError``; one
    that runs past it returns the frames that exist (``Video.num_frames`` says how many)."""
    path = Path(path)
    if start < 0 or (end is not None and end <= start) or stride < 1:
        raise ValueError(f"bad frame range [{start}, {end}) / stride {stride} for {path}")
    if not path.exists():
        raise VideoReadError(f"{path}: does not exist")
    if path.is_dir():
        return _read_folder_range(path, start, end, stride)
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: the file is empty (0 bytes): the download or the copy did not finish")
    return _read_file_range(path, start, end, stride)


def _read_folder_range(path: Path, start: int, end: int | None, stride: int) -> Video:
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if start >= len(files):
        raise VideoReadError(f"{path}: the range starts at frame {start} but the folder has {len(files)} frames")
    frames = [read_image(f) for f in files[start:end:stride]]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise VideoReadError(f"{path}: frames have different sizes {sorted(sizes)[:4]}; a video's frames must match")
    return Video(np.stack(frames), DEFAULT_FPS, str(path), fps_known=False)


def _read_file_range(path: Path, start: int, end: int | None, stride: int) -> Video:
    frames, fps = _decode(path, start, end, stride, seek=start > 0)
    if frames is None:   # no timestamps to number frames by, or the seek overshot: count from frame 0
        frames, fps = _decode(path, start, end, stride, seek=False)
    if not frames:
        raise VideoReadError(f"{path}: no frame at or after frame {start} (the video is shorter than its annotation)")
    return Video(np.stack(frames), float(fps or DEFAULT_FPS), str(path), fps_known=bool(fps))


def _decode(path: Path, start: int, end: int | None, stride: int, seek: bool) -> tuple[list | None, float | None]:
    """Decoded frames of the range and the stream's rate; ``(None, rate)`` when frames cannot be
    numbered by timestamp after a seek (the caller then decodes from the start)."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoReadError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from exc
    frames: list[np.ndarray] = []
    with container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        if end is None and not seek:
            # Frame threading only where the loop runs to the end: leaving a frame-threaded decoder
            # early can hang forever in avcodec_free_context once torchvision (which ComfyUI imports)
            # is loaded with its own FFmpeg (PyAV#1849, pytorch/vision#9010; seen with torchvision
            # 0.21). Ranges keep PyAV's slice threading.
            stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        base = stream.time_base
        first = stream.start_time or 0
        if seek:
            if not (rate and base):
                return None, fps
            container.seek(first + int(start / rate / base), stream=stream, backward=True, any_frame=False)
        count = -1
        try:
            for frame in container.decode(stream):
                count += 1
                if seek:
                    if frame.pts is None:
                        return None, fps
                    index = int(round(float((frame.pts - first) * base * rate)))
                    if count == 0 and index > start:   # landed after the range start
                        return None, fps
                else:
                    index = count
                if end is not None and index >= end:
                    break
                if index >= start and (index - start) % stride == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
        except (av.error.FFmpegError, ValueError) as exc:
            if not frames:
                raise VideoReadError(f"{path}: decoding failed before frame {start} ({exc}); the file is corrupt or "
                                     "truncated") from exc
            # A truncated file: keep what decoded (the record says how many frames were read).
    return frames, fps
