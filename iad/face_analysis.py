"""insightface face analysis, without ComfyUI: pack discovery, role checks, execution providers,
detection with retries, face selection, batched identity embeddings, same-person check.

Used by the ComfyUI nodes (``nodes/face_nodes.py``), the evaluator and data preparation::

    analyzer = FaceAnalyzer.load("antelopev2", search_roots=["ComfyUI/models/insightface"])
    faces = analyzer.detect(rgb_uint8)                       # every face, best score first
    embeds = analyzer.embed_images([img1, img2], policy="largest")   # one face per image
    z = analyzer.embed_aligned(crops_112)                    # (N, 512), one batched call

Pack folders are found the way PuLID/InstantID users have them, ``<root>/models/<pack>/*.onnx``,
also one level too deep (``antelopev2/antelopev2/*.onnx``, how the official zip unpacks). Each
ONNX file is routed by insightface itself (``model_zoo.get_model`` on an existing file path), so
the shape rules are insightface's. Nothing is ever downloaded: ``FaceAnalysis(name, root)``
would try to fetch a missing pack, so it is never used. insightface, onnxruntime and cv2 are
imported lazily (this module must import without them).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .face_types import DetectedFace, FaceEmbeds

log = logging.getLogger(__name__)

DEFAULT_PACK = "antelopev2"
# The files of the packs users have (the official zips); used to say what a missing folder needs.
KNOWN_PACK_FILES = {
    "antelopev2": ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "glintr100.onnx", "scrfd_10g_bnkps.onnx"),
    "buffalo_l": ("1k3d68.onnx", "2d106det.onnx", "det_10g.onnx", "genderage.onnx", "w600k_r50.onnx"),
}
REQUIRED_ROLES = ("detection", "recognition")
LANDMARK_ROLES = ("landmark_2d_106", "landmark_3d_68")
ROLE_NAMES = {
    "detection": "face detector (SCRFD with keypoints, e.g. scrfd_10g_bnkps.onnx or det_10g.onnx)",
    "recognition": "identity recognizer (ArcFace, e.g. glintr100.onnx or w600k_r50.onnx)",
    "landmark_2d_106": "2D-106 landmark model (2d106det.onnx)",
    "landmark_3d_68": "3D-68 landmark + pose model (1k3d68.onnx)",
}
# Short names shown in the loader's dropdown -> onnxruntime provider names.
PROVIDERS = {
    "CUDA": "CUDAExecutionProvider",
    "ROCm": "ROCMExecutionProvider",
    "DirectML": "DmlExecutionProvider",
    "CoreML": "CoreMLExecutionProvider",
    "CPU": "CPUExecutionProvider",
}
AUTO_PROVIDER_ORDER = ("CUDA", "ROCm", "DirectML", "CoreML", "CPU")
ONNXRUNTIME_DISTRIBUTIONS = (
    "onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-rocm", "onnxruntime-silicon",
    "onnxruntime-openvino", "onnxruntime-qnn",
)
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
SAME_PERSON_THRESHOLD = 0.3       # ArcFace cosine below which two photos are likely different people
SMALL_FACE_PX = 48                # faces narrower than this give unreliable identity
MIN_IMAGE_PX = 16
MAX_RECOGNIZER_BATCH = 64
_CACHE_SIZE = 4


class FaceAnalysisError(RuntimeError):
    """A problem the user can fix; the message says what, where and how."""


class FacePackError(FaceAnalysisError):
    """The model pack is missing, incomplete or unreadable."""


class NoFaceError(FaceAnalysisError):
    """No face in one (or several) of the images."""

    def __init__(self, message: str, image_indices: Sequence[int]):
        super().__init__(message)
        self.image_indices = list(image_indices)


class FaceImageError(ValueError):
    """An input image that cannot be analysed (empty, NaN, wrong shape)."""


def which_image(index: int, count: int) -> str:
    return f"image {index + 1} of {count} (batch index {index})"


# -- pack discovery ---------------------------------------------------------------------------------
@dataclass
class PackLocation:
    name: str
    folder: Path                  # the folder that holds the .onnx files
    notes: list[str] = field(default_factory=list)


def default_search_roots() -> list[Path]:
    """Outside ComfyUI: ``IAD_INSIGHTFACE_ROOT`` (os.pathsep-separated), then ``~/.insightface``."""
    roots = [Path(p) for p in os.environ.get("IAD_INSIGHTFACE_ROOT", "").split(os.pathsep) if p]
    return roots + [Path("~/.insightface").expanduser()]


def _onnx_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".onnx" and p.is_file())
    except OSError:
        return []


def _nested_pack_folder(folder: Path, name: str) -> Path | None:
    """The folder one (or two) levels down that holds the .onnx files, if the pack was unzipped
    into a folder of its own name (``antelopev2/antelopev2/``) or any single subfolder."""
    preferred = [folder / name, folder / "models" / name]
    for candidate in preferred:
        if _onnx_files(candidate):
            return candidate
    try:
        subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return None
    with_models = [p for p in subfolders if _onnx_files(p)]
    return with_models[0] if len(with_models) == 1 else None


def _roots(search_roots: Iterable[str | os.PathLike] | None) -> list[Path]:
    roots = default_search_roots() if search_roots is None else [Path(r).expanduser() for r in search_roots]
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def list_packs(search_roots: Iterable[str | os.PathLike] | None = None) -> list[str]:
    """Names of the pack folders under ``<root>/models/`` (and ``<root>/``) of every root that hold
    .onnx files directly or one level down."""
    names: list[str] = []
    for root in _roots(search_roots):
        for parent in (root / "models", root):
            try:
                folders = sorted(p for p in parent.iterdir() if p.is_dir())
            except OSError:
                continue
            for folder in folders:
                if folder.name == "models" and parent == root:
                    continue
                if (_onnx_files(folder) or _nested_pack_folder(folder, folder.name)) and folder.name not in names:
                    names.append(folder.name)
    return names


def _expected_files(name: str) -> str:
    files = KNOWN_PACK_FILES.get(name)
    if files:
        return ", ".join(files)
    return f"the pack's .onnx files: at least a {ROLE_NAMES['detection']} and an {ROLE_NAMES['recognition']}"


def _expected_files_text(name: str) -> str:
    return "containing " + _expected_files(name)


def locate_pack(pack: str | os.PathLike, search_roots: Iterable[str | os.PathLike] | None = None) -> PackLocation:
    """Find a pack folder by name under the search roots, or use ``pack`` as a folder path."""
    text = str(pack).strip()
    if not text:
        raise FacePackError("No face model pack given: choose one (e.g. antelopev2).")
    direct = Path(text).expanduser()
    roots = _roots(search_roots)
    if direct.is_absolute() or os.sep in text or (os.altsep and os.altsep in text):
        candidates = [direct]
        name = direct.name
    else:
        name = text
        candidates = [c for root in roots for c in (root / "models" / name, root / name)]
    empty: list[Path] = []
    for folder in candidates:
        if not folder.is_dir():
            continue
        if _onnx_files(folder):
            notes = []
            if folder.parent.name != "models" and folder != direct:
                notes.append(f"Found pack '{name}' at {folder} (expected under a 'models' folder: "
                             f"{folder.parent / 'models' / name}); using it.")
            return PackLocation(name, folder, notes)
        nested = _nested_pack_folder(folder, name)
        if nested is not None:
            return PackLocation(name, nested, [
                f"Pack '{name}' is unpacked one level too deep: the model files are in {nested} instead of "
                f"{folder}. Using them. (To silence this note, move the .onnx files up into {folder}.)"
            ])
        empty.append(folder)
    expected = candidates[0] if candidates else Path("<ComfyUI>/models/insightface/models") / name
    if empty:
        raise FacePackError(
            f"Face model pack folder {empty[0]} exists but holds no .onnx files (nor does any subfolder). "
            f"Put the model files there: {_expected_files_text(name)}. "
            "IaD never downloads models; unzip the pack (e.g. antelopev2.zip) into that folder."
        )
    found = list_packs(roots)
    searched = ", ".join(str(c) for c in candidates) if candidates else "(no search folders)"
    raise FacePackError(
        f"Face model pack '{name}' not found. Expected the folder {expected}{os.sep} {_expected_files_text(name)}. "
        f"Searched: {searched}. "
        + (f"Packs that were found: {', '.join(found)}. " if found else "No model packs were found at all. ")
        + "IaD never downloads models: get the pack (the same antelopev2 PuLID/InstantID use) and unzip it "
        f"so the .onnx files sit directly in {expected}{os.sep}."
    )


def pack_fingerprint(pack: str | os.PathLike, search_roots: Iterable[str | os.PathLike] | None = None) -> str:
    """Changes whenever the pack's files (or where it is found) change; cheap (no model loading)."""
    try:
        location = locate_pack(pack, search_roots)
    except FacePackError as exc:
        return f"error: {exc}"
    files = []
    for path in _onnx_files(location.folder):
        stat = path.stat()
        files.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return f"{location.folder}|" + "|".join(files)


