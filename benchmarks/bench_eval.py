"""Evaluation speed on an 81-frame 480p (832x480, Wan's default) video on the CPU, frames/second.

Measured in one run, side by side: decoding the mp4, face analysis (the real insightface engine
in iad.face_analysis on the generated test pack: real SCRFD post-processing, alignment, batched
recognizer and landmark calls, but tiny ONNX graphs), motion (Farneback at full resolution plus
VBench's 8-fps resampled pairs), and the whole ``evaluate_video`` with every frame vs ConsisID's
16 frames. Genuine antelopev2 graphs are far heavier than the tiny ones: with them the face stage
dominates; ``--face-pack`` measures a real pack when you have one.

    .venv/bin/python benchmarks/bench_eval.py [--face-pack PATH] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

FRAMES, H, W, FPS = 81, 480, 832, 16.0


def make_video() -> np.ndarray:
    """A face of the test pack's pattern over a smooth textured background panning 2 px/frame.
    (The tiny test detector fires only on faces at its anchor positions, so the camera moves.)"""
    import cv2

    from harness import insightface_pack as ip

    rng = np.random.default_rng(0)
    noise = cv2.resize(rng.uniform(60, 120, (H // 4, W // 4)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    background = np.repeat(np.clip(noise, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    scale = 640 / W      # face of 64 px in the 640-px detector input, where the tiny detector fires first try
    frames = []
    for t in range(FRAMES):
        frame = np.roll(background, 2 * t, axis=1)
        ip.draw_face(frame, 320 / scale, 176 / scale, 64 / scale, person=0)
        frames.append(frame)
    return np.stack(frames)


def timed(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--face-pack", type=Path, default=None, help="a real insightface pack folder (default: generated)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best is reported")
    args = parser.parse_args()

    import torch

    from harness import insightface_pack as ip
    from iad.eval import ReferenceFaces, evaluate_video
    from iad.eval.analysis import analyse_frames
    from iad.eval.video_io import read_video, write_video
    from iad.face_analysis import FaceAnalyzer
    from iad.metrics.motion import motion_metrics
    from iad.plotting import plot_report

    torch.set_num_threads(max(1, torch.get_num_threads()))
    pack = args.face_pack or ip.ensure_pack(ip.ANTELOPEV2)
    analyzer = FaceAnalyzer.load(str(pack), provider="CPU", det_size=640, cache=False)
    frames = make_video()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "bench.mp4", frames, fps=FPS)
        t_decode, video = timed(lambda: read_video(path), args.repeat)
    frames = video.frames
    reference = ReferenceFaces.from_images(analyzer, [frames[0]])
    analyzer.detect(frames[0])    # warm-up: onnxruntime's first run allocates

    t_faces, found = timed(lambda: analyse_frames(analyzer, frames, range(FRAMES)), args.repeat)
    assert all(f.face is not None for f in found), "the benchmark face was not detected in every frame"
    t_motion, motion_full = timed(lambda: motion_metrics(frames, FPS), args.repeat)
    t_motion_half, motion_half = timed(lambda: motion_metrics(frames, FPS, flow_scale=0.5), args.repeat)
    t_all, report = timed(lambda: evaluate_video(frames, analyzer, reference, FPS, sampling="all"), args.repeat)
    t_16, _ = timed(lambda: evaluate_video(frames, analyzer, reference, FPS, sampling="consisid16"), args.repeat)
    t_all_half, _ = timed(lambda: evaluate_video(frames, analyzer, reference, FPS, flow_scale=0.5), args.repeat)
    t_plot, _ = timed(lambda: plot_report(report), args.repeat)

    fps = lambda seconds: FRAMES / seconds  # noqa: E731
    print(f"IaD evaluation benchmark: {FRAMES} frames {W}x{H}, CPU ({torch.get_num_threads()} torch threads), "
          f"face pack {analyzer.embedder} ({'generated tiny graphs' if args.face_pack is None else pack})")
    print(f"{'stage':44s} {'seconds':>8s} {'frames/s':>9s}")
    rows = [
        ("decode mp4 (PyAV)", t_decode),
        ("face analysis, every frame (insightface)", t_faces),
        ("motion: Farneback + 8-fps dynamic degree", t_motion),
        ("motion, flow at half resolution", t_motion_half),
        ("plot (Pillow)", t_plot),
        ("evaluate_video, every frame", t_all),
        ("evaluate_video, ConsisID 16 frames", t_16),
        ("evaluate_video, every frame, half-res flow", t_all_half),
        ("decode + evaluate every frame + plot", t_decode + t_all + t_plot),
    ]
    for name, seconds in rows:
        print(f"{name:44s} {seconds:8.2f} {fps(seconds):9.1f}")
    print(f"ratio every-frame / ConsisID-16 evaluation time: {t_all / t_16:.2f}x")
    print(f"ratio full / half-resolution flow time: {t_motion / t_motion_half:.2f}x; mean |flow| "
          f"{motion_full.video_mean_magnitude:.3f} vs {motion_half.video_mean_magnitude:.3f} px, dynamic "
          f"{motion_full.dynamic} vs {motion_half.dynamic}")
    print(f"time split of the every-frame stages: faces {t_faces / (t_faces + t_motion):.0%}, "
          f"motion {t_motion / (t_faces + t_motion):.0%}")


if __name__ == "__main__":
    main()
