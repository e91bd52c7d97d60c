"""Which torch the pack supports: the oldest release it is tested on, and what a user below it is told.

The suite runs on torch 2.15; ``make torch-floor`` (scripts/torch_floor.py) runs it on ``OLDEST_TORCH``
with ComfyUI 0.3.75 (docs/architecture.md, "Which torch"). Below it the pack still loads (ComfyUI
itself runs on older torch), with one warning that names the version. FSDP training has a floor of its
own, ``OLDEST_TORCH_FOR_FSDP``, where its two-process runs equal one process; below it the trainer
refuses FSDP by name (``iad.train.distributed``). This module imports nothing, so scripts can read
the floors without torch.
"""

from __future__ import annotations

import re

OLDEST_TORCH = (2, 6)
# torch 2.6's FSDP2 fails on CPU (its CPU stream has no record_event); on 2.7 and 2.8 the Wan VAE's
# two-process FSDP run ends 2.6e-4 away from one process, over the 1e-4 the tests hold; 2.9 passes.
OLDEST_TORCH_FOR_FSDP = (2, 9)


def release_of(version: str) -> tuple[int, int] | None:
    """(major, minor) of a torch version string such as ``2.6.0+cu124`` or ``2.10.0a0+git1234``."""
    match = re.match(r"^(\d+)\.(\d+)", version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _missed_floor(version: str, floor: tuple[int, int]) -> str | None:
    """``floor`` as text when ``version`` is below it, else None. An unreadable version string is not
    judged: development builds name themselves in many ways."""
    found = release_of(version)
    return "%d.%d" % floor if found is not None and found < floor else None


def below_floor_warning(version: str) -> str | None:
    """A one-line warning when ``version`` is older than ``OLDEST_TORCH``, else None."""
    floor = _missed_floor(version, OLDEST_TORCH)
    return floor and (f"torch {version} is older than {floor}, the oldest torch this pack is tested on: its nodes "
                      f"may fail in ways the tests have not seen. Update torch in ComfyUI's own Python (torch, "
                      f"torchvision and torchaudio of one release, built for your CUDA).")


def fsdp_refusal(version: str) -> str | None:
    """Why FSDP training cannot run on torch ``version`` (None when it can)."""
    floor = _missed_floor(version, OLDEST_TORCH_FOR_FSDP)
    return floor and (f"distributed.strategy 'fsdp' needs torch >= {floor} (FSDP2's fully_shard is tested from "
                      f"there; older releases fail or do not reproduce the one-process result), and this is torch "
                      f"{version}: use 'ddp', or torch >= {floor}")