# -- onnxruntime providers ----------------------------------------------------------------------------
def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def provider_choices(available: Sequence[str] | None = None) -> list[str]:
    """``auto`` plus the short names of the providers this onnxruntime actually has."""
    available = available_providers() if available is None else list(available)
    return ["auto"] + [short for short, full in PROVIDERS.items() if full in available]


def resolve_providers(choice: str = "auto", available: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """onnxruntime provider list for a dropdown choice (CPU always last, as the fallback), and notes."""
    available = available_providers() if available is None else list(available)
    notes: list[str] = []
    if choice == "auto":
        short = next((s for s in AUTO_PROVIDER_ORDER if PROVIDERS[s] in available), None)
        primary = PROVIDERS[short] if short else (available[0] if available else "CPUExecutionProvider")
    else:
        primary = PROVIDERS.get(choice, choice)
        if primary not in available:
            notes.append(f"Execution provider '{choice}' is not available in this onnxruntime "
                         f"(available: {', '.join(available) or 'none'}); running on CPU instead.")
            primary = "CPUExecutionProvider"
    providers = [primary]
    if primary != "CPUExecutionProvider" and "CPUExecutionProvider" in available:
        providers.append("CPUExecutionProvider")
    return providers, notes


def provider_fallback_note(requested: Sequence[str], actual: dict[str, list[str]],
                           available: Sequence[str] | None = None) -> str | None:
    """Why the sessions do not run on the requested provider (None when they do)."""
    primary = requested[0] if requested else "CPUExecutionProvider"
    fell_back = sorted(role for role, providers in actual.items() if not providers or providers[0] != primary)
    if primary == "CPUExecutionProvider" or not fell_back:
        return None
    names = {v: k for k, v in PROVIDERS.items()}
    short = names.get(primary, primary)
    available = available_providers() if available is None else list(available)
    if primary not in available:
        why = (f"this onnxruntime has no {short} provider (it offers {', '.join(available) or 'nothing'}; installed "
               f"distributions: {', '.join(installed_onnxruntime_distributions()) or 'none'})")
    else:
        why = (f"onnxruntime offers {short} but could not start it (its {short} libraries, e.g. CUDA/cuDNN, did not "
               "load; onnxruntime's own error is in the log above)")
    runs_on = sorted({names.get(p[0], p[0]) for p in actual.values() if p})
    return (f"Face analysis runs on {', '.join(runs_on)}, not {short}, for {', '.join(fell_back)}: {why}. "
            f"Results are the same, only slower. Fix: {ONNXRUNTIME_FIX}.")


def installed_onnxruntime_distributions() -> list[str]:
    names = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata.get("Name") or "").strip().lower().replace("_", "-")
        if name in ONNXRUNTIME_DISTRIBUTIONS:
            names.add(name)
    return sorted(names)


