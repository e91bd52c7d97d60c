"""Synthetic faces with known expression, identity and motion, and a small pixel-measuring
face analyser that reads them back - for the evaluation tests and benchmark.

The tiny insightface pack (``insightface_pack.py``) exercises the real library, but its landmark
models are random: they cannot see a mouth open. Here every quantity is known by construction:
``render_face`` draws a face whose mouth gap, eye aspect ratio and brow height are parameters,
and ``SyntheticFaceAnalyzer.detect`` measures them from the pixels with OpenCV (skin segmentation,
dark blobs for eyes/brows/mouth) and returns ``DetectedFace`` objects with 68 iBUG landmarks
placed on the measured blobs, frontal pose, and a colour-layout embedding (faces of different
colour are different "persons"). It satisfies the evaluator's ``detect(image)`` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iad.face_types import DetectedFace

BACKGROUND = 90
FEATURE = 25
PERSONS = ((235, 180, 125), (125, 180, 235), (180, 235, 125))
EYE_DX, EYE_DY = 0.38, -0.2          # eye centres at (+/-0.38 s, -0.2 s) from the face centre, s = half width
INTER_OCULAR = 2 * EYE_DX            # in units of s
EYE_WIDTH = 0.26
BROW_WIDTH, BROW_THICKNESS = 0.32, 0.06
MOUTH_DY, MOUTH_WIDTH = 0.5, 0.52


@dataclass
class FaceParams:
    cx: float
    cy: float
    s: float                      # half width of the face in pixels
    person: int = 0
    mouth_open: float = 0.0       # inner-lip gap / inter-ocular distance
    eye_open: float = 0.3         # eye height / eye width
    brow_raise: float = 0.3       # brow height above the eye centre / inter-ocular distance


def render_face(height: int, width: int, p: FaceParams, texture_seed: int | None = None) -> np.ndarray:
    import cv2

    if texture_seed is None:
        image = np.full((height, width, 3), BACKGROUND, np.uint8)
    else:   # a smooth random background gives optical flow something to track
        rng = np.random.default_rng(texture_seed)
        noise = cv2.resize(rng.uniform(60, 120, (height // 16 + 1, width // 16 + 1)).astype(np.float32), (width, height),
                           interpolation=cv2.INTER_CUBIC)
        image = np.repeat(np.clip(noise, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    s, iod = p.s, INTER_OCULAR * p.s
    centre = (int(round(p.cx)), int(round(p.cy)))
    cv2.ellipse(image, centre, (int(round(s)), int(round(1.3 * s))), 0, 0, 360, PERSONS[p.person], -1, cv2.LINE_AA)
    for side in (-1, 1):
        ex, ey = p.cx + side * EYE_DX * s, p.cy + EYE_DY * s
        eye_w = EYE_WIDTH * s
        cv2.ellipse(image, (int(round(ex)), int(round(ey))), (int(round(eye_w / 2)), max(1, int(round(p.eye_open * eye_w / 2)))),
                    0, 0, 360, (FEATURE,) * 3, -1)
        by = ey - p.brow_raise * iod
        cv2.rectangle(image, (int(round(ex - BROW_WIDTH * s / 2)), int(round(by - BROW_THICKNESS * s / 2))),
                      (int(round(ex + BROW_WIDTH * s / 2)), int(round(by + BROW_THICKNESS * s / 2))), (FEATURE,) * 3, -1)
    my = p.cy + MOUTH_DY * s
    half_gap = max(1.0, p.mouth_open * iod / 2)
    cv2.ellipse(image, (int(round(p.cx)), int(round(my))), (int(round(MOUTH_WIDTH * s / 2)), int(round(half_gap))),
                0, 0, 360, (FEATURE,) * 3, -1)
    return image


def render_video(frames: int, height: int, width: int, params_at, texture_seed: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8; ``params_at(t)`` gives the FaceParams of frame t."""
    return np.stack([render_face(height, width, params_at(t), texture_seed) for t in range(frames)])


