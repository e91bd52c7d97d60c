"""Where things are: the repository, ComfyUI, and the cache of generated tiny models."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_NODES_DIR = REPO_ROOT / "tests" / "comfy_test_nodes"
CACHE_DIR = Path(os.environ.get("IAD_CACHE_DIR", REPO_ROOT / ".cache"))
TINY_MODELS_DIR = CACHE_DIR / "tiny-models"
ARTIFACTS_DIR = Path(os.environ.get("IAD_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
PACK_DIR_NAME = "ComfyUI-IaD"


def comfyui_dir() -> Path:
    """The ComfyUI tree to test against: ``COMFYUI_PATH``, else the one ``make setup`` prepared."""
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
