"""Where the GPU check finds ComfyUI v0.28.2 and the packages the machine lacks.

On the GPU machine: the carried bundle (``.gpu/``, scripts/gpu_bundle.py), restored once into a folder
outside the tree (``IAD_GPU_DIR``, default /tmp/iad-gpu): its ComfyUI tree and a site folder that goes
first on ``PYTHONPATH``. Elsewhere (a developer's GPU box, the CPU smoke run): the v0.28.2 lane that
``make setup`` prepared (scripts/lanes.py), or ``COMFYUI_PATH``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / ".gpu"


def _scripts(name: str):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def gpu_visible() -> bool:
    """A quick look, before torch is imported: is there an NVIDIA device at all?"""
    return shutil.which("nvidia-smi") is not None or any(Path("/dev").glob("nvidia[0-9]*"))


def comfyui_version(tree: Path) -> str:
    text = (Path(tree) / "comfyui_version.py").read_text() if (Path(tree) / "comfyui_version.py").is_file() else ""
    found = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    return found.group(1) if found else "unknown"


def add_bundle_option(parser) -> None:
    """``--bundle`` of gpu_check.py and gpu_world.py: their CPU smoke run on the restored bundle."""
    parser.add_argument("--bundle", action="store_true", help="with --cpu-smoke: ComfyUI and the wheels from the restored "
                        "bundle .gpu/, as on the GPU machine, not the v0.28.2 lane (make gpu-twin)")


def uses_bundle(parser, args) -> bool:
    """Whether the run restores ``.gpu/``: always on the GPU; a CPU smoke run only with ``--bundle``."""
    if args.bundle and not args.cpu_smoke:
        parser.error("--bundle goes with --cpu-smoke (on the GPU machine the bundle is always used)")
    return not args.cpu_smoke or args.bundle


def prepare(work: Path, use_bundle: bool) -> tuple[dict, dict]:
    """(environment for the phases, what was used). ``use_bundle``: restore ``.gpu/`` (the GPU machine)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["IAD_CACHE_DIR"] = str(work / "cache")
    env["IAD_LANE"] = "gpu-check"
    site = None
    if use_bundle and (BUNDLE / "manifest.json").is_file():
        target = Path(os.environ.get("IAD_GPU_DIR", "/tmp/iad-gpu"))
        paths = _scripts("gpu_bundle").restore(BUNDLE, target)
        tree, site, source = Path(paths["comfyui"]), paths["site"], f"bundle .gpu/ restored in {target}"
    elif os.environ.get("COMFYUI_PATH"):
        tree, source = Path(os.environ["COMFYUI_PATH"]), "COMFYUI_PATH"
    else:
        lanes = _scripts("lanes")
        lane = lanes.lanes().get("v0.28.2")
        if lane is None:
            raise SystemExit("no ComfyUI v0.28.2: build the bundle (make gpu-bundle) or run `make setup`")
        lane_env = lanes.lane_env(lane)
        tree, site, source = Path(lane["comfyui"]), lane["site"], "the v0.28.2 lane (make setup)"
        env["PYTHONPATH"] = lane_env["PYTHONPATH"]
        site = None
    if site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
    env["COMFYUI_PATH"] = str(tree)
    env.pop("IAD_FRONTEND_ROOT", None)
    return env, {"path": str(tree), "version": comfyui_version(tree), "source": source}
