"""Registers the pack's model folders with ComfyUI's ``folder_paths``.

- ``models/iad``: IaD adapter checkpoints (``.safetensors``).
- ``models/insightface``: insightface model packs, laid out as ``insightface/models/<pack>/*.onnx``
  (the layout insightface itself and the PuLID/InstantID packs use).
- ``models/facexlib``: facexlib's IR-SE50 ArcFace weights (the recognizer Lynx was trained on).

A user's ``extra_model_paths.yaml`` may already define these keys (for example to share one
insightface folder between packs). ``folder_paths.add_model_folder_path`` on a new key would
create an entry with an empty extension set, and re-registering could drop the user's paths, so
we *merge*: keep every path the user configured, append the default folder if missing, and make
sure the extension filter is the one we need.
"""

import os

import folder_paths

IAD_FOLDER = "iad"
INSIGHTFACE_FOLDER = "insightface"
FACEXLIB_FOLDER = "facexlib"  # facexlib's own folder name: IR-SE50 weights for Lynx adapters

_EXTENSIONS = {
    IAD_FOLDER: {".safetensors"},
    # Pack folders, not files, are listed from here; no filter on the folder itself.
    INSIGHTFACE_FOLDER: set(),
    FACEXLIB_FOLDER: {".pth", ".pt", ".safetensors"},
}


def register_model_folders() -> None:
    for key, extensions in _EXTENSIONS.items():
        default_path = os.path.join(folder_paths.models_dir, key)
        existing = folder_paths.folder_names_and_paths.get(key)
        if existing is None:
            folder_paths.folder_names_and_paths[key] = ([default_path], set(extensions))
            continue
        paths, current_extensions = existing
        paths = list(paths)
        if os.path.normpath(default_path) not in {os.path.normpath(p) for p in paths}:
            paths.append(default_path)  # user paths first: they win on name clashes
        merged_extensions = set(current_extensions) | set(extensions)
        if not extensions:
            merged_extensions = set(current_extensions)
        folder_paths.folder_names_and_paths[key] = (paths, merged_extensions)
