"""``python -m iad.eval``: evaluate a folder of generated videos against their reference photos.

Layout (defaults; every path can be given explicitly)::

    videos/
      clip_a.mp4            video files (.mp4 .webm .mkv .mov .avi .gif) ...
      clip_b/               ... or folders of numbered frames (.png .jpg .webp)
      clip_a.txt            optional prompt for clip_a (or --prompts prompts.json / .csv)
      references/clip_a.png reference photo per video, or references/reference.png for all
                            (or --reference photo.png, or --reference folder/)

Writes ``<out>/report.md``, ``report.csv``, and per video ``<name>.json`` and ``<name>.png``
(the per-frame curves). A corrupt video, a missing reference or a video without faces is
reported on its own row; the batch goes on. Exit code 0 when every video was evaluated, 1 when
some failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# torch and the metrics load only once the arguments are good (`--help` and usage errors answer at once)
from .sampling import SAMPLING_ALL, SAMPLINGS
from .video_io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoReadError, is_video_source, natural_key, read_image, read_video

TABLE_COLUMNS = ("video", "status", "frames", "facesim_mean", "facesim_min", "face_fraction", "identity_stability",
                 "copy_paste_rate", "expression_distance", "expression_variability", "motion", "dynamic", "clip_t",
                 "drift_first_second", "drift_last_second", "drift_drop", "drift_slope_per_s", "drift_slope_ci_low",
                 "drift_slope_ci_high", "worst_window", "worst_window_facesim", "face_model", "message")


@dataclass
class Outcome:
    name: str
    row: dict
    ok: bool


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m iad.eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", type=Path, help="folder of videos / frame folders (or a single video)")
    p.add_argument("--reference", type=Path, default=None,
                   help="reference photo for every video, or a folder with <video name>.png per video "
                        "(default: <videos>/references/)")
    p.add_argument("--prompts", type=Path, default=None,
                   help="JSON {video name: prompt} or CSV with columns video,prompt (default: <video name>.txt)")
    p.add_argument("--face-pack", type=Path, default=None,
                   help="insightface model pack folder (e.g. ComfyUI/models/insightface/models/antelopev2) or name")
    p.add_argument("--provider", default="auto", help="onnxruntime execution provider: auto, CPU, CUDA, ...")
    p.add_argument("--det-size", type=int, default=640, help="face detection size in pixels")
    p.add_argument("--sampling", choices=SAMPLINGS, default=SAMPLING_ALL,
                   help="all frames, or consisid16: ConsisID's 16 uniform frames with cosines clipped at 0")
    p.add_argument("--fps", type=float, default=None, help="override the frame rate (frame folders default to 16)")
    p.add_argument("--flow-scale", type=float, default=1.0,
                   help="compute optical flow at this fraction of the resolution (0.5: ~4x faster motion metrics)")
    p.add_argument("--window-frames", type=int, default=0,
                   help="the videos were made in windows (context windows, extension) of this many video frames: "
                        "report each window's identity and the worst window (0: not made in windows)")
    p.add_argument("--window-overlap", type=int, default=0, help="video frames two neighbouring windows share")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <videos>/iad-eval)")
    p.add_argument("--no-plots", action="store_true", help="skip the per-video curve images")
    return p


def find_videos(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    skip = {"references", "iad-eval"}
    found = [p for p in root.iterdir() if p.name not in skip and not p.name.startswith(".")
             and ((p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or (p.is_dir() and is_video_source(p)))]
    return sorted(found, key=natural_key)


def video_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def load_prompts(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{video name: prompt}}")
        return {Path(k).stem if Path(k).suffix else k: str(v) for k, v in data.items()}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"video", "prompt"} <= set(rows[0]):
        raise ValueError(f"{path}: the CSV needs the columns video,prompt; found {list(rows[0])}")
    return {Path(r["video"]).stem if Path(r["video"]).suffix else r["video"]: r["prompt"] for r in rows}


def find_reference(video: Path, name: str, reference: Path | None, videos_root: Path) -> Path:
    folder = reference if reference is not None else (videos_root if videos_root.is_dir() else videos_root.parent) / "references"
    if reference is not None and reference.is_file():
        return reference
    if not folder.is_dir():
        raise FileNotFoundError(f"no reference photo for {name}: {folder} is not a folder; pass --reference photo.png "
                                "or put <video name>.png in a references/ folder next to the videos")
    for stem in (name, "reference"):
        for suffix in IMAGE_SUFFIXES:
            for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    raise FileNotFoundError(f"no reference photo for {name}: expected {folder}/{name}.png (or .jpg/.webp) or "
                            f"{folder}/reference.png")


def load_face_analyzer(args):
    """The insightface analyser (``iad.face_analysis.FaceAnalyzer``) on ``--face-pack``: a pack
    folder path, or a pack name looked up under ``IAD_INSIGHTFACE_ROOT`` and ``~/.insightface``."""
    from ..face_analysis import FaceAnalyzer

    if args.face_pack is None:
        raise ValueError("--face-pack is required: the folder of an insightface pack, e.g. "
                         "ComfyUI/models/insightface/models/antelopev2 (or a pack name under IAD_INSIGHTFACE_ROOT)")
    pack = str(args.face_pack.resolve()) if args.face_pack.exists() else str(args.face_pack)
    return FaceAnalyzer.load(pack, provider=args.provider, det_size=args.det_size, cache=False)


class _Progress:
    """tqdm when available (ComfyUI installs it), else a plain counter on stderr."""

    def __init__(self, total: int):
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="video", file=sys.stderr)
        except ImportError:
            self._bar = None
        self.total, self.done = total, 0

    def step(self, name: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(name[:30])
            self._bar.update(1)
        else:
            print(f"[{self.done}/{self.total}] {name}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.4f}"
    return str(value)


def write_tables(outcomes: list[Outcome], out: Path, face_model: str, sampling: str) -> tuple[Path, Path]:
    csv_path, md_path = out / "report.csv", out / "report.md"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        for o in outcomes:
            writer.writerow({k: _format(o.row.get(k)) for k in TABLE_COLUMNS})
    md_columns = [c for c in TABLE_COLUMNS if c not in ("face_model",)]
    lines = [
        "# IaD evaluation", "",
        f"Face model: `{face_model}`; frame sampling: `{sampling}`; metric definitions: docs/metrics.md", "",
        "| " + " | ".join(md_columns) + " |", "|" + "---|" * len(md_columns),
    ]
    for o in outcomes:
        cells = [_format(o.row.get(k)).replace("|", "\\|").replace("\n", " ") for k in md_columns]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [o for o in outcomes if not o.ok]
    lines += ["", f"{len(outcomes) - len(failed)} of {len(outcomes)} videos evaluated."]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md_path, csv_path


def evaluate_one(path: Path, args, analyzer, prompts: dict[str, str], out: Path) -> Outcome:
    from .analysis import ReferenceFaces
    from .evaluate import evaluate_video

    name = video_name(path)
    try:
        video = read_video(path, fps=args.fps)
        ref_path = find_reference(path, name, args.reference, args.videos)
        reference = ReferenceFaces.from_images(analyzer, [read_image(ref_path)], [str(ref_path)])
        prompt = prompts.get(name)
        if prompt is None and path.is_file() and path.with_suffix(".txt").is_file():
            prompt = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
        report = evaluate_video(video.frames, analyzer, reference, video.fps, prompt=prompt, sampling=args.sampling,
                                source=path.name, flow_scale=args.flow_scale, window_frames=args.window_frames,
                                window_overlap=args.window_overlap)
        if not video.fps_known:
            report.notes.append(f"frame rate unknown, assumed {video.fps:g} fps (pass --fps)")
        report.notes.append("CLIP-T needs CLIP models loaded through ComfyUI: use the IaD Evaluate Video node")
        (out / f"{name}.json").write_text(report.to_json(), encoding="utf-8")
        if not args.no_plots:
            from ..plotting import plot_report

            plot_report(report).save(out / f"{name}.png")
        row = report.summary_row()
        message = []
        if report.facesim.face_fraction == 0:
            message.append("no face detected in any evaluated frame")
        elif report.facesim.frames_without_face:
            message.append(f"no face in {len(report.facesim.frames_without_face)} frame(s)")
        if report.expression is None:
            message.append(report.expression_skipped)
        row.update(video=path.name, status="ok", message="; ".join(message))
        return Outcome(name, row, True)
    except (VideoReadError, FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        return Outcome(name, {"video": path.name, "status": "error", "message": str(exc)}, False)
    except Exception as exc:  # one bad file must not end the batch: report it with its type
        return Outcome(name, {"video": path.name, "status": "error", "message": f"{type(exc).__name__}: {exc}"}, False)


def main(argv: list[str] | None = None, analyzer=None) -> int:
    """``analyzer``: an already-loaded face analyser (anything with ``detect(image)``), for
    programmatic use; otherwise ``--face-pack`` is loaded."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.videos.exists():
        parser.error(f"{args.videos} does not exist")
    if args.window_frames < 0 or not 0 <= args.window_overlap < max(args.window_frames, 1):
        print(f"error: --window-overlap ({args.window_overlap}) must be at least 0 and below --window-frames "
              f"({args.window_frames}); give --window-frames for a video made in windows", file=sys.stderr)
        return 2
    try:
        prompts = load_prompts(args.prompts)
        if analyzer is None:
            analyzer = load_face_analyzer(args)
    except (ValueError, FileNotFoundError, RuntimeError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    videos = find_videos(args.videos)
    if not videos:
        print(f"error: no videos in {args.videos} (looked for {', '.join(VIDEO_SUFFIXES)} and frame folders)",
              file=sys.stderr)
        return 2
    out = args.out or ((args.videos if args.videos.is_dir() else args.videos.parent) / "iad-eval")
    out.mkdir(parents=True, exist_ok=True)
    from .analysis import face_model_name

    progress, outcomes, start = _Progress(len(videos)), [], time.perf_counter()
    for path in videos:
        outcome = evaluate_one(path, args, analyzer, prompts, out)
        outcomes.append(outcome)
        if not outcome.ok:
            print(f"\n{path.name}: {outcome.row['message']}", file=sys.stderr)
        progress.step(path.name)
    progress.close()
    md, csv_path = write_tables(outcomes, out, face_model_name(analyzer), args.sampling)
    failed = sum(not o.ok for o in outcomes)
    print(f"{len(outcomes) - failed}/{len(outcomes)} videos evaluated in {time.perf_counter() - start:.1f} s -> {md}, "
          f"{csv_path}")
    return 1 if failed else 0
