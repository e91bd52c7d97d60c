"""A tiny, deterministic insightface-format model pack, and the face-like pattern it detects.

Real packs (antelopev2, buffalo_l) can never be downloaded here, so the tests generate ONNX files
that insightface routes exactly like the real ones (``insightface.model_zoo`` decides by shape):

- ``scrfd_10g_bnkps.onnx`` / ``det_10g.onnx``: SCRFD detector, input ``[1, 3, ?, ?]``, 9 outputs
  (scores, bboxes, kps for strides 8/16/32, 2 anchors per location; 6 without kps on request).
  Each stride scores the normalised cross-correlation of its window with the pattern ``draw_face``
  paints, at face size 4*stride (32/64/128 px in the detector's input): it fires on that pattern
  near an anchor (score 0.98 on the grid), not on real photos (t1.jpg, astronaut.png), not on a
  face whose dark ring is cut off by the image border (a tight crop: found after padding).
- ``2d106det.onnx`` (input 192, 212 outputs) and ``1k3d68.onnx`` (input 192, 3309 outputs: the
  last 68*3 are insightface's own mean 3D shape, so the pose comes out near frontal).
- ``genderage.onnx`` (input 96, 3 outputs).
- ``glintr100.onnx`` / ``w600k_r50.onnx``: ArcFace-style recognizer, input ``[N, 3, 112, 112]``
  (dynamic batch), 512 outputs: a seeded random projection of the 8x8-pooled aligned crop, so
  the same drawn "person" gives nearly the same embedding and differently coloured persons
  (same brightness, different hue) give dissimilar ones.

Files are seeded, written atomically and cached under ``.cache/insightface-packs/<key>/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .paths import CACHE_DIR

GENERATOR_VERSION = 4
PACKS_DIR = CACHE_DIR / "insightface-packs"
STRIDES = (8, 16, 32)
FACE_CELLS = 16          # the face box spans 16 sub-cells of stride/4 in the matched filter
RING_CELLS = 2           # plus a dark ring of 2 sub-cells on every side
MATCH_THRESHOLD = 0.85     # normalised cross-correlation with the ideal pattern that scores 0.5
DETECTOR_GAIN = 25.0      # score = sigmoid(gain * (ncc - threshold)): a perfect match scores 0.977

# Skin colours of the test "persons": equal brightness (the detector sees only brightness),
# different hue (the recognizer sees only colour), so identity is independent of detectability.
# Hues step by 120 degrees between consecutive persons: persons 0, 1, 2 are mutually dissimilar
# (embedding cosine about -0.5); persons 0 and 3 are 60 degrees apart (cosine about 0.5).
def _hue_colour(degrees: float, brightness: float = 180.0, chroma: float = 60.0) -> tuple[int, int, int]:
    a = np.deg2rad(degrees)
    u = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
    v = np.array([1.0, 1.0, -2.0]) / np.sqrt(6.0)
    rgb = brightness + chroma * (np.cos(a) * u + np.sin(a) * v)
    return tuple(int(round(c)) for c in rgb)


PERSON_COLOURS = tuple(_hue_colour(d) for d in (0, 120, 240, 60, 180, 300))
# Five keypoints in units of the face half-size, relative to the face centre (image-left eye first).
KPS_UNITS = np.array([[-0.38, -0.2], [0.38, -0.2], [0.0, 0.12], [-0.3, 0.42], [0.3, 0.42]], dtype=np.float32)

ANTELOPEV2_FILES = {
    "detection": "scrfd_10g_bnkps.onnx", "landmark_2d_106": "2d106det.onnx", "landmark_3d_68": "1k3d68.onnx",
    "genderage": "genderage.onnx", "recognition": "glintr100.onnx",
}
BUFFALO_L_FILES = {
    "detection": "det_10g.onnx", "landmark_2d_106": "2d106det.onnx", "landmark_3d_68": "1k3d68.onnx",
    "genderage": "genderage.onnx", "recognition": "w600k_r50.onnx",
}


@dataclass(frozen=True)
class PackSpec:
    name: str = "antelopev2"
    roles: tuple[str, ...] = ("detection", "landmark_2d_106", "landmark_3d_68", "genderage", "recognition")
    detector_kps: bool = True
    seed: int = 0
    # The detector's weights for the channels it receives (insightface hands it RGB, swapped from
    # the BGR photo). None: their plain mean, so the stand-in sees only brightness and any channel
    # order detects alike; (1, 0, 0) sees only red, like a real detector that colour matters to.
    detector_channels: tuple[float, float, float] | None = None

    @property
    def files(self) -> dict[str, str]:
        table = BUFFALO_L_FILES if self.name == "buffalo_l" else ANTELOPEV2_FILES
        return {role: table[role] for role in self.roles}


ANTELOPEV2 = PackSpec("antelopev2")
BUFFALO_L = PackSpec("buffalo_l", seed=1)
# buffalo_l whose detector sees colour (red only): the detector's input colour order matters.
BUFFALO_L_RED_DETECTOR = PackSpec("buffalo_l", seed=1, detector_channels=(1.0, 0.0, 0.0))


# -- the pattern the detector fires on ---------------------------------------------------------------
def draw_face(image: np.ndarray, cx: float, cy: float, size: float, person: int = 0, ring: bool = True,
              colour: tuple[int, int, int] | None = None) -> np.ndarray:
    """Paint the test face (in place, RGB uint8): a skin disc of diameter ``size`` centred at
    (cx, cy) with dark eyes and mouth, inside a dark square ring. Returns the face bbox.
    ``colour`` overrides the person's skin colour (keep its brightness at 180 to stay detectable
    the same way: see ``_hue_colour``)."""
    import cv2

    h = size / 2.0
    colour = PERSON_COLOURS[person % len(PERSON_COLOURS)] if colour is None else colour
    shift = 4  # sub-pixel precision for cv2 drawing
    f = float(1 << shift)

    def pt(x, y):
        return int(round(x * f)), int(round(y * f))

    if ring:
        r = h * (FACE_CELLS + 2 * RING_CELLS) / FACE_CELLS
        cv2.rectangle(image, pt(cx - r, cy - r), pt(cx + r, cy + r), (12, 12, 12), -1, cv2.LINE_AA, shift)
    cv2.circle(image, pt(cx, cy), int(round(h * f)), colour, -1, cv2.LINE_AA, shift)
    eye_r = int(round(0.16 * h * f))
    for ex, ey in KPS_UNITS[:2]:
        cv2.circle(image, pt(cx + ex * h, cy + ey * h), eye_r, (20, 20, 20), -1, cv2.LINE_AA, shift)
    axes = (int(round(0.34 * h * f)), int(round(0.1 * h * f)))
    cv2.ellipse(image, pt(cx, cy + 0.42 * h), axes, 0, 0, 360, (30, 20, 20), -1, cv2.LINE_AA, shift)
    return np.array([cx - h, cy - h, cx + h, cy + h], dtype=np.float32)


def face_image(size: int = 320, face: float = 64, person: int = 0, background: int = 90,
               centre: tuple[float, float] | None = None) -> np.ndarray:
    """A square RGB uint8 image with one test face (the usual reference photo of the tests). The
    default (a 64 px face centred in 320 px) is a 128 px face on the anchor grid at detection size 640."""
    image = np.full((size, size, 3), background, dtype=np.uint8)
    cx, cy = centre if centre is not None else (size / 2, size / 2)
    draw_face(image, cx, cy, face, person)
    return image


def _template() -> np.ndarray:
    """The matched filter: the ideal pattern's brightness at sub-cell resolution (20x20: the 16-cell
    face plus its 2-cell dark ring), zero-mean and unit-norm, so the graph's normalised
    cross-correlation is 1.0 on the ideal pattern and about 0.6 at most on real photos."""
    cells = FACE_CELLS + 2 * RING_CELLS
    scale = 8
    canvas = np.zeros((cells * scale, cells * scale, 3), dtype=np.uint8)
    draw_face(canvas, cells * scale / 2, cells * scale / 2, FACE_CELLS * scale, person=0)
    lum = canvas.astype(np.float32).mean(-1).reshape(cells, scale, cells, scale).mean((1, 3))
    ideal = (lum - 127.5) / 128.0
    template = ideal - ideal.mean()
    return (template / np.linalg.norm(template)).astype(np.float32)


# -- ONNX graphs -------------------------------------------------------------------------------------
def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def _model(graph, opset: int = 17):
    onnx, _, helper, _ = _onnx()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="iad-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_detector(with_kps: bool = True, channels: tuple[float, float, float] | None = None):
    onnx, TensorProto, helper, numpy_helper = _onnx()
    template = _template()
    lum_w = (np.full((1, 3, 1, 1), 1.0 / 3.0, np.float32) if channels is None
             else np.asarray(channels, np.float32).reshape(1, 3, 1, 1))
    inits = [
        numpy_helper.from_array(lum_w, "lum_w"),
        numpy_helper.from_array(template[None, None], "match_w"),
        numpy_helper.from_array(np.ones((1, 1) + template.shape, np.float32), "window_w"),
        numpy_helper.from_array(np.array(float(template.size), np.float32), "window_n"),
        numpy_helper.from_array(np.array(1e-4, np.float32), "eps"),
        numpy_helper.from_array(np.array(DETECTOR_GAIN, np.float32), "gain"),
        numpy_helper.from_array(np.array(MATCH_THRESHOLD, np.float32), "threshold"),
        numpy_helper.from_array(np.zeros((8, 1, 1, 1), np.float32), "box_w"),
        numpy_helper.from_array(np.full((8,), FACE_CELLS / 8.0, np.float32), "box_b"),  # 2 strides each side
        numpy_helper.from_array(np.zeros((20, 1, 1, 1), np.float32), "kps_w"),
        numpy_helper.from_array(np.tile((KPS_UNITS * 2.0).reshape(-1), 2).astype(np.float32), "kps_b"),
        numpy_helper.from_array(np.array([-1, 1], np.int64), "shape1"),
        numpy_helper.from_array(np.array([-1, 4], np.int64), "shape4"),
        numpy_helper.from_array(np.array([-1, 10], np.int64), "shape10"),
    ]
    nodes = [helper.make_node("Conv", ["input.1", "lum_w"], ["lum"], name="luminance")]
    scores, boxes, kpss = [], [], []
    pads = [RING_CELLS + FACE_CELLS // 2] * 2 + [RING_CELLS + FACE_CELLS // 2 - 4] * 2
    for s in STRIDES:
        p = s // 4
        nodes += [
            helper.make_node("AveragePool", ["lum"], [f"pool{s}"], kernel_shape=[p, p], strides=[p, p], name=f"pool{s}"),
            # normalised cross-correlation with the template over each anchor's window
            helper.make_node("Conv", [f"pool{s}", "match_w"], [f"dot{s}"], strides=[4, 4], pads=pads, name=f"dot{s}"),
            helper.make_node("Conv", [f"pool{s}", "window_w"], [f"sum{s}"], strides=[4, 4], pads=pads, name=f"sum{s}"),
            helper.make_node("Mul", [f"pool{s}", f"pool{s}"], [f"sq{s}"], name=f"sq{s}"),
            helper.make_node("Conv", [f"sq{s}", "window_w"], [f"sumsq{s}"], strides=[4, 4], pads=pads, name=f"sumsq{s}"),
            helper.make_node("Mul", [f"sum{s}", f"sum{s}"], [f"sum2{s}"], name=f"sum2{s}"),
            helper.make_node("Div", [f"sum2{s}", "window_n"], [f"meansq{s}"], name=f"meansq{s}"),
            helper.make_node("Sub", [f"sumsq{s}", f"meansq{s}"], [f"var{s}"], name=f"var{s}"),
            helper.make_node("Max", [f"var{s}", "eps"], [f"varc{s}"], name=f"varc{s}"),
            helper.make_node("Sqrt", [f"varc{s}"], [f"std{s}"], name=f"std{s}"),
            helper.make_node("Div", [f"dot{s}", f"std{s}"], [f"ncc{s}"], name=f"ncc{s}"),
            helper.make_node("Sub", [f"ncc{s}", "threshold"], [f"margin{s}"], name=f"margin{s}"),
            helper.make_node("Mul", [f"margin{s}", "gain"], [f"logit{s}"], name=f"logit{s}"),
            helper.make_node("Sigmoid", [f"logit{s}"], [f"prob{s}"], name=f"prob{s}"),
            helper.make_node("Concat", [f"prob{s}", f"prob{s}"], [f"anchors{s}"], axis=1, name=f"anchors{s}"),
            helper.make_node("Transpose", [f"anchors{s}"], [f"t_score{s}"], perm=[0, 2, 3, 1], name=f"t_score{s}"),
            helper.make_node("Reshape", [f"t_score{s}", "shape1"], [f"score_{s}"], name=f"score_{s}"),
            helper.make_node("Conv", [f"pool{s}", "box_w", "box_b"], [f"box{s}"], strides=[4, 4], name=f"box{s}"),
            helper.make_node("Transpose", [f"box{s}"], [f"t_box{s}"], perm=[0, 2, 3, 1], name=f"t_box{s}"),
            helper.make_node("Reshape", [f"t_box{s}", "shape4"], [f"bbox_{s}"], name=f"bbox_{s}"),
        ]
        scores.append(helper.make_tensor_value_info(f"score_{s}", TensorProto.FLOAT, [f"n{s}", 1]))
        boxes.append(helper.make_tensor_value_info(f"bbox_{s}", TensorProto.FLOAT, [f"n{s}", 4]))
        if with_kps:
            nodes += [
                helper.make_node("Conv", [f"pool{s}", "kps_w", "kps_b"], [f"kp{s}"], strides=[4, 4], name=f"kp{s}"),
                helper.make_node("Transpose", [f"kp{s}"], [f"t_kp{s}"], perm=[0, 2, 3, 1], name=f"t_kp{s}"),
                helper.make_node("Reshape", [f"t_kp{s}", "shape10"], [f"kps_{s}"], name=f"kps_{s}"),
            ]
            kpss.append(helper.make_tensor_value_info(f"kps_{s}", TensorProto.FLOAT, [f"n{s}", 10]))
    graph = helper.make_graph(
        nodes, "scrfd_test", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        scores + boxes + kpss, inits,
    )
    return _model(graph)


def _pooled_head(name: str, size: int, pool: int, out: int, weight: np.ndarray, bias: np.ndarray, chroma: bool = False):
    """input [N,3,size,size] -> AveragePool(pool) -> (minus the channel mean: colour only) ->
    Flatten -> Gemm -> [N, out]."""
    onnx, TensorProto, helper, numpy_helper = _onnx()
    inits = [numpy_helper.from_array(weight.astype(np.float32), "fc_w"), numpy_helper.from_array(bias.astype(np.float32), "fc_b")]
    nodes = [helper.make_node("AveragePool", ["data"], ["pooled"], kernel_shape=[pool, pool], strides=[pool, pool], name="pool")]
    if chroma:
        nodes += [
            helper.make_node("ReduceMean", ["pooled"], ["grey"], axes=[1], keepdims=1, name="grey"),
            helper.make_node("Sub", ["pooled", "grey"], ["colour"], name="chroma"),
        ]
    nodes += [
        helper.make_node("Flatten", ["colour" if chroma else "pooled"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc1"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", out])], inits,
    )
    return _model(graph)


def build_recognizer(seed: int, size: int = 112, dim: int = 512):
    rng = np.random.default_rng(seed + 1000)
    features = 3 * (size // 14) ** 2
    weight = rng.standard_normal((dim, features)) / np.sqrt(features)
    return _pooled_head("arcface_test", size, 14, dim, weight, np.zeros(dim), chroma=True)


def build_landmark_106(seed: int):
    rng = np.random.default_rng(seed + 2000)
    angles = np.linspace(0, 2 * np.pi, 106, endpoint=False)
    ring = np.stack([0.55 * np.cos(angles), 0.6 * np.sin(angles)], -1).reshape(-1)
    weight = rng.standard_normal((212, 3 * 4 * 4)) * 0.002
    return _pooled_head("landmark106_test", 192, 48, 212, weight, ring)


def build_landmark_3d68(seed: int):
    from insightface.data import get_object

    rng = np.random.default_rng(seed + 3000)
    mean = get_object("meanshape_68.pkl").astype(np.float64)
    bias = np.zeros(3309)
    bias[-68 * 3:] = mean.reshape(-1)
    weight = rng.standard_normal((3309, 3 * 4 * 4)) * 0.0005
    return _pooled_head("landmark3d68_test", 192, 48, 3309, weight, bias)


def build_genderage(seed: int):
    rng = np.random.default_rng(seed + 4000)
    weight = rng.standard_normal((3, 3 * 4 * 4)) * 0.05
    return _pooled_head("genderage_test", 96, 24, 3, weight, np.array([0.1, -0.1, 0.3]))


def _build(role: str, spec: PackSpec):
    if role == "detection":
        return build_detector(spec.detector_kps, spec.detector_channels)
    if role == "recognition":
        return build_recognizer(spec.seed)
    if role == "landmark_2d_106":
        return build_landmark_106(spec.seed)
    if role == "landmark_3d_68":
        return build_landmark_3d68(spec.seed)
    if role == "genderage":
        return build_genderage(spec.seed)
    raise ValueError(role)


def _spec_key(spec: PackSpec) -> str:
    fields = {k: v for k, v in asdict(spec).items() if not (k == "detector_channels" and v is None)}   # keys as before
    payload = json.dumps({"v": GENERATOR_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def ensure_pack(spec: PackSpec = ANTELOPEV2, directory: Path = PACKS_DIR) -> Path:
    """The folder ``<cache>/<key>/<spec.name>/`` holding the pack's .onnx files (built once)."""
    import onnx

    target = Path(directory) / _spec_key(spec) / spec.name
    if target.is_dir() and all((target / f).is_file() for f in spec.files.values()):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    for role, filename in spec.files.items():
        onnx.save(_build(role, spec), str(staging / filename))
    try:
        os.replace(staging, target)
    except OSError:  # another process won the race
        shutil.rmtree(staging, ignore_errors=True)
    return target


def insightface_root(tmp: Path, packs: dict[str, Path], nested: set[str] = frozenset()) -> Path:
    """Lay out ``tmp/models/<name>/`` (or ``<name>/<name>/`` for ``nested``) with symlinks to
    generated pack files, the way users unpack them under ComfyUI/models/insightface."""
    for name, source in packs.items():
        folder = Path(tmp) / "models" / name
        if name in nested:
            folder = folder / name
        folder.mkdir(parents=True, exist_ok=True)
        for file in Path(source).glob("*.onnx"):
            link = folder / file.name
            if not link.exists():
                link.symlink_to(file.resolve())
    return Path(tmp)
