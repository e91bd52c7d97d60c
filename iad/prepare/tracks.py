"""Face tracks across the frames of a clip: link per-frame detections, then keep only tracks that
are long enough, large enough and one identity throughout (a cut or a second person in the same
box is dropped, with the reason recorded)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class TrackPoint:
    frame: int
    bbox: np.ndarray             # (4,) x1 y1 x2 y2, source pixels
    kps: np.ndarray              # (5, 2)
    score: float
    embedding: torch.Tensor      # (D,) unit
    landmarks: np.ndarray | None  # (106, 2) or None
    crop: np.ndarray | None      # aligned crop (S, S, 3) uint8


@dataclass
class Track:
    track_id: int
    points: list[TrackPoint] = field(default_factory=list)
    drop_reason: str | None = None

    @property
    def frames(self) -> list[int]:
        return [p.frame for p in self.points]

    def embeddings(self) -> torch.Tensor:
        return torch.stack([p.embedding.float() for p in self.points])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def link_tracks(detections: dict[int, list[TrackPoint]], min_iou: float = 0.3, max_gap: int = 2) -> list[Track]:
    """Greedy IoU linking, frame by frame: each detection joins the open track whose last box
    overlaps it most (IoU >= ``min_iou``, at most ``max_gap`` frames back), else starts a track."""
    tracks: list[Track] = []
    for frame in sorted(detections):
        open_tracks = [t for t in tracks if frame - t.points[-1].frame <= max_gap]
        taken: set[int] = set()
        for point in sorted(detections[frame], key=lambda p: -p.score):
            best, best_iou = None, min_iou
            for track in open_tracks:
                if track.track_id in taken:
                    continue
                overlap = iou(track.points[-1].bbox, point.bbox)
                if overlap >= best_iou:
                    best, best_iou = track, overlap
            if best is None:
                best = Track(len(tracks))
                tracks.append(best)
            best.points.append(point)
            taken.add(best.track_id)
    return tracks


def validate_tracks(tracks: list[Track], min_frames: int, min_face_px: float, identity_threshold: float) -> list[Track]:
    """Set ``drop_reason`` on bad tracks; returns the good ones, longest first."""
    good = []
    for track in tracks:
        sizes = [float(p.bbox[2] - p.bbox[0]) for p in track.points]
        if len(track.points) < min_frames:
            track.drop_reason = f"too short: {len(track.points)} frames with a face, at least {min_frames} needed"
        elif float(np.median(sizes)) < min_face_px:
            track.drop_reason = f"face too small: median width {np.median(sizes):.0f} px < {min_face_px:.0f} px"
        else:
            # Compare with the medoid (the frame most similar to all others), not the mean: a track
            # that switches person half-way has a mean between the two, close enough to both.
            e = F.normalize(track.embeddings(), dim=-1)
            similarity = e @ e.T
            medoid = int(similarity.mean(1).argmax())
            worst = float(similarity[medoid].min())
            if worst < identity_threshold:
                track.drop_reason = (f"not one identity: a frame's embedding is only {worst:.2f} cosine from the "
                                     f"track's typical frame (< {identity_threshold:.2f}); a cut or another person")
        if track.drop_reason is None:
            good.append(track)
    return sorted(good, key=lambda t: -len(t.points))
