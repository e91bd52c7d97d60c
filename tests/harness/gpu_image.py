"""A stand-in here for the GPU machine's Python packages, to test what the GPU bundle must carry.

The GPU image has its own list of packages (``scripts/gpu_bundle.py``: ``GPU_IMAGE_PACKAGES``). This
makes a folder of links to this environment's copies of exactly those packages (and what they need
here to import), and nothing that ComfyUI or the pack requires beyond them. A Python started with
``-S`` (no site-packages) and ``PYTHONPATH=<restored bundle site>:<this folder>`` then sees what the GPU
machine's Python sees once the bundle is installed: a package the bundle forgot fails here as there.

What differs from the GPU image (docs/gpu.md): this Python (3.11 here, 3.12.3 there), the versions of
the image's packages (this environment's; torch 2.15 CPU here, 2.11 cu130 there), and the bundle's
compiled wheels, which a test takes from the bundle's CPython 3.11 twin (the same versions).
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from .paths import REPO_ROOT


def _gpu_bundle():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import gpu_bundle
    finally:
        sys.path.pop(0)
    return gpu_bundle


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[ ;<>=!~\[(]", line, 1)[0])
    return names


def build_image_folder(dest: Path, comfyui: Path) -> dict:
    """Links in ``dest`` to this environment's copies of the GPU image's packages (by their top-level
    files) and of what they need to import here, leaving out every package that ComfyUI's or this
    pack's requirements name and the image lacks. Returns what was linked and what was left out."""
    gb = _gpu_bundle()
    canonical = gb.canonical
    image = set(gb.GPU_IMAGE_PACKAGES) | {k for k, v in gb.SAME_MODULE.items() if v in gb.GPU_IMAGE_PACKAGES}
    required = {canonical(n) for n in _requirement_names(comfyui / "requirements.txt") | _requirement_names(
        REPO_ROOT / "requirements.txt")} | {canonical(w[0].split("==")[0]) for w in gb.WHEELS}
    never = required - image
    here = {canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    chosen = {name for name in image if name in here}
    stack = sorted(chosen)
    while stack:
        for text in here[stack.pop()].requires or []:
            if "extra ==" in text:
                continue
            name = canonical(re.split(r"[ ;<>=!~\[(]", text, 1)[0])
            if name in here and name not in chosen and name not in never:
                chosen.add(name)
                stack.append(name)
    dest.mkdir(parents=True, exist_ok=True)
    for name in sorted(chosen):
        dist = here[name]
        for top in sorted({Path(f).parts[0] for f in dist.files or [] if Path(f).parts[0] != ".."}):
            source, link = Path(dist.locate_file(top)), dest / top
            if source.exists() and not link.exists() and not top.endswith(".pth"):
                link.symlink_to(source, target_is_directory=source.is_dir())
    return {"linked": sorted(chosen), "left_out": sorted(never & set(here)),
            "image_packages_missing_here": sorted(image - set(here))}
