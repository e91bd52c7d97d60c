"""Making ComfyUI importable for the command-line tools (``python -m iad.prepare`` / ``iad.train``).

The library never imports ComfyUI at import time; the data preparation and the trainer need it
only inside functions, to load models exactly as ComfyUI does (``comfy.sd.load_diffusion_model``,
the VAE and text-encoder loaders). This module finds the ComfyUI tree and imports it lazily:

1. the ``comfyui_dir`` given in the config (or ``--comfyui-dir``), else
2. the ``COMFYUI_PATH`` environment variable, else
3. the ComfyUI this pack is installed in (``ComfyUI/custom_nodes/<pack>/iad`` -> ``ComfyUI``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path


class ComfyNotFoundError(RuntimeError):
    """ComfyUI could not be located or imported; the message says where we looked."""


def locate_comfyui(explicit: str | os.PathLike | None = None) -> Path:
    candidates: list[tuple[str, Path]] = []
    if explicit:
        candidates.append(("comfyui_dir", Path(explicit)))
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(("COMFYUI_PATH", Path(os.environ["COMFYUI_PATH"])))
    here = Path(__file__).resolve()
    candidates.append(("the ComfyUI this pack is installed in", here.parents[3]))
    marker = here.parents[1] / ".comfyui" / "path"   # developer checkout prepared by `make setup`
    if marker.is_file():
        candidates.append((".comfyui/path", Path(marker.read_text().strip())))
    for _, path in candidates:
        if (path / "comfy" / "sd.py").is_file():
            return path.resolve()
    tried = "; ".join(f"{what}: {path}" for what, path in candidates)
    raise ComfyNotFoundError(
        f"ComfyUI not found (tried {tried}). Set 'comfyui_dir' in the config, pass --comfyui-dir, or set "
        "COMFYUI_PATH to the folder that contains ComfyUI's main.py."
    )


def import_comfy(comfyui_dir: str | os.PathLike | None = None, cpu: bool | None = None,
                 base_directory: str | os.PathLike | None = None):
    """Import ``comfy`` (idempotent). ``cpu=True`` forces ComfyUI's ``--cpu`` mode (must happen
    before ``comfy.model_management`` is first imported); ``None`` forces it only when torch sees
    no accelerator (a CUDA build of torch on a machine without a GPU would otherwise fail).
    ``base_directory`` redirects ComfyUI's models/input/output/user folders (its
    ``--base-directory``); it takes effect only if ``folder_paths`` was not imported yet."""
    if "comfy.sd" in sys.modules:
        return sys.modules["comfy"]
    root = str(locate_comfyui(comfyui_dir))
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.options  # noqa: F401  (argument parsing stays off when imported as a library)
    import comfy.cli_args

    if cpu is None:
        import torch

        mps = getattr(torch.backends, "mps", None)
        cpu = not (torch.cuda.is_available() or (mps is not None and mps.is_available()))
    if cpu:
        comfy.cli_args.args.cpu = True
    if base_directory is not None and "folder_paths" not in sys.modules:
        Path(base_directory).mkdir(parents=True, exist_ok=True)
        comfy.cli_args.args.base_directory = str(base_directory)
    import comfy.model_management  # noqa: F401
    import comfy.sd  # noqa: F401

    return sys.modules["comfy"]


@contextlib.contextmanager
def training_mode(enabled: bool = True):
    """Tell ComfyUI that its models run for training while inside the block.

    Since ComfyUI v0.2x some of its kernels (comfy_kitchen's fused rope) have no backward; ComfyUI
    switches to differentiable torch code only while ``comfy.model_management.in_training`` is set,
    as its own trainer does (``comfy_extras/nodes_train.py``). Older ComfyUI has no such flag and
    nothing to switch. The previous value is restored, so sampling elsewhere in the process is not
    affected."""
    mm = sys.modules.get("comfy.model_management")
    if not enabled or mm is None or not hasattr(mm, "in_training"):
        yield
        return
    previous = mm.in_training
    mm.in_training = True
    try:
        yield
    finally:
        mm.in_training = previous


def training_forward(forward):
    """Decorator for a trainable module's ``forward`` that runs ComfyUI models: ComfyUI is in
    training mode whenever gradients are recorded (under ``torch.no_grad`` its fast kernels stay)."""

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        import torch

        with training_mode(torch.is_grad_enabled()):
            return forward(*args, **kwargs)

    return wrapped