def _torch_sees_cuda() -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install must not break face analysis
        return False


ONNXRUNTIME_FIX = ("with the Python that runs ComfyUI: `python -m pip uninstall -y onnxruntime onnxruntime-gpu` then "
                   "`python -m pip install onnxruntime-gpu` (portable Windows build: python_embeded\\python.exe -m pip ...; "
                   "macOS / ARM: install `onnxruntime` instead)")


def onnxruntime_warning(distributions: Sequence[str] | None = None, available: Sequence[str] | None = None,
                        torch_cuda: bool | None = None) -> str | None:
    """One warning (or None) about the onnxruntime install: both CPU and GPU distributions present
    (they overwrite each other's files), or no GPU provider while torch sees CUDA."""
    distributions = installed_onnxruntime_distributions() if distributions is None else list(distributions)
    available = available_providers() if available is None else list(available)
    torch_cuda = _torch_sees_cuda() if torch_cuda is None else torch_cuda
    problems = []
    if len(distributions) > 1:
        problems.append(
            f"{' and '.join(distributions)} are installed together: they install into the same `onnxruntime` folder and "
            "overwrite each other's files, so which one works depends on install order (insightface pulls in plain "
            "onnxruntime)."
        )
    gpu_providers = {PROVIDERS[s] for s in ("CUDA", "ROCm", "DirectML", "CoreML")}
    if torch_cuda and not gpu_providers & set(available):
        problems.append(
            "onnxruntime has no GPU execution provider although torch sees a CUDA GPU, so face analysis runs on the "
            f"CPU (correct, only slower). onnxruntime reports: {', '.join(available) or 'nothing'}."
        )
    if not problems:
        return None
    return "onnxruntime: " + " ".join(problems) + f" Fix: {ONNXRUNTIME_FIX}."


