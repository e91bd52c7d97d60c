"""Finding faces: the SCRFD detector with its retries (smaller detector inputs, then padding for
tight crops), the rule that keeps padded detections on the photo, face selection, and the
landmark models run in one batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..face_types import DetectedFace
from .report import FaceAnalysisError

SELECTION_POLICIES = ("largest", "most confident", "index")
# When no face is found: smaller detector inputs first (a face that fills the frame is too big
# for the detector's anchors at 640), then padding (tight crops: the face touches the border).
RETRY_DET_SIZES = (320, 256, 160, 128)
RETRY_PADDINGS = (0.25, 0.5)
# A face found only in a padded image must lie mostly inside the original photo: at least this
# share of its box, and all five landmarks (eyes, nose, mouth: what is aligned and embedded).
# Detectors fire on the padded photo's own outline (a flat grey or noise photo framed in black),
# and those boxes reach far outside it; a real tight crop's face stays on the photo.
PADDED_MIN_INSIDE = 0.75

# The channel order the detector is handed. insightface's models take BGR (cv2's order): IaD's
# default. bytedance/lynx hands insightface's FaceAnalysis np.array(a PIL RGB image), so its
# detector reads the photo with red and blue swapped; "RGB" reproduces that. Only the detector's
# input changes: the keypoints it finds align the same crops of the photo as ever.
DETECTOR_ORDERS = ("BGR", "RGB")


def check_detector_order(order: str) -> str:
    if order not in DETECTOR_ORDERS:
        raise FaceAnalysisError(f"Unknown detector colour order {order!r}: use 'BGR' (insightface's convention, the "
                                "default) or 'RGB' (what bytedance/lynx's pipeline hands the detector).")
    return order


def detector_input(bgr: np.ndarray, order: str) -> np.ndarray:
    """What the detector is given for a BGR photo: the photo itself, or (``"RGB"``) its channels reversed."""
    return bgr if check_detector_order(order) == "BGR" else np.ascontiguousarray(bgr[..., ::-1])


@dataclass
class Candidate:
    bbox: np.ndarray        # (4,) source-image pixels
    kps: np.ndarray         # (5, 2)
    score: float

    @property
    def area(self) -> float:
        return float(max(self.bbox[2] - self.bbox[0], 0) * max(self.bbox[3] - self.bbox[1], 0))


def find_candidates(detector, bgr: np.ndarray, base_det_size: int, min_score: float,
                    retry: bool) -> tuple[list[Candidate], str | None, int]:
    """Faces in one BGR image, best score first, how they were found if not on the first try, and
    how many detections in padded images were rejected for lying outside the photo."""
    import cv2

    sizes = [base_det_size] + ([s for s in RETRY_DET_SIZES if s < base_det_size] if retry else [])
    attempts: list[tuple[int, float]] = [(s, 0.0) for s in sizes]
    if retry:
        attempts += [(s, pad) for pad in RETRY_PADDINGS for s in sizes]
    h, w = bgr.shape[:2]
    rejected = 0
    for det_size, pad in attempts:
        if pad:
            top, left = int(round(pad * h)), int(round(pad * w))
            image = cv2.copyMakeBorder(bgr, top, top, left, left, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        else:
            top = left = 0
            image = bgr
        bboxes, kpss = detector.detect(image, input_size=(det_size, det_size), det_thresh=float(min_score))
        if len(bboxes) == 0:
            continue
        offset = np.array([left, top], dtype=np.float32)
        found = [
            Candidate(bbox=(b[:4] - np.tile(offset, 2)).astype(np.float32),
                      kps=(k - offset).astype(np.float32), score=float(b[4]))
            for b, k in zip(bboxes, kpss)
        ]
        if pad:
            kept = [c for c in found if inside_photo(c, h, w, min_score)]
            rejected += len(found) - len(kept)
            found = kept
            if not found:
                continue
        found.sort(key=lambda c: -c.score)
        how = None
        if (det_size, pad) != attempts[0]:
            how = f"found only after retrying at detection size {det_size}" + (
                f" with {int(pad * 100)}% padding around the image (tight crop)" if pad else "")
        return found, how, rejected
    return [], None, rejected


def inside_photo(candidate: Candidate, height: int, width: int, min_score: float) -> bool:
    """Whether a detection in a padded image is a face *of the photo* (see PADDED_MIN_INSIDE)."""
    x0, y0, x1, y1 = (float(v) for v in candidate.bbox)
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    inside = max(min(x1, width) - max(x0, 0.0), 0.0) * max(min(y1, height) - max(y0, 0.0), 0.0)
    kps = candidate.kps
    landmarks_inside = bool(((kps[:, 0] >= 0) & (kps[:, 0] <= width) & (kps[:, 1] >= 0) & (kps[:, 1] <= height)).all())
    return candidate.score >= min_score and area > 0 and inside >= PADDED_MIN_INSIDE * area and landmarks_inside


def tried_text(det_size: int, retry: bool) -> str:
    if not retry:
        return f"at detection size {det_size}"
    smaller = [s for s in RETRY_DET_SIZES if s < det_size]
    return (f"at detection size {det_size}, retrying at {'/'.join(map(str, smaller)) or 'no smaller size'} "
            f"and with {' and '.join(f'{int(p * 100)}%' for p in RETRY_PADDINGS)} padding around the image")


def select_face(candidates: list[Candidate], policy: str, face_index: int, where: str) -> Candidate:
    if policy == "largest":
        return max(candidates, key=lambda c: (c.area, c.score))
    if policy == "most confident":
        return max(candidates, key=lambda c: (c.score, c.area))
    ordered = sorted(candidates, key=lambda c: (float(c.bbox[0] + c.bbox[2]), float(c.bbox[1] + c.bbox[3])))
    if len(ordered) == 1:
        return ordered[0]  # a photo with one face is unambiguous whatever the index
    if not 0 <= face_index < len(ordered):
        raise FaceAnalysisError(
            f"{where} has {len(ordered)} face(s) but face index {face_index} was asked for (faces are numbered "
            f"0..{len(ordered) - 1} from left to right). Lower the face index or use the 'largest' policy.")
    return ordered[face_index]


def add_landmarks(landmark_models: dict, bgrs: list[np.ndarray], faces: list[DetectedFace]) -> None:
    """insightface's Landmark preprocessing and decoding (crop of 1.5x the box, inverse affine,
    pose from the 3D mean shape), but one session run per model for all faces."""
    import cv2
    from insightface.utils import transform as ins_transform

    for role, model in landmark_models.items():
        size = int(model.input_size[0])
        crops, inverses = [], []
        for bgr, face in zip(bgrs, faces):
            x1, y1, x2, y2 = (float(v) for v in face.bbox[:4])
            scale = size / (max(x2 - x1, y2 - y1) * 1.5)
            m = np.array([[scale, 0.0, size / 2 - (x1 + x2) / 2 * scale],
                          [0.0, scale, size / 2 - (y1 + y2) / 2 * scale]], dtype=np.float64)
            crops.append(cv2.warpAffine(bgr, m, (size, size), borderValue=0.0))
            inverses.append(cv2.invertAffineTransform(m))
        blob = cv2.dnn.blobFromImages(crops, 1.0 / model.input_std, (size, size),
                                      (model.input_mean, model.input_mean, model.input_mean), swapRB=True)
        batch_dim = model.input_shape[0]
        step = 1 if isinstance(batch_dim, int) and batch_dim == 1 else len(crops)
        preds = np.concatenate([model.session.run(model.output_names, {model.input_name: blob[i:i + step]})[0]
                                for i in range(0, len(crops), step)]).reshape(len(crops), -1)
        for pred, inverse, face in zip(preds, inverses, faces):
            points = pred.reshape(-1, 3 if pred.shape[0] >= 3000 else 2)
            if model.lmk_num < points.shape[0]:
                points = points[-model.lmk_num:]
            points = points.astype(np.float64) * 1.0
            points[:, :2] = (points[:, :2] + 1) * (size // 2)
            mapped = points.copy()
            mapped[:, :2] = points[:, :2] @ inverse[:, :2].T + inverse[:, 2]
            if points.shape[1] == 3:
                mapped[:, 2] = points[:, 2] * (size // 2) * float(np.hypot(inverse[0, 0], inverse[0, 1]))
            if role == "landmark_2d_106":
                face.landmark_2d_106 = mapped.astype(np.float32)
            else:
                face.landmark_3d_68 = mapped.astype(np.float32)
                if getattr(model, "require_pose", False):
                    s_, rotation, t_ = ins_transform.P2sRt(ins_transform.estimate_affine_matrix_3d23d(model.mean_lmk, mapped))
                    face.pose = np.array(ins_transform.matrix2angle(rotation), dtype=np.float32)



_SCRFD_FORWARD_ATTRIBUTES = ("fmc", "_feat_stride_fpn", "_num_anchors", "center_cache", "batched", "use_kps",
                             "_prepare_input_blob", "_session_for_input_size", "output_names", "input_name")


def use_sparse_decode(detector) -> None:
    """Give THIS detector instance (ours, from ``packs.route_pack``) a forward that decodes only the
    anchors above the threshold. insightface's SCRFD.forward decodes every anchor (16,800 at 640)
    and then keeps the few above it: ~0.5-0.8 ms of numpy per frame, ~8 % of a video's embedding
    time on CPU. Decoding is elementwise, so the kept boxes and keypoints are bit-identical.
    Left as is when the detector is not the insightface SCRFD this was written against."""
    if not all(hasattr(detector, name) for name in _SCRFD_FORWARD_ATTRIBUTES):
        return

    def forward(img, threshold):
        input_size = tuple(img.shape[0:2][::-1])
        blob = detector._prepare_input_blob(img, input_size)
        net_outs = detector._session_for_input_size(input_size).run(detector.output_names, {detector.input_name: blob})
        input_height, input_width = blob.shape[2], blob.shape[3]
        fmc = detector.fmc
        scores_list, bboxes_list, kpss_list = [], [], []
        for idx, stride in enumerate(detector._feat_stride_fpn):
            first = (lambda out: out[0]) if detector.batched else (lambda out: out)
            scores = first(net_outs[idx])
            key = (input_height // stride, input_width // stride, stride)
            centers = detector.center_cache.get(key)
            if centers is None:
                height, width = key[0], key[1]
                centers = (np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
                if detector._num_anchors > 1:
                    centers = np.stack([centers] * detector._num_anchors, axis=1).reshape(-1, 2)
                if len(detector.center_cache) < 100:
                    detector.center_cache[key] = centers
            pos = np.where(scores >= threshold)[0]
            centers = centers[pos]
            distance = first(net_outs[idx + fmc])[pos] * stride
            scores_list.append(scores[pos])
            bboxes_list.append(np.stack([centers[:, 0] - distance[:, 0], centers[:, 1] - distance[:, 1],
                                         centers[:, 0] + distance[:, 2], centers[:, 1] + distance[:, 3]], axis=-1))
            if detector.use_kps:
                kps = first(net_outs[idx + fmc * 2])[pos] * stride
                points = np.empty((len(pos), kps.shape[1] // 2, 2), dtype=np.result_type(centers, kps))
                points[..., 0] = centers[:, None, 0] + kps[:, 0::2]
                points[..., 1] = centers[:, None, 1] + kps[:, 1::2]
                kpss_list.append(points)
        return scores_list, bboxes_list, kpss_list

    detector.forward = forward
