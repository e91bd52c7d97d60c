"""Finding and loading an insightface model pack: pack folders where users keep them (also one
level too deep, as the official zip unpacks), each ONNX file routed by insightface itself, the
roles a pack must have. Nothing is ever downloaded."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .detection import use_sparse_decode
from .report import FacePackError

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


def route_pack(location: PackLocation, providers: list[str], session: dict | None = None
               ) -> tuple[dict, dict[str, Path], list[str]]:
    """Load every .onnx file in the pack folder through insightface's own router and check roles.
    ``session``: extra onnxruntime session arguments (``providers.session_settings``)."""
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
            model = model_zoo.get_model(str(path), providers=providers, **(session or {}))
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
    use_sparse_decode(detector)
    for role, model in models.items():
        if role != "detection":
            model.prepare(0)
    return models, files, notes
