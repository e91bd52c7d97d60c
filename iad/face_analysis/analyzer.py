"""``FaceAnalyzer``: a loaded insightface pack (detector, recognizer, landmarks when the pack has
them), shared by the nodes, the evaluator and data preparation; loaded packs are cached."""

from __future__ import annotations

import copy
import logging
import os
import threading
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..face_types import DetectedFace, FaceEmbeds
from .alignment import align_crop
from .detection import (SELECTION_POLICIES, Candidate, add_landmarks, check_detector_order, detector_input,
                        find_candidates, select_face, tried_text)
from .images import as_rgb_uint8, images_to_bgr_uint8
from .packs import DEFAULT_PACK, LANDMARK_ROLES, PackLocation, locate_pack, pack_fingerprint, route_pack
from .providers import (PROVIDERS, onnxruntime_warning, provider_fallback_note, resolve_providers, session_settings,
                        warn_once)
from .recognition import embed_aligned
from .report import (SAME_PERSON_THRESHOLD, SMALL_FACE_PX, FaceAnalysisError, FaceImageError, NoFaceError, box_text,
                     same_person_warning, which_image)

log = logging.getLogger(__name__)

_CACHE_SIZE = 4
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


class FaceAnalyzer:
    """A loaded insightface pack: detector, recognizer and (when the pack has them) landmarks."""

    def __init__(self, location: PackLocation, models: dict, files: dict[str, Path], providers: list[str],
                 det_size: int, notes: list[str]):
        self.location = location
        self.models = models
        self.files = files
        self.providers = providers
        self.det_size = int(det_size)
        self.notes = list(notes)
        self.detector_order = "BGR"   # what the detector is handed (detection.DETECTOR_ORDERS)
        self.detector = models["detection"]
        self.recognizer = models["recognition"]
        self.landmarks = {role: models[role] for role in LANDMARK_ROLES if role in models}
        # What the inference sessions really run on: onnxruntime silently falls back to the CPU when
        # a requested provider cannot start (no CUDA build, or its CUDA/cuDNN libraries missing).
        self.session_providers = {role: list(m.session.get_providers()) for role, m in models.items()
                                  if getattr(m, "session", None) is not None}
        fallback = provider_fallback_note(self.providers, self.session_providers)
        if fallback:
            self.notes.append(fallback)
        self.embedder = f"insightface/{location.name}/{files['recognition'].stem}"
        self.crop_size = int(self.recognizer.input_size[0])
        batch_dim = self.recognizer.input_shape[0]
        self.recognizer_batches = not (isinstance(batch_dim, int) and batch_dim == 1)
        self._lock = threading.Lock()

    # ---- loading
    @classmethod
    def load(cls, pack: str | os.PathLike = DEFAULT_PACK, search_roots: Iterable[str | os.PathLike] | None = None,
             provider: str = "auto", det_size: int = 640, *, cache: bool = True, device_id: int = 0,
             threads: int = 0, detector_order: str = "BGR") -> "FaceAnalyzer":
        """Find and load a pack. ``provider`` is ``auto`` or a key of ``PROVIDERS`` (or a full
        onnxruntime provider name); ``device_id``: which GPU a CUDA/ROCm provider uses; ``threads``:
        onnxruntime's CPU intra-op threads (0: its default); ``detector_order``: the channel order the
        detector is handed (``with_detector_order``). Loaded once per (folder, files, providers,
        det_size, device_id, threads); each detector order is a view sharing those sessions."""
        check_detector_order(detector_order)
        det_size = int(det_size)
        if det_size % 32 or not 64 <= det_size <= 2048:
            raise FaceAnalysisError(f"Detection size {det_size} is invalid: use a multiple of 32 between 64 and 2048 "
                                    "(640 is the usual value).")
        location = locate_pack(pack, search_roots)
        providers, notes = resolve_providers(provider)
        warning = onnxruntime_warning(available=None)
        if warning:
            warn_once(warning)
            notes.append(warning)
        key = (str(location.folder.resolve()), tuple(providers), det_size, pack_fingerprint(location.folder),
               int(device_id), int(threads))
        if cache:
            with _CACHE_LOCK:
                cached = _CACHE.get(key + (detector_order,))
                base = _CACHE.get(key + ("BGR",))
            if cached is not None:
                return cached
            if base is not None:   # the sessions are loaded: only the view on them is new
                return _remember(key + (detector_order,), base.with_detector_order(detector_order))
        models, files, load_notes = route_pack(location, providers, session_settings(providers, device_id, threads))
        for note in location.notes + notes:
            if note != warning:  # the onnxruntime warning is logged once per process, above
                log.info("[IaD face analysis] %s", note)
        analyzer = cls(location, models, files, providers, det_size, location.notes + notes + load_notes)
        if not cache:
            return analyzer.with_detector_order(detector_order)
        _remember(key + ("BGR",), analyzer)
        if detector_order == "BGR":
            return analyzer
        return _remember(key + (detector_order,), analyzer.with_detector_order(detector_order))

    def with_detector_order(self, order: str) -> "FaceAnalyzer":
        """This analyzer with the detector handed the photo in ``order`` (``"BGR"``: insightface's
        convention; ``"RGB"``: as bytedance/lynx's pipeline, see ``detection.DETECTOR_ORDERS``). The
        models are shared; crops, embeddings and landmarks still come from the photo itself."""
        if check_detector_order(order) == self.detector_order:
            return self
        twin = copy.copy(self)
        twin.detector_order = order
        twin.notes = list(self.notes)
        return twin

    @property
    def name(self) -> str:
        return self.location.name

    @property
    def device(self) -> str:
        """The provider the recognizer's session actually runs with (not the one requested)."""
        names = {v: k for k, v in PROVIDERS.items()}
        actual = (self.session_providers.get("recognition") or self.session_providers.get("detection")
                  or self.providers)
        return names.get(actual[0], actual[0])

    def describe(self) -> str:
        roles = ", ".join(f"{role}: {path.name}" for role, path in self.files.items())
        order = "" if self.detector_order == "BGR" else f", detector input {self.detector_order} (as Lynx's pipeline)"
        return f"{self.name} ({roles}) on {self.device}, detection size {self.det_size}{order}"

    # ---- detection (detection.py)
    def _candidates(self, bgr: np.ndarray, min_score: float, retry: bool) -> tuple[list[Candidate], str | None, int]:
        return find_candidates(self.detector, detector_input(bgr, self.detector_order), self.det_size, min_score, retry)

    def detect(self, image, *, min_score: float = 0.5, retry: bool = True, landmarks: bool = True,
               image_index: int = 0) -> list[DetectedFace]:
        """Every face in one RGB image (best detection score first), with embeddings (one batched
        recognizer call) and landmarks when the pack has them. An empty list if there is none."""
        bgr = np.ascontiguousarray(as_rgb_uint8(image, image_index, image_index + 1)[..., ::-1])
        candidates, _, _ = self._candidates(bgr, min_score, retry)
        return self._faces([(image_index, bgr, c) for c in candidates], landmarks)

    def _faces(self, found: list[tuple[int, np.ndarray, Candidate]], landmarks: bool) -> list[DetectedFace]:
        """DetectedFace records for (image index, BGR image, candidate): one batched recognizer call,
        one batched call per landmark model."""
        if not found:
            return []
        crops = [align_crop(bgr, c.kps, self.crop_size)[..., ::-1] for _, bgr, c in found]
        embeddings = self.embed_aligned(crops)
        faces = [DetectedFace(image_index=i, bbox=c.bbox, kps=c.kps, det_score=c.score, embedding=z,
                              aligned_crop=np.ascontiguousarray(crop))
                 for (i, _, c), crop, z in zip(found, crops, embeddings)]
        if landmarks and self.landmarks:
            add_landmarks(self.landmarks, [bgr for _, bgr, _ in found], faces)
        return faces

    # ---- alignment and embedding (alignment.py, recognition.py)
    def align(self, image, kps: np.ndarray) -> np.ndarray:
        """The ArcFace-aligned (crop_size x crop_size) RGB uint8 crop for 5 keypoints."""
        rgb = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 else as_rgb_uint8(image)
        return align_crop(rgb, kps, self.crop_size)  # a pure warp: channel order passes through

    def embed_aligned(self, crops) -> torch.Tensor:
        """(N, D) float32 L2-normalised embeddings of aligned RGB crops, in batched recognizer calls
        (one call per up to 64 crops; one per crop only if the model has a fixed batch of 1)."""
        return embed_aligned(self.recognizer, crops, self.crop_size, self.recognizer_batches, self.files["recognition"])

    # ---- reference images -> FaceEmbeds
    def embed_images(self, images, policy: str = "largest", min_score: float = 0.5, *, face_index: int = 0,
                     on_missing: str = "raise", retry: bool = True, landmarks: bool = True,
                     same_person_threshold: float | None = SAME_PERSON_THRESHOLD) -> FaceEmbeds:
        """One face per image (chosen by ``policy``: largest / most confident / index, where
        ``face_index`` counts faces from left to right; a photo with a single face always gives that
        face), embedded in one batched recognizer call.
        ``on_missing``: "raise" (NoFaceError naming the image) or "skip" (noted in ``info``).
        With two or more faces, photos that do not look like the same person are named in ``info``."""
        if policy not in SELECTION_POLICIES:
            raise ValueError(f"Unknown face selection policy {policy!r}; use one of {', '.join(SELECTION_POLICIES)}.")
        if on_missing not in ("raise", "skip"):
            raise ValueError("on_missing must be 'raise' or 'skip'")
        if (isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4 and images.shape[0] == 0) or (
                isinstance(images, (list, tuple)) and not images):
            raise FaceImageError("No images given (an empty batch): connect at least one reference photo.")
        bgrs = images_to_bgr_uint8(images)
        count = len(bgrs)
        info: list[str] = []
        selected: list[tuple[int, Candidate]] = []
        missing: list[int] = []
        outside = 0
        for i, bgr in enumerate(bgrs):
            where = which_image(i, count)
            candidates, how, rejected = self._candidates(bgr, min_score, retry)
            if not candidates:
                missing.append(i)
                outside += rejected
                continue
            chosen = select_face(candidates, policy, face_index, where)
            line = f"{where}: face at {box_text(chosen.bbox)} (score {chosen.score:.2f})"
            if len(candidates) > 1:
                rule = {"largest": "the largest", "most confident": "the most confident",
                        "index": f"face {face_index} from the left"}[policy]
                line = f"{where}: {len(candidates)} faces found, picked {rule}: {box_text(chosen.bbox)} (score {chosen.score:.2f})"
            if how:
                line += f"; {how}"
            width = float(chosen.bbox[2] - chosen.bbox[0])
            if width < SMALL_FACE_PX:
                line += f"; the face is only {width:.0f} px wide, identity may be unreliable (use a larger photo)"
            info.append(line)
            selected.append((i, chosen))
        if missing:
            listed = ", ".join(which_image(i, count) for i in missing)
            message = (f"No face found in {listed} (tried {tried_text(self.det_size, retry)}, minimum score {min_score:.2f}"
                       + (f"; {outside} detection(s) in the padded image lay mostly outside the photo and were not "
                          "taken for a face" if outside else "")
                       + "). Use a photo where the face is clearly visible and at least ~64 px wide, lower the minimum "
                       "detection score, or remove that image from the batch.")
            if on_missing == "raise" or not selected:
                raise NoFaceError(message, missing)
            info.append(f"skipped: {message}")
        faces = self._faces([(i, bgrs[i], c) for i, c in selected], landmarks)
        result = FaceEmbeds(faces=faces, embedder=self.embedder, image_sizes=[b.shape[:2] for b in bgrs], info=info)
        if same_person_threshold is not None and len(faces) > 1:
            warning = same_person_warning(result, same_person_threshold, count)
            if warning:
                result.info.append(warning)
        return result


def _remember(key: tuple, analyzer: FaceAnalyzer) -> FaceAnalyzer:
    with _CACHE_LOCK:
        _CACHE[key] = analyzer
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return analyzer


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
