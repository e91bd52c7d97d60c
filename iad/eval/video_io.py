"""Reading generated videos for evaluation: video files through PyAV (installed with ComfyUI),
folders of numbered frames through Pillow. Every failure is a ``VideoReadError`` naming the file
and the likely fix, so a batch run can report it and go on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_FPS = 16.0   # Wan's native frame rate: used for frame folders, which carry none


class VideoReadError(RuntimeError):
    """A video (or frame folder) could not be read; the message says which and why."""


@dataclass
class Video:
    frames: np.ndarray     # (N, H, W, 3) uint8 RGB
    fps: float
    source: str
    fps_known: bool = True

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def is_video_source(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    return path.suffix.lower() in VIDEO_SUFFIXES


def read_video(path: str | Path, fps: float | None = None, max_frames: int | None = None) -> Video:
    """``path``: a video file or a folder of frames (sorted by natural order: frame_2 < frame_10).
    ``fps`` overrides the container's frame rate (and is the rate assumed for frame folders)."""
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"{path}: does not exist")
    if path.is_dir():
        return _read_frame_folder(path, fps, max_frames)
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: the file is empty (0 bytes): the generation or the copy did not finish")
    return _read_video_file(path, fps, max_frames)


def _read_frame_folder(path: Path, fps: float | None, max_frames: int | None) -> Video:
    from PIL import Image, UnidentifiedImageError

    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
    if not files:
        raise VideoReadError(f"{path}: folder has no frames ({', '.join(IMAGE_SUFFIXES)})")
    frames = []
    for file in files[:max_frames]:
        try:
            with Image.open(file) as img:
                frames.append(np.asarray(img.convert("RGB")))
        except (UnidentifiedImageError, OSError) as exc:
            raise VideoReadError(f"{file}: frame is not a readable image ({exc})") from exc
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise VideoReadError(f"{path}: frames have different sizes {sorted(sizes)[:4]}; a video's frames must match")
    return Video(np.stack(frames), float(fps or DEFAULT_FPS), str(path), fps_known=fps is not None)


def _read_video_file(path: Path, fps: float | None, max_frames: int | None) -> Video:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoReadError(f"{path}: not a readable video ({type(exc).__name__}: {exc}); "
                             "re-export it as mp4 (H.264) or webm, or as a folder of PNG frames") from exc
    frames = []
    try:
        with container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: the file has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            try:
                for frame in container.decode(stream):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if max_frames and len(frames) >= max_frames:
                        break
            except (av.error.FFmpegError, ValueError) as exc:
                if not frames:
                    raise VideoReadError(f"{path}: decoding failed before the first frame ({exc}); "
                                         "the file is corrupt or truncated") from exc
                # A truncated file: keep what decoded, the report says how many frames were read.
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"{path}: decoding failed ({exc}); the file is corrupt or truncated") from exc
    if not frames:
        raise VideoReadError(f"{path}: the video stream has no decodable frames")
    container_fps = float(rate) if rate else None
    return Video(np.stack(frames), float(fps or container_fps or DEFAULT_FPS), str(path),
                 fps_known=bool(fps or container_fps))


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, or ``VideoReadError`` naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB")).copy()
    except FileNotFoundError as exc:
        raise VideoReadError(f"{path}: reference image does not exist") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoReadError(f"{path}: not a readable image ({exc})") from exc


def write_video(path: str | Path, frames: np.ndarray, fps: float = DEFAULT_FPS, codec: str | None = None) -> Path:
    """Encode (N, H, W, 3) uint8 frames (used by tests and the benchmark to make inputs)."""
    import av
    from fractions import Fraction

    path = Path(path)
    codec = codec or {".webm": "libvpx-vp9", ".gif": "gif"}.get(path.suffix.lower(), "libx264")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p" if codec != "gif" else "rgb8"
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
