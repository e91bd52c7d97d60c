"""Lynx's face detection colour order: what detecting on RGB (as bytedance/lynx does) instead of BGR
(what insightface expects, and what IaD does) changes, per photo, side by side.

bytedance/lynx ``get_landmarks_from_image`` hands ``np.array(PIL RGB image)`` to insightface's
``FaceAnalysis.get``, whose detector expects BGR. The 5 keypoints it finds then align both of
Lynx's crops (the 112 px IR-SE50 crop and the 256 px ref-adapter crop). IaD's face analysis gives
the detector BGR by default; its loader's detector_colour_order 'RGB (as Lynx's pipeline)' (what the
shipped Lynx workflows use) gives it RGB, as Lynx does. Both orders run through that same code
(``FaceAnalyzer.with_detector_order``). This measures, on the same photos with the same detector and
recognizer:

- the keypoint displacement (mean and max over the 5 points, in pixels of the photo);
- the IR-SE50 embedding: cosine between the embedding of the crop aligned with Lynx's (RGB)
  keypoints and the one aligned with IaD's (BGR) keypoints, the same crop pixels otherwise;
- the ref-adapter crop: mean absolute difference of the two 256 px crops (0-255).

    .venv/bin/python benchmarks/bench_lynx_colour_order.py --insightface ComfyUI/models/insightface \\
        --pack buffalo_l --irse50 ComfyUI/models/facexlib/recognition_arcface_ir_se50.pth photo1.png photo2.jpg

Lynx uses insightface's default pack (``FaceAnalysis()``: buffalo_l) at det_size 640. The numbers
mean something only with the real detector and IR-SE50 weights and real photos; the test suite runs
this script on generated stand-ins to keep it working.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _keypoints(analyzer, rgb: np.ndarray, order: str, min_score: float):
    """The largest face's 5 keypoints, as Lynx picks (largest box), with the detector handed the photo in
    ``order`` (``FaceAnalyzer.with_detector_order``: what the loader's detector_colour_order selects;
    IaD's detection retries, the same for both orders)."""
    faces = analyzer.with_detector_order(order).detect(rgb, min_score=min_score, landmarks=False)
    if not faces:
        return None
    best = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
    return np.asarray(best.kps, dtype=np.float32)


def measure(analyzer, images: dict[str, np.ndarray], min_score: float = 0.5) -> list[dict]:
    """Per photo (RGB uint8): keypoint shift, IR-SE50 cosine, ref-crop difference; ``None`` fields
    where one of the two detections found no face."""
    from iad.face_analysis import align_crop
    from iad.lynx_ref import reference_crop

    rows = []
    for name, rgb in images.items():
        iad_kps, lynx_kps = _keypoints(analyzer, rgb, "BGR", min_score), _keypoints(analyzer, rgb, "RGB", min_score)
        row = {"photo": name, "faces": [iad_kps is not None, lynx_kps is not None]}
        if iad_kps is not None and lynx_kps is not None:
            shift = np.linalg.norm(iad_kps - lynx_kps, axis=1)
            crops = [align_crop(rgb, kps, analyzer.crop_size) for kps in (iad_kps, lynx_kps)]   # RGB crops
            z = analyzer.embed_aligned(crops)
            ref = [reference_crop(rgb, kps).astype(np.float32) for kps in (iad_kps, lynx_kps)]
            row.update(kps_shift_mean=float(shift.mean()), kps_shift_max=float(shift.max()),
                       embedding_cosine=float(torch.nn.functional.cosine_similarity(z[0:1], z[1:2]).item()),
                       ref_crop_mean_abs=float(np.abs(ref[0] - ref[1]).mean()))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--insightface", type=Path, required=True, help="folder holding models/<pack>/*.onnx")
    parser.add_argument("--pack", default="buffalo_l", help="Lynx uses insightface's default, buffalo_l")
    parser.add_argument("--irse50", type=Path, required=True, help="facexlib's recognition_arcface_ir_se50.pth")
    parser.add_argument("--min-score", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from PIL import Image

    from iad.face_analysis import FaceAnalyzer
    from iad.recognizers.irse50 import IRSE50Recognizer, analyzer_with_irse50, load_irse50

    analyzer = analyzer_with_irse50(FaceAnalyzer.load(args.pack, [str(args.insightface)], provider="CPU", cache=False),
                                    IRSE50Recognizer(load_irse50(args.irse50)))
    images = {p.name: np.asarray(Image.open(p).convert("RGB")) for p in args.photos}
    rows = measure(analyzer, images, args.min_score)
    print(f"detector: {args.pack} from {args.insightface}; recognizer: IR-SE50 {args.irse50.name}\n")
    print("| photo | face found (BGR / RGB) | keypoint shift mean / max (px) | IR-SE50 cosine (Lynx vs IaD crop) | 256 px ref crop mean abs diff |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "embedding_cosine" in r:
            print(f"| {r['photo']} | yes / yes | {r['kps_shift_mean']:.2f} / {r['kps_shift_max']:.2f} | "
                  f"{r['embedding_cosine']:.4f} | {r['ref_crop_mean_abs']:.2f} |")
        else:
            print(f"| {r['photo']} | {'yes' if r['faces'][0] else 'no'} / {'yes' if r['faces'][1] else 'no'} | - | - | - |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
