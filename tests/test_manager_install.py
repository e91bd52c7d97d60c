"""Installing the pack with the real ComfyUI-Manager CLI (``cm-cli install``), as a user would, ends
with an onnxruntime that offers CUDAExecutionProvider on Linux x86_64 / Windows AMD64.

The environment is a copy of this test environment (torch and ComfyUI's dependencies in place, as
in a user's ComfyUI) in the state that breaks face analysis on the GPU: onnxruntime-gpu installed
(another pack brought it) but not insightface. The Manager installs requirements.txt line by line;
insightface pulls in the CPU onnxruntime, whose files replace onnxruntime-gpu's in the shared
``onnxruntime`` folder. The pack's install.py, which the Manager runs afterwards, must restore the
GPU build's files. The Manager installs from a git URL, so what is tested is the committed pack.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT, comfyui_dir

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() == "x86_64"),
    reason="onnxruntime-gpu has wheels only for Linux x86_64 and Windows AMD64")]

MANAGER = "comfyui-manager==4.3"


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)


def _providers(python: Path) -> list[str]:
    done = _run([str(python), "-c", "import json, onnxruntime; print(json.dumps(onnxruntime.get_available_providers()))"])
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_manager_install_ends_with_the_gpu_onnxruntime(tmp_path):
    env_dir = tmp_path / "venv"
    try:
        # A user's ComfyUI environment: a copy of this one (a venv's files are found from its own path).
        shutil.copytree(sys.prefix, env_dir, symlinks=True)
        python = env_dir / "bin" / "python"
        pip = [str(python), "-m", "pip", "install", "-q"]
        assert _run([str(python), "-m", "pip", "uninstall", "-y", "-q", "insightface", "onnxruntime"]).returncode == 0
        for step in (pip + ["--no-deps", "onnxruntime-gpu"], pip + [MANAGER]):
            done = _run(step)
            assert done.returncode == 0, done.stderr[-3000:]
        assert "CUDAExecutionProvider" in _providers(python)   # the starting point works on the GPU

        comfy = tmp_path / "ComfyUI"
        shutil.copytree(comfyui_dir(), comfy, symlinks=True,
                        ignore=shutil.ignore_patterns("custom_nodes", "models", "output", "input", "user", "__pycache__"))
        (comfy / "custom_nodes").mkdir()
        clone = tmp_path / "ComfyUI-IaD"
        assert _run(["git", "clone", "-q", str(REPO_ROOT), str(clone)]).returncode == 0

        env = dict(os.environ, COMFYUI_PATH=str(comfy), PATH=f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}")
        env.pop("PYTHONPATH", None)
        done = _run([str(env_dir / "bin" / "cm-cli"), "install", f"file://localhost{clone}"], env=env, cwd=tmp_path)
        log = done.stdout + done.stderr
        assert done.returncode == 0 and (comfy / "custom_nodes" / "ComfyUI-IaD" / "__init__.py").is_file(), log[-4000:]
        # The Manager really produced the broken state (insightface brought the CPU onnxruntime) ...
        assert "Successfully installed insightface" in log, log[-4000:]
        # ... and after the install the GPU build's files are the ones in place.
        assert "CUDAExecutionProvider" in _providers(python), log[-4000:]
        assert "the CPU package's files replaced onnxruntime-gpu's" in log, log[-4000:]   # install.py did it
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)   # 6+ GB: never leave it behind
