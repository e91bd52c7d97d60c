"""The command-line tools answer `--help` and usage errors before loading torch (which takes
seconds on a busy machine). Times are a benchmark's business (benchmarks/bench_cli_startup.py);
this checks the cause: which modules a `--help` imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.paths import REPO_ROOT

CLIS = ["iad.eval", "iad.prepare", "iad.convert_lynx", "iad.train"]
# numpy (~0.05 s) may load; these may not (torch alone takes 1.5-3 s on 2 idle cores)
HEAVY = ("torch", "insightface", "onnxruntime", "cv2", "safetensors", "comfy")


def _imported(module: str, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", module, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, names


@pytest.mark.parametrize("module", CLIS)
def test_help_answers_without_heavy_imports(module):
    done, names = _imported(module, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout, done.stdout + done.stderr
    heavy = sorted(n for n in HEAVY if n in names)
    assert not heavy, f"`python -m {module} --help` imports {heavy}"


@pytest.mark.parametrize("module", CLIS)
def test_a_usage_error_answers_without_heavy_imports(module):
    done, names = _imported(module, "--no-such-option")
    assert done.returncode == 2 and "error:" in done.stderr, done.stderr[-2000:]
    assert not [n for n in HEAVY if n in names], f"`python -m {module}` with a bad option imports {[n for n in HEAVY if n in names]}"
