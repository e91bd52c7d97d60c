"""Typed face-analysis results shared by the face nodes, the IaD identity path and the evaluator.

``FaceEmbeds`` is what the ``FACE_EMBEDS`` socket carries between ComfyUI nodes. It is plain data
(numpy arrays and a torch tensor), so the library, the trainer and the evaluator use it without
ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class DetectedFace:
    """One face found in one image. Coordinates are pixels of the *source* image."""

    image_index: int                       # which image of the input batch it came from
    bbox: np.ndarray                       # (4,) float32, x1 y1 x2 y2
    kps: np.ndarray                        # (5, 2) float32: eyes, nose, mouth corners
    det_score: float
    embedding: torch.Tensor                # (D,) float32, L2-normalised (D = 512 for ArcFace)
    landmark_2d_106: np.ndarray | None = None   # (106, 2) when the pack has a 2D-106 model
    landmark_3d_68: np.ndarray | None = None    # (68, 3) when the pack has a 3D-68 model
    pose: np.ndarray | None = None              # (3,) pitch, yaw, roll in degrees (3D-68 model)
    aligned_crop: np.ndarray | None = None      # (S, S, 3) uint8 RGB ArcFace-aligned crop the embedding came from


@dataclass
class FaceEmbeds:
    """The faces selected from a batch of reference images of one person (one face per image)."""

    faces: list[DetectedFace]
    embedder: str                          # e.g. "insightface/antelopev2/glintr100": which recognizer
    image_sizes: list[tuple[int, int]] = field(default_factory=list)   # (H, W) of every input image
    info: list[str] = field(default_factory=list)                      # human-readable notes/warnings

    def __post_init__(self) -> None:
        if not self.faces:
            raise ValueError("FaceEmbeds needs at least one face")
        dims = {int(f.embedding.numel()) for f in self.faces}
        if len(dims) != 1:
            raise ValueError(f"FaceEmbeds mixes embedding sizes {sorted(dims)}")

    def __len__(self) -> int:
        return len(self.faces)

    @property
    def dim(self) -> int:
        return int(self.faces[0].embedding.numel())

    def embeddings(self) -> torch.Tensor:
        """(N, D) float32, each row L2-normalised."""
        return torch.stack([f.embedding.reshape(-1).float() for f in self.faces])

    def mean_embedding(self) -> torch.Tensor:
        """(D,) the re-normalised mean: the naive multi-reference fusion."""
        return torch.nn.functional.normalize(self.embeddings().mean(0), dim=0)
