"""Identity embeddings: aligned crops -> L2-normalised ArcFace vectors in batched recognizer calls."""

from __future__ import annotations

import numpy as np
import torch

from .images import as_rgb_uint8, image_list
from .report import FaceAnalysisError

MAX_RECOGNIZER_BATCH = 64


def embed_aligned(recognizer, crops, crop_size: int, batches: bool, model_file) -> torch.Tensor:
    """(N, D) float32 L2-normalised embeddings of aligned RGB crops, in batched recognizer calls
    (one call per up to 64 crops; one per crop only if the model has a fixed batch of 1)."""
    import cv2

    batch = [as_rgb_uint8(c, i, len(crops)) for i, c in enumerate(image_list(crops))]
    if not batch:
        return torch.zeros(0, 512)
    size = (crop_size, crop_size)
    bgr = [np.ascontiguousarray((c if c.shape[:2] == size else cv2.resize(c, size, interpolation=cv2.INTER_AREA))[..., ::-1])
           for c in batch]
    step = MAX_RECOGNIZER_BATCH if batches else 1
    outputs = [np.asarray(recognizer.get_feat(bgr[i:i + step]), dtype=np.float32) for i in range(0, len(bgr), step)]
    features = np.concatenate(outputs, 0).reshape(len(bgr), -1)
    # numpy, not torch: torch.isfinite(...).all() on these few thousand numbers measured 13-30 ms
    # per call right after the onnxruntime runs (2 busy cores); numpy's check takes microseconds.
    if not np.isfinite(features).all():
        raise FaceAnalysisError(f"The recognizer {model_file} produced NaN/infinite embeddings; the "
                                "model file is probably corrupt: replace it.")
    return torch.nn.functional.normalize(torch.from_numpy(features), dim=1)

