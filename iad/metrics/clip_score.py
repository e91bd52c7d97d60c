"""CLIP-T: text-frame alignment as the cosine between CLIP's projected text embedding of the
prompt and each frame's projected image embedding (the CLIPScore convention reports
``100 * max(cos, 0)``; ConsisID used ViT-B/32). The embeddings come from whatever CLIP models
the user loaded (ComfyUI's loaders, in the node); this module only does the arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._util import as_unit_rows


@dataclass
class ClipScoreResult:
    per_frame: list[float]      # 100 * max(cos, 0)
    mean: float
    min: float
    text_model: str
    image_model: str

    def as_dict(self) -> dict:
        return {
            "mean": round(self.mean, 4), "min": round(self.min, 4), "per_frame": [round(v, 4) for v in self.per_frame],
            "text_model": self.text_model, "image_model": self.image_model,
            "definition": "100 * max(cos(text_embeds, image_embeds), 0) per frame",
        }


def clip_text_score(text_embedding, image_embeddings, text_model: str = "unknown",
                    image_model: str = "unknown") -> ClipScoreResult:
    text = as_unit_rows(text_embedding)
    images = as_unit_rows(image_embeddings)
    if text.shape[0] != 1:
        raise ValueError(f"expected one text embedding, got {text.shape[0]}")
    if text.shape[1] != images.shape[1]:
        raise ValueError(
            f"the CLIP text embedding has {text.shape[1]} dimensions but the CLIP vision embedding has "
            f"{images.shape[1]}: load a text encoder and a vision model of the same CLIP (e.g. clip_l with "
            "a ViT-L/14 CLIP vision model)")
    scores = 100.0 * np.maximum(images @ text[0], 0.0)
    return ClipScoreResult([float(s) for s in scores], float(scores.mean()), float(scores.min()),
                           text_model, image_model)


def is_defined(value: float) -> bool:
    return value is not None and math.isfinite(value)