class SyntheticFaceAnalyzer:
    """Finds the synthetic face and measures it (see the module docstring)."""

    embedder = "synthetic/colour-layout-48"

    def __init__(self, min_face_pixels: int = 400, min_margin: int = 0):
        # min_margin: faces closer than this to the image border are missed, like real detectors
        # miss tightly cropped faces (what the padding retry is for)
        self.min_face_pixels = min_face_pixels
        self.min_margin = min_margin
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        import cv2

        self.calls += 1
        image = np.asarray(image)
        brightness = image.astype(np.int16).sum(axis=2)
        spread = image.max(axis=2).astype(np.int16) - image.min(axis=2)
        skin = ((spread > 60) & (brightness > 400)).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(skin, connectivity=8)
        if count <= 1:
            return []
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        if stats[best, cv2.CC_STAT_AREA] < self.min_face_pixels:
            return []
        x, y, w, h = (int(v) for v in stats[best, :4])
        height, width = skin.shape
        if min(x, y, width - (x + w), height - (y + h)) < self.min_margin:
            return []
        face_mask = np.zeros_like(skin)
        face_mask[y:y + h, x:x + w] = 1
        dark = ((brightness < 3 * 60) & (face_mask > 0)).astype(np.uint8)
        blobs = self._blobs(dark)
        cx, cy = x + w / 2, y + h / 2
        upper = [b for b in blobs if b[1] < cy]
        lower = [b for b in blobs if b[1] >= cy]
        sides = []
        for side in (-1, 1):
            mine = sorted((b for b in upper if (b[0] - cx) * side > 0), key=lambda b: b[1])
            if len(mine) < 2:
                return []
            sides.append((mine[-2], mine[-1]))          # (brow above, eye below)
        if not lower:
            return []
        mouth = max(lower, key=lambda b: b[4])
        landmarks = self._landmarks(x, y, w, h, sides, mouth)
        crop = cv2.resize(image[y:y + h, x:x + w].astype(np.float32), (4, 4), interpolation=cv2.INTER_AREA)
        embedding = torch.from_numpy((crop - 128.0).reshape(-1)).float()
        embedding = torch.nn.functional.normalize(embedding, dim=0)
        kps = np.array([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30], landmarks[48], landmarks[54]],
                       np.float32)
        lm3 = np.concatenate([landmarks, np.zeros((68, 1), np.float32)], axis=1)
        return [DetectedFace(image_index=0, bbox=np.array([x, y, x + w, y + h], np.float32), kps=kps, det_score=0.99,
                             embedding=embedding, landmark_3d_68=lm3, pose=np.zeros(3, np.float32))]

    @staticmethod
    def _blobs(mask: np.ndarray) -> list[tuple[float, float, tuple[float, float, float, float], float, int]]:
        """(cx, cy, (x1, y1, x2, y2), -, area) per dark component; extents are sub-pixel via moments."""
        import cv2

        count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        out = []
        for k in range(1, count):
            area = int(stats[k, cv2.CC_STAT_AREA])
            if area < 3:
                continue
            x, y, w, h = (float(v) for v in stats[k, :4])
            out.append((float(centroids[k][0]), float(centroids[k][1]), (x, y, x + w, y + h), area, area))
        return out

    @staticmethod
    def _landmarks(x, y, w, h, sides, mouth) -> np.ndarray:
        lm = np.zeros((68, 2), np.float32)
        cx = x + w / 2
        # jaw (0-16): lower half of the face ellipse
        for k, angle in enumerate(np.linspace(np.pi, 0, 17)):
            lm[k] = (cx + np.cos(angle) * w / 2, y + h / 2 + np.sin(angle) * h / 2)
        for (brow, eye), brow_idx, eye_idx in zip(sides, (range(17, 22), range(22, 27)), ((36, 37, 38, 39, 40, 41),
                                                                                      (42, 43, 44, 45, 46, 47))):
            bx1, _, bx2, _ = brow[2]
            for k, t in zip(brow_idx, np.linspace(0, 1, 5)):
                lm[k] = (bx1 + t * (bx2 - bx1), brow[1])
            ex1, ey1, ex2, ey2 = eye[2]
            eyc, ew = (ey1 + ey2) / 2, ex2 - ex1
            c0, u1, u2, c3, l2, l1 = eye_idx
            lm[c0] = (ex1, eyc)
            lm[c3] = (ex2, eyc)
            lm[u1] = (ex1 + ew / 3, ey1)
            lm[u2] = (ex1 + 2 * ew / 3, ey1)
            lm[l2] = (ex1 + 2 * ew / 3, ey2)
            lm[l1] = (ex1 + ew / 3, ey2)
        eye_y = (sides[0][1][1] + sides[1][1][1]) / 2
        mx1, my1, mx2, my2 = mouth[2]
        myc = (my1 + my2) / 2
        for k, t in zip(range(27, 31), np.linspace(0, 1, 4)):       # nose bridge
            lm[k] = (cx, eye_y + t * (myc - eye_y) * 0.6)
        for k, dx in zip(range(31, 36), np.linspace(-0.1, 0.1, 5) * w):
            lm[k] = (cx + dx, eye_y + (myc - eye_y) * 0.7)
        mw = mx2 - mx1
        outer = [(mx1, myc), (mx1 + mw / 6, my1), (mx1 + mw / 3, my1), (cx, my1), (mx2 - mw / 3, my1), (mx2 - mw / 6, my1),
                 (mx2, myc), (mx2 - mw / 6, my2), (mx2 - mw / 3, my2), (cx, my2), (mx1 + mw / 3, my2), (mx1 + mw / 6, my2)]
        lm[48:60] = outer
        # inner lips 60-67: corners, then the upper (61-63) and lower (65-67) edges of the gap
        inner = [(mx1 + 2, myc), (mx1 + mw / 3, my1), (cx, my1), (mx2 - mw / 3, my1),
                 (mx2 - 2, myc), (mx2 - mw / 3, my2), (cx, my2), (mx1 + mw / 3, my2)]
        lm[60:68] = inner
        return lm
