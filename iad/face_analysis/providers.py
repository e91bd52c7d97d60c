"""onnxruntime execution providers: the loader's choices, what a choice resolves to, what the
sessions really run on, and the install problems users meet (CPU and GPU builds together)."""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Sequence

import torch

log = logging.getLogger(__name__)

# Short names shown in the loader's dropdown -> onnxruntime provider names.
PROVIDERS = {
    "CUDA": "CUDAExecutionProvider",
    "ROCm": "ROCMExecutionProvider",
    "DirectML": "DmlExecutionProvider",
    "CoreML": "CoreMLExecutionProvider",
    "CPU": "CPUExecutionProvider",
}
AUTO_PROVIDER_ORDER = ("CUDA", "ROCm", "DirectML", "CoreML", "CPU")
ONNXRUNTIME_DISTRIBUTIONS = (
    "onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-rocm", "onnxruntime-silicon",
    "onnxruntime-openvino", "onnxruntime-qnn",
)


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def provider_choices(available: Sequence[str] | None = None) -> list[str]:
    """``auto`` plus the short names of the providers this onnxruntime actually has."""
    available = available_providers() if available is None else list(available)
    return ["auto"] + [short for short, full in PROVIDERS.items() if full in available]


def resolve_providers(choice: str = "auto", available: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """onnxruntime provider list for a dropdown choice (CPU always last, as the fallback), and notes."""
    available = available_providers() if available is None else list(available)
    notes: list[str] = []
    if choice == "auto":
        short = next((s for s in AUTO_PROVIDER_ORDER if PROVIDERS[s] in available), None)
        primary = PROVIDERS[short] if short else (available[0] if available else "CPUExecutionProvider")
    else:
        primary = PROVIDERS.get(choice, choice)
        if primary not in available:
            notes.append(f"Execution provider '{choice}' is not available in this onnxruntime "
                         f"(available: {', '.join(available) or 'none'}); running on CPU instead.")
            primary = "CPUExecutionProvider"
    providers = [primary]
    if primary != "CPUExecutionProvider" and "CPUExecutionProvider" in available:
        providers.append("CPUExecutionProvider")
    return providers, notes


# Providers whose sessions run on one numbered GPU ("device_id" in their provider options).
GPU_DEVICE_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider")


def session_settings(providers: Sequence[str], device_id: int = 0, threads: int = 0) -> dict:
    """Extra onnxruntime session arguments: the GPU a CUDA/ROCm session runs on (``device_id``: a
    torchrun process's LOCAL_RANK, so processes on one machine use different GPUs) and the CPU
    intra-op threads (``threads`` > 0; several processes on one machine would otherwise each use
    every core). Empty for the defaults, so the usual sessions are built exactly as before."""
    settings: dict = {}
    if device_id:
        settings["provider_options"] = [{"device_id": int(device_id)} if p in GPU_DEVICE_PROVIDERS else {}
                                        for p in providers]
    if threads > 0:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads)
        settings["sess_options"] = options
    return settings


def provider_fallback_note(requested: Sequence[str], actual: dict[str, list[str]],
                           available: Sequence[str] | None = None) -> str | None:
    """Why the sessions do not run on the requested provider (None when they do)."""
    primary = requested[0] if requested else "CPUExecutionProvider"
    fell_back = sorted(role for role, providers in actual.items() if not providers or providers[0] != primary)
    if primary == "CPUExecutionProvider" or not fell_back:
        return None
    names = {v: k for k, v in PROVIDERS.items()}
    short = names.get(primary, primary)
    available = available_providers() if available is None else list(available)
    if primary not in available:
        why = (f"this onnxruntime has no {short} provider (it offers {', '.join(available) or 'nothing'}; installed "
               f"distributions: {', '.join(installed_onnxruntime_distributions()) or 'none'})")
    else:
        why = (f"onnxruntime offers {short} but could not start it (its {short} libraries, e.g. CUDA/cuDNN, did not "
               "load; onnxruntime's own error is in the log above)")
    runs_on = sorted({names.get(p[0], p[0]) for p in actual.values() if p})
    return (f"Face analysis runs on {', '.join(runs_on)}, not {short}, for {', '.join(fell_back)}: {why}. "
            f"Results are the same, only slower. Fix: {ONNXRUNTIME_FIX}.")


def installed_onnxruntime_distributions() -> list[str]:
    names = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata.get("Name") or "").strip().lower().replace("_", "-")
        if name in ONNXRUNTIME_DISTRIBUTIONS:
            names.add(name)
    return sorted(names)


def _torch_sees_cuda() -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install must not break face analysis
        return False


ONNXRUNTIME_FIX = ("with the Python that runs ComfyUI: `python -m pip uninstall -y onnxruntime onnxruntime-gpu` then "
                   "`python -m pip install onnxruntime-gpu` (portable Windows build: python_embeded\\python.exe -m pip ...; "
                   "macOS / ARM: install `onnxruntime` instead)")


def onnxruntime_warning(distributions: Sequence[str] | None = None, available: Sequence[str] | None = None,
                        torch_cuda: bool | None = None) -> str | None:
    """One warning (or None) about the onnxruntime install: both CPU and GPU distributions present
    (they overwrite each other's files), or no GPU provider while torch sees CUDA."""
    distributions = installed_onnxruntime_distributions() if distributions is None else list(distributions)
    available = available_providers() if available is None else list(available)
    torch_cuda = _torch_sees_cuda() if torch_cuda is None else torch_cuda
    problems = []
    if len(distributions) > 1:
        problems.append(
            f"{' and '.join(distributions)} are installed together: they install into the same `onnxruntime` folder and "
            "overwrite each other's files, so which one works depends on install order (insightface pulls in plain "
            "onnxruntime)."
        )
    gpu_providers = {PROVIDERS[s] for s in ("CUDA", "ROCm", "DirectML", "CoreML")}
    if torch_cuda and not gpu_providers & set(available):
        problems.append(
            "onnxruntime has no GPU execution provider although torch sees a CUDA GPU, so face analysis runs on the "
            f"CPU (correct, only slower). onnxruntime reports: {', '.join(available) or 'nothing'}."
        )
    if not problems:
        return None
    return "onnxruntime: " + " ".join(problems) + f" Fix: {ONNXRUNTIME_FIX}."


_warned_once: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _warned_once:
        _warned_once.add(message)
        log.warning("[IaD face analysis] %s", message)