_warned_once: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned_once:
        _warned_once.add(message)
        log.warning("[IaD face analysis] %s", message)


# -- images -------------------------------------------------------------------------------------------
def as_rgb_uint8(image, index: int = 0, count: int = 1) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a numpy array / torch tensor: uint8 0..255 or float 0..1;
    (H, W) or (H, W, 1) grayscale, RGB, or RGBA (alpha dropped). Rejects empty, NaN and tiny images."""
    where = which_image(index, count)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype in (torch.bfloat16, torch.float16):
            image = image.float()
        image = image.numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        raise FaceImageError(f"{where} looks channels-first {array.shape}; pass (height, width, channels).")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise FaceImageError(f"{where} has shape {tuple(array.shape)}; expected (height, width, 1/3/4 channels).")
    h, w = array.shape[:2]
    if h == 0 or w == 0:
        raise FaceImageError(f"{where} is empty ({w}x{h} px).")
    if min(h, w) < MIN_IMAGE_PX:
        raise FaceImageError(f"{where} is only {w}x{h} px, too small to hold a recognisable face; "
                             "use a photo where the face is at least ~64 px wide.")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_:
            raise FaceImageError(f"{where} has dtype {array.dtype}; expected uint8 or float.")
        as_float = array.astype(np.float32, copy=False)
        if not np.isfinite(as_float).all():
            bad = int((~np.isfinite(as_float)).sum())
            raise FaceImageError(f"{where} contains {bad} NaN/infinite values: the node that produced it failed "
                                 "upstream. Check the image source (decode, resize, VAE).")
        scale = 1.0 if np.issubdtype(array.dtype, np.integer) else 255.0
        array = np.clip(as_float * scale + (0.5 if scale == 255.0 else 0.0), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    return np.ascontiguousarray(array)


def images_to_rgb_uint8(images) -> list[np.ndarray]:
    """A batch (ComfyUI IMAGE tensor [B, H, W, C] float 0..1, a uint8 array, or a list of images)
    as a list of (H, W, 3) uint8 RGB arrays. A float batch is checked and converted in one pass;
    errors name the image."""
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point() and images.shape[0] > 0:
        count = images.shape[0]
        flat = images.detach().reshape(count, -1)
        if flat.shape[1] == 0:
            raise FaceImageError(f"{which_image(0, count)} is empty ({images.shape[2]}x{images.shape[1]} px).")
        finite = torch.isfinite(flat).all(dim=1)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            return [as_rgb_uint8(images[bad], bad, count)]  # raises with the image named
        if images.shape[-1] in (1, 3, 4) and min(images.shape[1:3]) >= MIN_IMAGE_PX:
            converted = (images.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
            return [as_rgb_uint8(converted[i], i, count) for i in range(count)]
    items = _image_list(images)
    return [as_rgb_uint8(img, i, len(items)) for i, img in enumerate(items)]


def _images_to_bgr_uint8(images) -> list[np.ndarray]:
    """Like ``images_to_rgb_uint8`` but BGR (what insightface's models take). A float RGB batch is
    converted frame by frame through one reused scratch buffer: several times faster than whole-
    batch tensor ops, which allocate (and page-fault) hundreds of MB for a video."""
    if (isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point() and images.shape[0] > 0
            and images.shape[-1] == 3 and min(images.shape[1:3]) >= MIN_IMAGE_PX):
        import cv2

        count = images.shape[0]
        array = images.detach().cpu().float().numpy()
        scratch = np.empty(array.shape[1:], dtype=np.float32)
        flat = scratch.reshape(-1)
        converted = []
        for i, frame in enumerate(array):
            np.multiply(frame, 255.0, out=scratch)
            scratch += 0.5
            # NaN/inf propagate into the dot product (one BLAS pass, ~4x cheaper than .sum()); a
            # huge finite value that overflows it is re-checked exactly below and passes.
            with np.errstate(over="ignore", invalid="ignore"):
                finite = np.isfinite(np.dot(flat, flat))
            if not finite:
                as_rgb_uint8(frame, i, count)   # raises, naming the image, if really non-finite
            np.clip(scratch, 0, 255, out=scratch)
            converted.append(cv2.cvtColor(scratch.astype(np.uint8), cv2.COLOR_RGB2BGR))
        return converted
    return [np.ascontiguousarray(rgb[..., ::-1]) for rgb in images_to_rgb_uint8(images)]


def _image_list(images) -> list:
    if isinstance(images, torch.Tensor) or isinstance(images, np.ndarray):
        if images.ndim == 4:
            return [images[i] for i in range(images.shape[0])]
        if images.ndim in (2, 3):
            return [images]
        raise FaceImageError(f"images has shape {tuple(images.shape)}; expected (batch, height, width, channels).")
    return list(images)


# -- the analyzer -------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    bbox: np.ndarray        # (4,) source-image pixels
    kps: np.ndarray         # (5, 2)
    score: float

    @property
    def area(self) -> float:
        return float(max(self.bbox[2] - self.bbox[0], 0) * max(self.bbox[3] - self.bbox[1], 0))


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
             provider: str = "auto", det_size: int = 640, *, cache: bool = True) -> "FaceAnalyzer":
        """Find and load a pack. ``provider`` is ``auto`` or a key of ``PROVIDERS`` (or a full
        onnxruntime provider name). Loaded once per (folder, files, providers, det_size)."""
        det_size = int(det_size)
        if det_size % 32 or not 64 <= det_size <= 2048:
            raise FaceAnalysisError(f"Detection size {det_size} is invalid: use a multiple of 32 between 64 and 2048 "
                                    "(640 is the usual value).")
        location = locate_pack(pack, search_roots)
        providers, notes = resolve_providers(provider)
        warning = onnxruntime_warning(available=None)
        if warning:
            _warn_once(warning)
            notes.append(warning)
        key = (str(location.folder.resolve()), tuple(providers), det_size, pack_fingerprint(location.folder))
        if cache:
            with _CACHE_LOCK:
                cached = _CACHE.get(key)
            if cached is not None:
                return cached
        models, files, load_notes = _route_pack(location, providers)
        for note in location.notes + notes:
            if note != warning:  # the onnxruntime warning is logged once per process, above
                log.info("[IaD face analysis] %s", note)
        analyzer = cls(location, models, files, providers, det_size, location.notes + notes + load_notes)
        if cache:
            with _CACHE_LOCK:
                _CACHE[key] = analyzer
                while len(_CACHE) > _CACHE_SIZE:
                    _CACHE.pop(next(iter(_CACHE)))
        return analyzer

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
        return f"{self.name} ({roles}) on {self.device}, detection size {self.det_size}"

    # ---- detection
    def _detect_once(self, bgr: np.ndarray, det_size: int, min_score: float) -> tuple[np.ndarray, np.ndarray]:
        bboxes, kpss = self.detector.detect(bgr, input_size=(det_size, det_size), det_thresh=float(min_score))
        return bboxes, kpss

    def _candidates(self, bgr: np.ndarray, min_score: float, retry: bool) -> tuple[list[_Candidate], str | None, int]:
        """Faces in one BGR image, best score first, how they were found if not on the first try, and
        how many detections in padded images were rejected for lying outside the photo."""
        import cv2

        sizes = [self.det_size] + ([s for s in RETRY_DET_SIZES if s < self.det_size] if retry else [])
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
            bboxes, kpss = self._detect_once(image, det_size, min_score)
            if len(bboxes) == 0:
                continue
            offset = np.array([left, top], dtype=np.float32)
            found = [
                _Candidate(bbox=(b[:4] - np.tile(offset, 2)).astype(np.float32),
                           kps=(k - offset).astype(np.float32), score=float(b[4]))
                for b, k in zip(bboxes, kpss)
            ]
            if pad:
                kept = [c for c in found if _inside_photo(c, h, w, min_score)]
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

    def _tried_text(self, retry: bool) -> str:
        if not retry:
            return f"at detection size {self.det_size}"
        smaller = [s for s in RETRY_DET_SIZES if s < self.det_size]
        return (f"at detection size {self.det_size}, retrying at {'/'.join(map(str, smaller)) or 'no smaller size'} "
                f"and with {' and '.join(f'{int(p * 100)}%' for p in RETRY_PADDINGS)} padding around the image")

    def detect(self, image, *, min_score: float = 0.5, retry: bool = True, landmarks: bool = True,
               image_index: int = 0) -> list[DetectedFace]:
        """Every face in one RGB image (best detection score first), with embeddings (one batched
        recognizer call) and landmarks when the pack has them. An empty list if there is none."""
        bgr = np.ascontiguousarray(as_rgb_uint8(image, image_index, image_index + 1)[..., ::-1])
        candidates, _, _ = self._candidates(bgr, min_score, retry)
        return self._faces([(image_index, bgr, c) for c in candidates], landmarks)

    def _faces(self, found: list[tuple[int, np.ndarray, _Candidate]], landmarks: bool) -> list[DetectedFace]:
        """DetectedFace records for (image index, BGR image, candidate): one batched recognizer call,
        one batched call per landmark model."""
        if not found:
            return []
        crops = [self._align_bgr(bgr, c.kps)[..., ::-1] for _, bgr, c in found]
        embeddings = self.embed_aligned(crops)
        faces = [DetectedFace(image_index=i, bbox=c.bbox, kps=c.kps, det_score=c.score, embedding=z,
                              aligned_crop=np.ascontiguousarray(crop))
                 for (i, _, c), crop, z in zip(found, crops, embeddings)]
        if landmarks and self.landmarks:
            self._add_landmarks([bgr for _, bgr, _ in found], faces)
        return faces

    def _add_landmarks(self, bgrs: list[np.ndarray], faces: list[DetectedFace]) -> None:
        """insightface's Landmark preprocessing and decoding (crop of 1.5x the box, inverse affine,
        pose from the 3D mean shape), but one session run per model for all faces."""
        import cv2
        from insightface.utils import transform as ins_transform

        for role, model in self.landmarks.items():
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

    # ---- alignment and embedding
    def _align_bgr(self, bgr: np.ndarray, kps: np.ndarray) -> np.ndarray:
        from insightface.utils import face_align

        with warnings.catch_warnings():  # scikit-image deprecation inside insightface, once per face otherwise
            warnings.simplefilter("ignore", FutureWarning)
            return face_align.norm_crop(bgr, landmark=np.asarray(kps, dtype=np.float32), image_size=self.crop_size)

    def align(self, image, kps: np.ndarray) -> np.ndarray:
        """The ArcFace-aligned (crop_size x crop_size) RGB uint8 crop for 5 keypoints."""
        rgb = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 else as_rgb_uint8(image)
        return self._align_bgr(rgb, kps)  # a pure warp: channel order passes through

    def embed_aligned(self, crops) -> torch.Tensor:
        """(N, D) float32 L2-normalised embeddings of aligned RGB crops, in batched recognizer calls
        (one call per up to 64 crops; one per crop only if the model has a fixed batch of 1)."""
        import cv2

        batch = [as_rgb_uint8(c, i, len(crops)) for i, c in enumerate(_image_list(crops))]
        if not batch:
            return torch.zeros(0, 512)
        size = (self.crop_size, self.crop_size)
        bgr = [np.ascontiguousarray((c if c.shape[:2] == size else cv2.resize(c, size, interpolation=cv2.INTER_AREA))[..., ::-1])
               for c in batch]
        step = MAX_RECOGNIZER_BATCH if self.recognizer_batches else 1
        outputs = [np.asarray(self.recognizer.get_feat(bgr[i:i + step]), dtype=np.float32) for i in range(0, len(bgr), step)]
        features = np.concatenate(outputs, 0).reshape(len(bgr), -1)
        # numpy, not torch: torch.isfinite(...).all() on these few thousand numbers measured 13-30 ms
        # per call right after the onnxruntime runs (2 busy cores); numpy's check takes microseconds.
        if not np.isfinite(features).all():
            raise FaceAnalysisError(f"The recognizer {self.files['recognition']} produced NaN/infinite embeddings; the "
                                    "model file is probably corrupt: replace it.")
        return torch.nn.functional.normalize(torch.from_numpy(features), dim=1)

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
        bgrs = _images_to_bgr_uint8(images)
        count = len(bgrs)
        info: list[str] = []
        selected: list[tuple[int, _Candidate]] = []
        missing: list[int] = []
        outside = 0
        for i, bgr in enumerate(bgrs):
            where = which_image(i, count)
            candidates, how, rejected = self._candidates(bgr, min_score, retry)
            if not candidates:
                missing.append(i)
                outside += rejected
                continue
            chosen = self._select(candidates, policy, face_index, where)
            line = f"{where}: face at {_box_text(chosen.bbox)} (score {chosen.score:.2f})"
            if len(candidates) > 1:
                rule = {"largest": "the largest", "most confident": "the most confident",
                        "index": f"face {face_index} from the left"}[policy]
                line = f"{where}: {len(candidates)} faces found, picked {rule}: {_box_text(chosen.bbox)} (score {chosen.score:.2f})"
            if how:
                line += f"; {how}"
            width = float(chosen.bbox[2] - chosen.bbox[0])
            if width < SMALL_FACE_PX:
                line += f"; the face is only {width:.0f} px wide, identity may be unreliable (use a larger photo)"
            info.append(line)
            selected.append((i, chosen))
        if missing:
            listed = ", ".join(which_image(i, count) for i in missing)
            message = (f"No face found in {listed} (tried {self._tried_text(retry)}, minimum score {min_score:.2f}"
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

    @staticmethod
    def _select(candidates: list[_Candidate], policy: str, face_index: int, where: str) -> _Candidate:
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


def _inside_photo(candidate: _Candidate, height: int, width: int, min_score: float) -> bool:
    """Whether a detection in a padded image is a face *of the photo* (see PADDED_MIN_INSIDE)."""
    x0, y0, x1, y1 = (float(v) for v in candidate.bbox)
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    inside = max(min(x1, width) - max(x0, 0.0), 0.0) * max(min(y1, height) - max(y0, 0.0), 0.0)
    kps = candidate.kps
    landmarks_inside = bool(((kps[:, 0] >= 0) & (kps[:, 0] <= width) & (kps[:, 1] >= 0) & (kps[:, 1] <= height)).all())
    return candidate.score >= min_score and area > 0 and inside >= PADDED_MIN_INSIDE * area and landmarks_inside


def _box_text(bbox: np.ndarray) -> str:
    x1, y1, x2, y2 = (int(round(float(v))) for v in bbox[:4])
    return f"x {x1}..{x2}, y {y1}..{y2}"


def same_person_warning(embeds: FaceEmbeds, threshold: float = SAME_PERSON_THRESHOLD, image_count: int | None = None) -> str | None:
    """A warning naming the reference photos that do not look like the others (pairwise ArcFace
    cosine below ``threshold``), or None when they agree."""
    z = embeds.embeddings()
    n = z.shape[0]
    if n < 2:
        return None
    count = image_count or max(f.image_index for f in embeds.faces) + 1
    sim = (z @ z.T).numpy()
    names = [which_image(f.image_index, count) for f in embeds.faces]
    agrees = sim >= threshold
    np.fill_diagonal(agrees, False)
    # The identity is the largest group that agrees with one photo; everyone else is an outlier.
    anchor = max(range(n), key=lambda k: (int(agrees[k].sum()), float(sim[k].sum())))
    if not agrees[anchor].any():
        if n == 2:
            return (f"Identity warning: {names[0]} and {names[1]} do not look like the same person (cosine "
                    f"{sim[0, 1]:.2f} < {threshold:.2f}). Use photos of one person only.")
        return (f"Identity warning: no two of the {n} reference photos look like the same person (mean pairwise cosine "
                f"{(sim.sum() - n) / (n * (n - 1)):.2f} < {threshold:.2f}). Use photos of one person only.")
    group = {anchor} | {k for k in range(n) if agrees[anchor, k]}
    outliers = [k for k in range(n) if k not in group]
    if not outliers:
        return None
    mean_to_group = {k: float(np.mean([sim[k, g] for g in group])) for k in outliers}
    listed = "; ".join(f"{names[k]} (mean cosine to the others {mean_to_group[k]:.2f})" for k in outliers)
    return (f"Identity warning: {listed} do{'es' if len(outliers) == 1 else ''} not look like the same person as the "
            f"other {len(group)} photos (threshold {threshold:.2f}). Remove {'it' if len(outliers) == 1 else 'them'} or "
            "check the face selection.")


def face_mask(bbox: np.ndarray, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32 mask, 1 inside the ellipse inscribed in the face box. Written into ``out``
    (e.g. a view of a MASK batch) when given; only the box region is computed."""
    mask = np.zeros((height, width), dtype=np.float32) if out is None else out
    x1, y1, x2, y2 = (float(v) for v in bbox[:4])
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx, ry = max((x2 - x1) / 2, 1e-3), max((y2 - y1) / 2, 1e-3)
    top, bottom = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)) + 1, height)
    left, right = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)) + 1, width)
    if top >= bottom or left >= right:
        return mask
    ys = (np.arange(top, bottom, dtype=np.float32) + 0.5 - cy) / ry
    xs = (np.arange(left, right, dtype=np.float32) + 0.5 - cx) / rx
    region = mask[top:bottom, left:right]
    np.maximum(region, (ys[:, None] ** 2 + xs[None, :] ** 2) <= 1.0, out=region)
    return mask


