"""Embedding the faces of one video (81 frames, 832x480): our node vs onnxruntime called directly.

Side by side in one run, on the same pack and the same input (the float IMAGE tensor ComfyUI passes):

- ``node``: IaD Face Embed's ``execute`` (ComfyUI IMAGE tensor in; detection through insightface's
  SCRFD with our retries/selection, alignment, batched 2D-106 + 3D-68 landmarks and pose, ONE
  batched recognizer call, crops, masks, info).
- ``raw``: a hand-written pipeline on bare ``onnxruntime.InferenceSession``s: letterbox + blob,
  detector run, vectorised SCRFD decode + NMS, largest face, similarity alignment, one batched
  run per landmark model (points mapped back, pose from the 3D mean shape), one batched
  recognizer call. Its embeddings are checked against the
  node's (cosine > 0.99), so both do the same work.
- the same pair without landmarks (``FaceAnalyzer.embed_images(landmarks=False)`` vs raw).

Goal: overhead of the node <= 10 %. The generated test pack has tiny graphs, so fixed Python costs
weigh far more than with a real pack; ``--pack`` measures a genuine antelopev2 folder.

    .venv/bin/python benchmarks/bench_face_embed.py [--pack PATH] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]

FRAMES, H, W = 81, 480, 832
DET_SIZE = 640
ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float32)


def make_frames() -> np.ndarray:
    """A test-pattern face moving over a textured background, on the detector's anchor grid."""
    import cv2

    from harness import insightface_pack as ip

    rng = np.random.default_rng(0)
    noise = cv2.resize(rng.uniform(60, 120, (H // 16, W // 16)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    background = np.repeat(noise.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    scale = DET_SIZE / W
    frames = []
    for t in range(FRAMES):
        frame = background.copy()
        ip.draw_face(frame, (256 + 32 * (t % 5)) / scale, 192 / scale, 128 / scale, person=0)
        frames.append(frame)
    return np.stack(frames)


class RawPipeline:
    """What calling onnxruntime directly takes (no insightface, no ComfyUI)."""

    def __init__(self, folder: Path, files: dict[str, Path], landmarks: bool):
        import onnxruntime as ort

        def session(path):
            return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        self.det = session(files["detection"])
        self.rec = session(files["recognition"])
        self.lmk = [session(files[r]) for r in ("landmark_2d_106", "landmark_3d_68") if r in files] if landmarks else []
        self.det_in = self.det.get_inputs()[0].name
        self.rec_in = self.rec.get_inputs()[0].name
        self.anchor_cache: dict = {}

    def _anchors(self, h: int, w: int, stride: int) -> np.ndarray:
        key = (h, w, stride)
        if key not in self.anchor_cache:
            ys, xs = np.mgrid[: h // stride, : w // stride]
            centers = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32) * stride
            self.anchor_cache[key] = np.repeat(centers, 2, axis=0)
        return self.anchor_cache[key]

    def detect(self, bgr: np.ndarray, thresh: float = 0.5):
        import cv2

        h, w = bgr.shape[:2]
        ratio = min(DET_SIZE / w, DET_SIZE / h)
        nw, nh = int(w * ratio), int(h * ratio)
        canvas = np.zeros((DET_SIZE, DET_SIZE, 3), np.uint8)
        canvas[:nh, :nw] = cv2.resize(bgr, (nw, nh))
        blob = cv2.dnn.blobFromImage(canvas, 1 / 128.0, (DET_SIZE, DET_SIZE), (127.5, 127.5, 127.5), swapRB=True)
        outs = self.det.run(None, {self.det_in: blob})
        boxes, kpss, scores = [], [], []
        for i, stride in enumerate((8, 16, 32)):
            s = outs[i].reshape(-1)
            keep = s >= thresh
            if not keep.any():
                continue
            a = self._anchors(DET_SIZE, DET_SIZE, stride)[keep]
            d = outs[i + 3][keep] * stride
            k = outs[i + 6][keep].reshape(-1, 5, 2) * stride
            boxes.append(np.concatenate([a - d[:, :2], a + d[:, 2:]], 1))
            kpss.append(a[:, None, :] + k)
            scores.append(s[keep])
        if not boxes:
            return None
        boxes, kpss, scores = np.concatenate(boxes) / ratio, np.concatenate(kpss) / ratio, np.concatenate(scores)
        order, keep = np.argsort(-scores), []
        while order.size:  # greedy NMS at IoU 0.4, as SCRFD does
            i = order[0]
            keep.append(i)
            xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
            yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
            xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
            yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
            inter = np.maximum(0, xx2 - xx1 + 1) * np.maximum(0, yy2 - yy1 + 1)
            area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
            order = order[1:][inter / (area[i] + area[order[1:]] - inter) <= 0.4]
        areas = [(boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]) for i in keep]
        best = keep[int(np.argmax(areas))]
        return boxes[best], kpss[best]

    def landmarks(self, bgrs: list[np.ndarray], boxes: list[np.ndarray]) -> list:
        """One batched run per landmark model; points mapped back to the frame; pose for 3D-68."""
        import cv2
        from insightface.data import get_object
        from insightface.utils import transform

        mean_shape = get_object("meanshape_68.pkl")
        results = []
        for session in self.lmk:
            size = 192
            crops, inverses = [], []
            for bgr, box in zip(bgrs, boxes):
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                scale = size / (max(box[2] - box[0], box[3] - box[1]) * 1.5)
                m = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]])
                crops.append(cv2.warpAffine(bgr, m, (size, size), borderValue=0.0))
                inverses.append(cv2.invertAffineTransform(m))
            blob = cv2.dnn.blobFromImages(crops, 1 / 128.0, (size, size), (127.5, 127.5, 127.5), swapRB=True)
            preds = session.run(None, {session.get_inputs()[0].name: blob})[0]
            dims = 3 if preds.shape[1] >= 3000 else 2
            points = (preds.reshape(len(crops), -1, dims)[:, -68 if dims == 3 else -106:] + [1] * dims) * (size // 2)
            for pts, inv in zip(points, inverses):
                mapped = pts.copy()
                mapped[:, :2] = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
                if dims == 3:
                    mapped[:, 2] = pts[:, 2] * np.hypot(inv[0, 0], inv[0, 1])
                    _, rotation, _ = transform.P2sRt(transform.estimate_affine_matrix_3d23d(mean_shape, mapped))
                    results.append(transform.matrix2angle(rotation))
                results.append(mapped)
        return results

    def embed(self, image) -> np.ndarray:
        """``image``: the same ComfyUI IMAGE tensor the node gets (float 0..1, RGB)."""
        import cv2

        crops, bgrs, boxes = [], [], []
        for frame in image.numpy():
            bgr = cv2.cvtColor((frame * 255.0 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)
            found = self.detect(bgr)
            if found is None:
                raise RuntimeError("raw pipeline found no face")
            box, kps = found
            m, _ = cv2.estimateAffinePartial2D(kps.astype(np.float32), ARCFACE_DST, method=cv2.LMEDS)
            crops.append(cv2.warpAffine(bgr, m, (112, 112), borderValue=0.0))
            bgrs.append(bgr)
            boxes.append(box)
        if self.lmk:
            self.landmarks(bgrs, boxes)
        blob = cv2.dnn.blobFromImages(crops, 1 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=True)
        z = self.rec.run(None, {self.rec_in: blob})[0]
        return z / np.linalg.norm(z, axis=1, keepdims=True)


def interleaved(runs: dict, repeat: int) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Seconds per round for every run, and each run's last result. Runs alternate within a round
    (in reversed order every other round), so load from other processes hits them alike; ratios
    are taken per round (neighbours in time) and then the median over rounds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, object] = {}
    for round_index in range(repeat):
        order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
        for name in order:
            start = time.perf_counter()
            results[name] = runs[name]()
            times[name].append(time.perf_counter() - start)
    return times, results


def paired_ratio(times: dict[str, list[float]], ours: str, theirs: str) -> float:
    return statistics.median(a / b for a, b in zip(times[ours], times[theirs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, help="a genuine pack folder (default: the generated test pack)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import torch

    from harness import insightface_pack as ip
    from harness.comfy_env import import_pack

    pack = import_pack()
    pack.nodes.collect_nodes()
    face_nodes = sys.modules[f"{pack.__name__}.nodes.face_nodes"]
    fa = face_nodes.fa
    folder = args.pack or ip.ensure_pack(ip.ANTELOPEV2)
    analyzer = fa.FaceAnalyzer.load(str(folder), provider="CPU", det_size=DET_SIZE, cache=False)
    frames = make_frames()
    image = torch.from_numpy(frames).float() / 255.0   # what ComfyUI passes (IMAGE, float 0..1)

    raw = RawPipeline(folder, analyzer.files, landmarks=True)
    raw_plain = RawPipeline(folder, analyzer.files, landmarks=False)
    runs = {
        "node (IaD Face Embed, with landmarks)": lambda: face_nodes.IaDFaceEmbed.execute(analyzer, image).args[0],
        "raw onnxruntime (with landmarks)": lambda: raw.embed(image),
        "engine embed_images (no landmarks)": lambda: analyzer.embed_images(image, landmarks=False),
        "raw onnxruntime (no landmarks)": lambda: raw_plain.embed(image),
    }
    for fn in runs.values():  # warm-up: sessions, static detector shapes, caches
        fn()
    times, results = interleaved(runs, args.repeat)

    ours = results["node (IaD Face Embed, with landmarks)"].embeddings().numpy()
    theirs = results["raw onnxruntime (with landmarks)"]
    agreement = float((ours * theirs).sum(1).min())
    print(f"pack: {folder}  ({analyzer.describe()})")
    print(f"{FRAMES} frames {W}x{H}, {args.repeat} interleaved rounds; CPU threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  {'':40s} {'best':>9s} {'median':>9s}")
    for name, seconds in times.items():
        best, median = min(seconds), statistics.median(seconds)
        print(f"  {name:40s} {best * 1000:7.0f}ms {median * 1000:7.0f}ms  {FRAMES / best:6.1f} frames/s (best)")
    for label, ours_name, raw_name, goal in (
            ("node / raw (with landmarks)", "node (IaD Face Embed, with landmarks)", "raw onnxruntime (with landmarks)", "goal <= +10 %"),
            ("engine / raw (no landmarks)", "engine embed_images (no landmarks)", "raw onnxruntime (no landmarks)", "")):
        paired = paired_ratio(times, ours_name, raw_name)
        best = min(times[ours_name]) / min(times[raw_name])
        print(f"ratio {label}: {paired:.3f} median of per-round ratios, {best:.3f} best/best  "
              f"(overhead {100 * (paired - 1):+.1f} %) {goal}")
    print(f"min cosine between node and raw embeddings of the same frame: {agreement:.4f}")


if __name__ == "__main__":
    main()
