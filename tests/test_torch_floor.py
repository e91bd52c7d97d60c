"""The oldest torch the pack supports: what make torch-floor installs, the warning below the floor, and
FSDP's refusal below its own floor. The floor run itself (about 10 minutes, 5 GB) is
``make torch-floor``; docs/architecture.md, "Which torch", has its result."""

import asyncio
import logging
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from harness.comfy_env import import_pack
from harness.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import torch_floor  # noqa: E402

sys.path.insert(0, str(REPO_ROOT))
from iad.torch_support import OLDEST_TORCH, OLDEST_TORCH_FOR_FSDP, below_floor_warning, fsdp_refusal, release_of  # noqa: E402
from iad.train import distributed  # noqa: E402


def test_the_floor_venv_takes_this_environments_packages_but_torch_and_its_cuda_libraries():
    """The floor venv differs from this environment in torch alone: every other pinned package at this
    environment's version, but what the torch family needs, which keeps torch's own resolution."""
    freeze = ["torch==2.15.0", "torchvision==0.29.2", "torchaudio==2.11.1", "triton==3.9.0",
              "nvidia-cublas==13.4.1.3", "cuda-bindings==13.0.1", "numpy==2.4.6", "Pillow==12.0.0",
              "sympy==1.14.0", "typing_extensions==4.15.0", "-e git+https://example.org/x.git@abc#egg=x",
              "mypkg @ file:///tmp/mypkg", "# a comment", ""]
    needs = {"sympy": ["==1.13.1"], "typing-extensions": [">=4.10.0"], "numpy": [""], "torch": ["==2.6.0"]}
    keep, skipped = torch_floor.other_packages(freeze, needs)
    assert keep == ["numpy==2.4.6", "pillow==12.0.0", "typing-extensions==4.15.0"]   # sympy: torch 2.6 pins its own
    assert skipped == ["-e git+https://example.org/x.git@abc#egg=x", "mypkg @ file:///tmp/mypkg"]
    needs = torch_floor.torch_needs(Path(sys.executable))   # this environment's torch 2.15 family, transitively
    assert {"torch", "sympy", "filelock", "numpy", "mpmath"} <= set(needs) and "pytest" not in needs
    assert len(needs["torch"]) == 2 and len(needs["sympy"]) == 1   # each requirement once: torchvision's and torchaudio's torch


def test_the_floor_is_one_number_and_each_torch_release_names_its_torchvision_and_torchaudio():
    assert release_of(torch_floor.FLOOR) == OLDEST_TORCH and release_of(torch_floor.FSDP_FLOOR) == OLDEST_TORCH_FOR_FSDP
    assert torch_floor.release(torch_floor.FLOOR) == (torch_floor.FLOOR, *torch_floor.RELEASES[torch_floor.FLOOR])
    with pytest.raises(SystemExit, match="2.3.1.*RELEASES"):
        torch_floor.release("2.3.1")
    if torch_floor.LANE not in torch_floor.lanes.lanes():   # your own ComfyUI as the only lane (COMFYUI_PATH)
        with pytest.raises(SystemExit, match="needs the ComfyUI 0.3.75 lane: make setup"):
            torch_floor.run_env(torch_floor.FLOOR)
        return
    env = torch_floor.run_env(torch_floor.FLOOR)
    assert env["IAD_LANE"] == f"0.3.75-torch{torch_floor.FLOOR}" and "torch-floor" in env["IAD_CACHE_DIR"]


@pytest.mark.parametrize("version, warned", [("2.5.1+cu124", True), ("1.13.1", True), ("2.6.0+cu124", False),
                                             ("2.15.0", False), ("2.10.0a0+git1234", False), ("nightly", False)])
def test_a_torch_below_the_floor_gets_one_warning_that_names_it(version, warned):
    warning = below_floor_warning(version)
    assert (warning is not None) == warned
    if warned:
        assert version in warning and "%d.%d" % OLDEST_TORCH in warning and "\n" not in warning


def test_the_pack_warns_at_load_on_an_old_torch_and_still_loads(monkeypatch, caplog):
    pack = import_pack()
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu124")
    with caplog.at_level(logging.WARNING):
        extension = asyncio.run(pack.nodes.comfy_entrypoint())
    assert [r.getMessage() for r in caplog.records if "2.5.1+cu124" in r.getMessage()]
    assert asyncio.run(extension.get_node_list())
    caplog.clear()
    monkeypatch.setattr(torch, "__version__", "2.6.0")
    with caplog.at_level(logging.WARNING):
        asyncio.run(pack.nodes.comfy_entrypoint())
    assert not [r for r in caplog.records if "oldest torch" in r.getMessage()]


@pytest.mark.parametrize("version, refused", [("2.6.0+cu124", True), ("2.8.0", True), ("2.9.1", False),
                                             ("2.15.0", False)])
def test_fsdp_below_its_floor_is_refused_by_name_before_any_process_group(monkeypatch, version, refused):
    """torch 2.6's FSDP2 fails on CPU and 2.7-2.8 miss the one-process result (iad/torch_support.py):
    the trainer says so before any process group starts, and names DDP as the way on."""
    assert (fsdp_refusal(version) is not None) == refused
    if not refused:
        return
    monkeypatch.setattr(torch, "__version__", version)
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("IAD_FSDP_BELOW_FLOOR", raising=False)
    with pytest.raises(ValueError, match=rf"'fsdp' needs torch >= 2\.9.*torch {re.escape(version)}: use 'ddp'"):
        distributed.setup("fsdp", "gloo", "cpu")
    assert "RANK" not in os.environ and not torch.distributed.is_initialized()
    assert distributed.setup("ddp", "gloo", "cpu").strategy == "none"   # one process: DDP is not needed
    monkeypatch.setenv("IAD_FSDP_BELOW_FLOOR", "1")   # torch_floor.py's probes: the refusal lifted
    distributed.require_fsdp2()
