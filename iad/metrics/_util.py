"""Small helpers shared by the metrics: embedding normalisation and NaN-aware summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def as_unit_rows(embeddings) -> np.ndarray:
    """(N, D) float64 with every row L2-normalised; accepts tensors, arrays or lists of vectors."""
    if isinstance(embeddings, torch.Tensor):
        array = embeddings.detach().to("cpu", torch.float64).numpy()
    else:
        array = np.asarray([_to_numpy(e) for e in embeddings] if isinstance(embeddings, (list, tuple)) else embeddings,
                           dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, D) batch of embeddings, got shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if not np.all(np.isfinite(array)) or np.any(norms == 0):
        raise ValueError("embeddings contain NaN/inf or an all-zero vector")
    return array / norms


def _to_numpy(vector) -> np.ndarray:
    if isinstance(vector, torch.Tensor):
        return vector.detach().to("cpu", torch.float64).reshape(-1).numpy()
    return np.asarray(vector, dtype=np.float64).reshape(-1)


def finite_or_none(value: float) -> float | None:
    """JSON-friendly: NaN/inf become None."""
    return None if value is None or not math.isfinite(value) else float(value)


def nan_list(values: Sequence[float]) -> list[float | None]:
    return [finite_or_none(float(v)) for v in values]


def summary(values: np.ndarray) -> tuple[float, float]:
    """(mean, min) over the finite entries, NaN when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    return float(finite.mean()), float(finite.min())