_SCRFD_FORWARD_ATTRIBUTES = ("fmc", "_feat_stride_fpn", "_num_anchors", "center_cache", "batched", "use_kps",
                             "_prepare_input_blob", "_session_for_input_size", "output_names", "input_name")


def _use_sparse_decode(detector) -> None:
    """Give THIS detector instance (ours, from ``_route_pack``) a forward that decodes only the
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


def _route_pack(location: PackLocation, providers: list[str]) -> tuple[dict, dict[str, Path], list[str]]:
    """Load every .onnx file in the pack folder through insightface's own router and check roles."""
    try:
        from insightface.model_zoo import model_zoo
    except ImportError as exc:
        raise FacePackError(f"insightface is not installed ({exc}). Install it into ComfyUI's Python: "
                            "`python -m pip install \"insightface>=2.1\"`.") from exc
    wanted = set(REQUIRED_ROLES) | set(LANDMARK_ROLES)
    models: dict = {}
    files: dict[str, Path] = {}
    routed: list[str] = []
    notes: list[str] = []
    for path in _onnx_files(location.folder):
        try:
            model = model_zoo.get_model(str(path), providers=providers)
        except Exception as exc:  # a truncated or foreign file: say which one
            raise FacePackError(f"Could not load {path}: {type(exc).__name__}: {exc}. The file is corrupt or incomplete "
                                f"(an interrupted download?): replace it, or remove it from {location.folder}.") from exc
        task = getattr(model, "taskname", None) if model is not None else None
        routed.append(f"{path.name} -> {task or 'not a face model'}")
        if task not in wanted:
            continue
        if task in models:
            notes.append(f"{path.name} is a second {task} model in {location.folder}; using {files[task].name}.")
            continue
        models[task] = model
        files[task] = path
    missing = [role for role in REQUIRED_ROLES if role not in models]
    if missing:
        what = " and ".join(ROLE_NAMES[r] for r in missing)
        raise FacePackError(
            f"Face model pack folder {location.folder} has no {what}. Files found: {'; '.join(routed) or 'none'}. "
            f"The pack is incomplete: re-extract it so the folder holds {_expected_files(location.name)}."
        )
    detector = models["detection"]
    if not getattr(detector, "use_kps", False):
        raise FacePackError(
            f"The detector {files['detection']} has no keypoint outputs (a 6-output SCRFD), so faces cannot be aligned for "
            "the recognizer. Use a detector with keypoints: antelopev2's scrfd_10g_bnkps.onnx or buffalo_l's det_10g.onnx.")
    detector.prepare(0, det_thresh=0.5)
    _use_sparse_decode(detector)
    for role, model in models.items():
        if role != "detection":
            model.prepare(0)
    return models, files, notes


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
