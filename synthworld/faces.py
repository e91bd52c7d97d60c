"""The world's face models: recognizer (ArcFace margin loss), detector, action classifier.

- :class:`Recognizer`: our own small CNN on the ArcFace-aligned 112x112 crop (average-pooled to
  28x28 first), 512-d embedding, trained with an additive angular margin (ArcFace) loss on the
  training identities. Exported by :func:`recognizer_onnx` as an insightface recognizer
  (square 112 input, ``[N, 512]`` output): insightface routes it, the real face nodes run it.
- :class:`Detector`: a small CNN that predicts, for a frame, face/no-face, the face box and the
  five keypoints; :func:`detector_onnx` wraps it into an SCRFD-format graph (9 outputs: scores,
  box distances, keypoint distances for strides 8/16/32, two anchors per location) so
  insightface's own SCRFD decoding (anchor centres, distance2bbox/kps, NMS) reads it.
- :class:`ActionClassifier`: frame -> one of ``world.ACTIONS``; the experiment's ground-truth judge.

Everything trains in seconds to a few minutes on a CPU from seeded data.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import world

CROP = 112          # insightface recognizer input (square, >= 112, divisible by 16)
CROP_POOL = 4       # the recognizer's first layer: 112 -> 28
EMBED_DIM = 512
DET_INPUT = 32      # the detector resizes any input to this


# -- alignment (the same call the face nodes make) ------------------------------------------------
def aligned_crops(frames_uint8: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """ArcFace-aligned RGB crops ``[N, 112, 112, 3]`` uint8 via insightface's ``norm_crop``."""
    import warnings

    from insightface.utils import face_align

    out = np.empty((len(frames_uint8), CROP, CROP, 3), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for i, (img, k) in enumerate(zip(frames_uint8, kps)):
            out[i] = face_align.norm_crop(img, landmark=k.astype(np.float32), image_size=CROP)
    return out


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` float [0, 1] -> ``[N, H, W, 3]`` uint8."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def crop_input(crops_uint8: np.ndarray) -> torch.Tensor:
    """Aligned crops -> the recognizer's pooled input ``[N, 3, 28, 28]`` in [-1, 1] (insightface's
    mean/std 127.5 normalisation, then the graph's first AveragePool)."""
    x = torch.from_numpy(crops_uint8).permute(0, 3, 1, 2).float()
    return F.avg_pool2d((x - 127.5) / 127.5, CROP_POOL)


# -- networks -------------------------------------------------------------------------------------
class Recognizer(nn.Module):
    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.c1 = nn.Conv2d(3, 24, 3, padding=1)
        self.c2 = nn.Conv2d(24, 48, 3, padding=1)
        self.c3 = nn.Conv2d(48, 32, 3, padding=1)
        # ArcFace's output layer: the flattened feature map through one linear layer, so what the
        # last feature map holds about *where* things are (mouth, eyes) reaches the embedding
        self.fc = nn.Linear(32 * 7 * 7, embed_dim)

    def forward(self, x28: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(F.relu(self.c1(x28)), 2)
        h = F.avg_pool2d(F.relu(self.c2(h)), 2)
        return self.fc(F.relu(self.c3(h)).flatten(1))


class Detector(nn.Module):
    """32x32 frame (insightface SCRFD normalisation) -> [score logit, box (4), kps (10)], box and
    keypoints as fractions of the frame."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 15)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(x))))))
        return self.fc(h.flatten(1))


class ActionClassifier(nn.Module):
    def __init__(self, classes: int = len(world.ACTIONS)):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.c3 = nn.Conv2d(32, 48, 3, padding=1)
        self.fc = nn.Linear(48 * 4 * 4, classes)

    def forward(self, frames01: torch.Tensor) -> torch.Tensor:
        x = frames01 * 2 - 1
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        h = F.max_pool2d(F.relu(self.c3(h)), 2)
        return self.fc(h.flatten(1))


def detector_input(frames01: torch.Tensor) -> torch.Tensor:
    """Frames in [0, 1] -> SCRFD's normalisation ((x*255 - 127.5) / 128)."""
    return (frames01 * 255 - 127.5) / 128.0


# -- training -------------------------------------------------------------------------------------
def arcface_logits(emb: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, s: float = 24.0,
                   m: float = 0.3) -> torch.Tensor:
    """Additive angular margin (ArcFace): s * cos(theta_y + m) for the true class, s * cos(theta) else."""
    cos = F.normalize(emb) @ F.normalize(weight).T
    theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
    target = torch.cos(theta + m)
    onehot = F.one_hot(labels, weight.shape[0]).bool()
    return s * torch.where(onehot, target, cos)


def _batches(n: int, batch: int, steps: int, generator: torch.Generator):
    for _ in range(steps):
        yield torch.randint(0, n, (batch,), generator=generator)


def train_recognizer(x28: torch.Tensor, labels: torch.Tensor, steps: int, seed: int, log=print) -> Recognizer:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Recognizer()
    classes = int(labels.max()) + 1
    weight = nn.Parameter(torch.randn(classes, EMBED_DIM) * 0.01)
    opt = torch.optim.AdamW(list(model.parameters()) + [weight], lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    for step, idx in enumerate(_batches(len(x28), 128, steps, g)):
        x = x28[idx]
        # photometric jitter: the recognizer must not key on exposure
        x = x * (1 + 0.1 * torch.randn(len(x), 1, 1, 1, generator=g)) + 0.05 * torch.randn(len(x), 1, 1, 1, generator=g)
        loss = F.cross_entropy(arcface_logits(model(x), weight, labels[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            log(f"  recognizer step {step}/{steps} loss {loss.item():.3f}")
    return model.eval()


def train_detector(frames01: torch.Tensor, boxes: torch.Tensor, kps: torch.Tensor, negatives: torch.Tensor,
                   steps: int, seed: int, log=print) -> Detector:
    """frames [N,3,32,32]; boxes [N,4] and kps [N,5,2] in pixels; negatives [M,3,32,32] (no face)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Detector()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    size = frames01.shape[-1]
    targets = torch.cat([boxes / size, kps.reshape(len(kps), -1) / size], 1)
    for step in range(steps):
        i = torch.randint(0, len(frames01), (96,), generator=g)
        j = torch.randint(0, len(negatives), (32,), generator=g)
        x = detector_input(torch.cat([frames01[i], negatives[j]]))
        out = model(x)
        is_face = torch.cat([torch.ones(96), torch.zeros(32)])
        loss = F.binary_cross_entropy_with_logits(out[:, 0], is_face) + 50 * F.mse_loss(out[:96, 1:], targets[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, steps // 4) == 0 or step == steps - 1:
            log(f"  detector step {step}/{steps} loss {loss.item():.4f}")
    return model.eval()


def train_action_classifier(frames01: torch.Tensor, labels: torch.Tensor, steps: int, seed: int, log=print) -> ActionClassifier:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ActionClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    for step in range(steps):
        i = torch.randint(0, len(frames01), (128,), generator=g)
        x = frames01[i]
        # robustness to what a generator's decoder does: blur-ish noise and exposure changes
        x = (x * (1 + 0.1 * torch.randn(len(x), 1, 1, 1, generator=g)) + 0.04 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        loss = F.cross_entropy(model(x), labels[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, steps // 4) == 0 or step == steps - 1:
            log(f"  action classifier step {step}/{steps} loss {loss.item():.3f}")
    return model.eval()


# -- ONNX export (built node by node with the onnx package: no exporter dependency) -------------
def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def _finish(graph):
    onnx, _, helper, _ = _onnx()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="iad-synth-world")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def recognizer_onnx(model: Recognizer):
    """insightface ArcFace-format graph: input ``data [N, 3, 112, 112]`` -> ``fc1 [N, 512]``."""
    _, TensorProto, helper, numpy_helper = _onnx()
    inits, nodes = [], []
    for name, tensor in model.state_dict().items():
        arr = _np(tensor)
        inits.append(numpy_helper.from_array(arr, name))
    nodes += [
        helper.make_node("AveragePool", ["data"], ["p0"], kernel_shape=[CROP_POOL] * 2, strides=[CROP_POOL] * 2),
        helper.make_node("Conv", ["p0", "c1.weight", "c1.bias"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("AveragePool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2.weight", "c2.bias"], ["h2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("AveragePool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p2", "c3.weight", "c3.bias"], ["h3"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h3"], ["r3"]),
        helper.make_node("Flatten", ["r3"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["fc1"], transB=1),
    ]
    graph = helper.make_graph(nodes, "synth_world_arcface",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, CROP, CROP])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", EMBED_DIM])], inits)
    return _finish(graph)


def detector_onnx(model: Detector):
    """SCRFD-format graph around :class:`Detector`: the input (any size) is resized to 32x32, the
    network predicts one face; stride 32 reports its probability at every anchor with box and
    keypoint distances from that anchor's centre (insightface decodes them to the same box, and its
    NMS keeps one); strides 8 and 16 report nothing (score 0)."""
    _, TensorProto, helper, numpy_helper = _onnx()
    state = {k: _np(v) for k, v in model.state_dict().items()}
    inits = [numpy_helper.from_array(v, k) for k, v in state.items()]

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    n = []
    const("roi", [], np.float32)
    const("det_size", [1, 3, DET_INPUT, DET_INPUT], np.int64)
    n += [
        helper.make_node("Resize", ["input.1", "roi", "", "det_size"], ["x32"], mode="linear"),
        helper.make_node("Conv", ["x32", "c1.weight", "c1.bias"], ["h1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2.weight", "c2.bias"], ["h2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("Conv", ["r2", "c3.weight", "c3.bias"], ["h3"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h3"], ["r3"]),
        helper.make_node("Flatten", ["r3"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["pred"], transB=1),   # [1, 15]
        helper.make_node("Slice", ["pred", const("s0", [0], np.int64), const("s1", [1], np.int64), const("ax1", [1], np.int64)], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),                                  # [1, 1]
        helper.make_node("Slice", ["pred", const("s1b", [1], np.int64), const("s15", [15], np.int64), const("ax1b", [1], np.int64)], ["geo"]),
        helper.make_node("Shape", ["input.1"], ["shape"]),
        helper.make_node("Gather", ["shape", const("i2", 2, np.int64)], ["H"]),
        helper.make_node("Gather", ["shape", const("i3", 3, np.int64)], ["W"]),
        helper.make_node("Cast", ["H"], ["Hf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["W"], ["Wf"], to=TensorProto.FLOAT),
        # geometry in pixels of the detector input: x scaled by W, y by H
        helper.make_node("Unsqueeze", ["Wf", const("ax0", [0], np.int64)], ["Wf1"]),
        helper.make_node("Unsqueeze", ["Hf", "ax0"], ["Hf1"]),
        helper.make_node("Concat", ["Wf1", "Hf1"], ["wh"], axis=0),
        helper.make_node("Tile", ["wh", const("reps7", [7], np.int64)], ["scale14"]),
        helper.make_node("Mul", ["geo", "scale14"], ["geo_px"]),                             # [1, 14]
    ]
    outputs_scores, outputs_boxes, outputs_kps = [], [], []
    for s in (8, 16, 32):
        # anchor centres (x, y) = (j*s, i*s), row-major, two anchors per location
        n += [
            helper.make_node("Range", [const(f"zero{s}", 0, np.int64), "W", const(f"step{s}", s, np.int64)], [f"xs{s}"]),
            helper.make_node("Range", [f"zero{s}", "H", f"step{s}"], [f"ys{s}"]),
            helper.make_node("Cast", [f"xs{s}"], [f"xf{s}"], to=TensorProto.FLOAT),
            helper.make_node("Cast", [f"ys{s}"], [f"yf{s}"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", [f"xf{s}", "ax0"], [f"xrow{s}"]),                  # [1, w]
            helper.make_node("Unsqueeze", [f"yf{s}", const(f"ax1c{s}", [1], np.int64)], [f"ycol{s}"]),  # [h, 1]
            helper.make_node("Mul", [f"ycol{s}", const(f"zf{s}", 0.0)], [f"y0{s}"]),
            helper.make_node("Add", [f"xrow{s}", f"y0{s}"], [f"gx{s}"]),                    # [h, w]
            helper.make_node("Mul", [f"xrow{s}", f"zf{s}"], [f"x0{s}"]),
            helper.make_node("Add", [f"ycol{s}", f"x0{s}"], [f"gy{s}"]),                    # [h, w]
            helper.make_node("Reshape", [f"gx{s}", const(f"col{s}", [-1, 1], np.int64)], [f"cx{s}"]),
            helper.make_node("Reshape", [f"gy{s}", f"col{s}"], [f"cy{s}"]),
            helper.make_node("Concat", [f"cx{s}", f"cx{s}"], [f"cx2{s}"], axis=1),
            helper.make_node("Concat", [f"cy{s}", f"cy{s}"], [f"cy2{s}"], axis=1),
            helper.make_node("Reshape", [f"cx2{s}", f"col{s}"], [f"ax{s}"]),                 # [2hw, 1]
            helper.make_node("Reshape", [f"cy2{s}", f"col{s}"], [f"ay{s}"]),
            helper.make_node("Concat", [f"ax{s}", f"ay{s}"], [f"axy{s}"], axis=1),           # [2hw, 2]
            helper.make_node("Tile", [f"axy{s}", const(f"rep2{s}", [1, 2], np.int64)], [f"a4{s}"]),    # x,y,x,y
            helper.make_node("Tile", [f"axy{s}", const(f"rep5{s}", [1, 5], np.int64)], [f"a10{s}"]),   # 5 keypoints
            helper.make_node("Slice", ["geo_px", const(f"b0{s}", [0], np.int64), const(f"b4{s}", [4], np.int64), "ax1b"], [f"box{s}"]),
            helper.make_node("Slice", ["geo_px", f"b4{s}", const(f"b14{s}", [14], np.int64), "ax1b"], [f"kp{s}"]),
            # distances: (cx - x1, cy - y1, x2 - cx, y2 - cy) / s and (kx - cx, ky - cy) / s
            helper.make_node("Mul", [f"box{s}", const(f"sgn{s}", [[-1, -1, 1, 1]])], [f"sbox{s}"]),
            helper.make_node("Mul", [f"a4{s}", f"sgn{s}"], [f"sa4{s}"]),
            helper.make_node("Sub", [f"sbox{s}", f"sa4{s}"], [f"d{s}"]),
            helper.make_node("Div", [f"d{s}", const(f"sf{s}", float(s))], [f"bbox_{s}"]),
            helper.make_node("Sub", [f"kp{s}", f"a10{s}"], [f"k{s}"]),
            helper.make_node("Div", [f"k{s}", f"sf{s}"], [f"kps_{s}"]),
            helper.make_node("Mul", [f"ax{s}", f"zf{s}"], [f"z{s}"]),
            helper.make_node("Add", [f"z{s}", "prob" if s == 32 else f"zf{s}"], [f"score_{s}"]),
        ]
        outputs_scores.append(helper.make_tensor_value_info(f"score_{s}", TensorProto.FLOAT, [f"n{s}", 1]))
        outputs_boxes.append(helper.make_tensor_value_info(f"bbox_{s}", TensorProto.FLOAT, [f"n{s}", 4]))
        outputs_kps.append(helper.make_tensor_value_info(f"kps_{s}", TensorProto.FLOAT, [f"n{s}", 10]))
    graph = helper.make_graph(n, "synth_world_scrfd",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
                              outputs_scores + outputs_boxes + outputs_kps, inits)
    return _finish(graph)
