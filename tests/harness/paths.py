"""Where things are: the repository, ComfyUI, and the cache of generated tiny models.

The ComfyUI under test is a *lane* (``scripts/lanes.py``): ``make test`` runs the suite once per
lane with ``COMFYUI_PATH``, ``PYTHONPATH`` (that ComfyUI's own frontend/templates pins) and
``IAD_CACHE_DIR`` set. A plain ``pytest`` (no lane in the environment) uses the default lane
``make setup`` prepared, the same way, so the server and in-process ComfyUI see the same files.
"""

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_NODES_DIR = REPO_ROOT / "tests" / "comfy_test_nodes"
# The name the pack's folder gets inside the test servers' custom_nodes (what ComfyUI-Manager calls
# it). The clone itself may have any name: no test matches paths or log lines on a folder name.
PACK_DIR_NAME = "ComfyUI-IaD"


def _lanes_module():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import lanes
    finally:
        sys.path.pop(0)
    return lanes


lanes = _lanes_module()


def _enter_default_lane() -> None:
    """Without a lane in the environment (and without COMFYUI_PATH), take the default lane's
    environment (a cache folder you set yourself is kept)."""
    if os.environ.get("IAD_LANE") or os.environ.get("COMFYUI_PATH"):
        return
    try:
        lane = lanes.default_lane()
    except SystemExit:   # nothing prepared yet: comfyui_dir() says to run `make setup`
        return
    env = lanes.lane_env(lane)
    for key in ("IAD_LANE", "COMFYUI_PATH", "PYTHONPATH"):
        os.environ[key] = env[key]
    os.environ.setdefault("IAD_CACHE_DIR", env["IAD_CACHE_DIR"])
    if lane["site"] not in sys.path:
        sys.path.insert(0, lane["site"])


_enter_default_lane()
CACHE_DIR = Path(os.environ.get("IAD_CACHE_DIR", REPO_ROOT / ".cache"))
TINY_MODELS_DIR = CACHE_DIR / "tiny-models"
ARTIFACTS_DIR = Path(os.environ.get("IAD_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
# A frontend served with --front-end-root instead of the lane's own package (the newest-frontend lane).
FRONTEND_ROOT = os.environ.get("IAD_FRONTEND_ROOT") or None


def comfyui_dir() -> Path:
    """The ComfyUI tree to test against: ``COMFYUI_PATH`` (set by the lane), else the one ``make
    setup`` prepared."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).resolve()
    else:
        marker = REPO_ROOT / ".comfyui" / "path"
        if not marker.exists():
            raise RuntimeError(
                "ComfyUI not found: run `make setup` (or set COMFYUI_PATH to your ComfyUI folder)."
            )
        path = Path(marker.read_text().strip())
    if not (path / "main.py").is_file():
        raise RuntimeError(f"{path} is not a ComfyUI folder (no main.py). Run `make setup` or fix COMFYUI_PATH.")
    return path


def comfyui_version(path: Path | None = None) -> str:
    return lanes.comfyui_version(path or comfyui_dir())


def frontend_version() -> str:
    """The frontend the test servers serve: the --front-end-root package's, else the lane's pin."""
    if FRONTEND_ROOT:   # .../<target>/comfyui_frontend_package/static
        return lanes.frontend_version_in(Path(FRONTEND_ROOT).parent.parent)
    from importlib import metadata

    try:
        return metadata.version("comfyui-frontend-package")
    except metadata.PackageNotFoundError:
        return "none installed"


def comfyui_at_least(version: str) -> bool:
    """Is the ComfyUI under test at least ``version`` ("0.14")?"""
    def parts(text):
        return tuple(int(p) for p in text.split(".") if p.isdigit())

    return parts(comfyui_version()) >= parts(version)
