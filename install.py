"""Run by ComfyUI-Manager after it installs requirements.txt (or by hand: ``python install.py``
with the Python that runs ComfyUI).

Why it exists: ``onnxruntime`` (CPU) and ``onnxruntime-gpu`` install the same ``onnxruntime``
folder, and insightface depends on the CPU one. When the CPU package is installed after the GPU
one (for example insightface arrives in an environment that already had onnxruntime-gpu), its files
win and face analysis silently runs on the CPU. On the platforms where onnxruntime-gpu exists
(Linux x86_64, Windows AMD64), this script checks what onnxruntime really offers and, if the GPU
package is meant to be there but its CUDA provider is not, reinstalls onnxruntime-gpu's files over
the CPU ones (same version, no dependencies). It changes nothing elsewhere and never fails the
install: it prints what it found and did.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys

GPU_PACKAGE = "onnxruntime-gpu"
GPU_PROVIDER = "CUDAExecutionProvider"


def gpu_platform() -> bool:
    system, machine = sys.platform, platform.machine().lower()
    return (system.startswith("linux") and machine in ("x86_64", "amd64")) or (system == "win32" and machine == "amd64")


def providers() -> list[str] | None:
    """onnxruntime's providers, asked in a fresh process (this one may have imported stale files)."""
    code = "import json, onnxruntime; print(json.dumps(onnxruntime.get_available_providers()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def reinstall_command(spec: str) -> list[str]:
    """pip where the environment has it, else uv (ComfyUI-Manager's uv mode makes venvs without pip)."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        return [sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps", spec]
    return [sys.executable, "-m", "uv", "pip", "install", "--python", sys.executable, "--reinstall", "--no-deps", spec]


def main() -> int:
    if not gpu_platform():
        print(f"[ComfyUI-IaD] {sys.platform}/{platform.machine()}: onnxruntime-gpu has no build here; nothing to do.")
        return 0
    found = providers()
    if found is not None and GPU_PROVIDER in found:
        print(f"[ComfyUI-IaD] onnxruntime offers {GPU_PROVIDER}: nothing to do.")
        return 0
    version = installed_version(GPU_PACKAGE)
    spec = f"{GPU_PACKAGE}=={version}" if version else GPU_PACKAGE
    print(f"[ComfyUI-IaD] onnxruntime offers {found}: the CPU package's files replaced {GPU_PACKAGE}'s "
          f"(installed: {', '.join(d for d in ('onnxruntime', GPU_PACKAGE) if installed_version(d)) or 'none'}). "
          f"Reinstalling {spec} over them.")
    done = subprocess.run(reinstall_command(spec))
    after = providers()
    if done.returncode == 0 and after is not None and GPU_PROVIDER in after:
        print(f"[ComfyUI-IaD] onnxruntime now offers {after}.")
    else:
        print(f"[ComfyUI-IaD] could not restore {GPU_PACKAGE} (onnxruntime offers {after}). Fix by hand with ComfyUI's "
              "Python: `python -m pip uninstall -y onnxruntime onnxruntime-gpu` then `python -m pip install "
              "onnxruntime-gpu`. Face analysis still works, on the CPU.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
