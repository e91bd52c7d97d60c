"""make gpu-check (issue 34): everything that needs a GPU, in one command of at most 8 minutes on one
H100, writing docs/results/gpu.json and gpu.md (and both to $OUT when it is set). docs/gpu.md says what
each phase measures, how the GPU machine gets ComfyUI v0.28.2 and the wheels it lacks (make
gpu-bundle), the exact device call, and how to read the JSON.

    python3 benchmarks/gpu_check.py                # on a machine with a CUDA GPU (else one line, exit 0)
    python3 benchmarks/gpu_check.py --cpu-smoke    # every phase's code path on the CPU at tiny sizes
    python3 benchmarks/gpu_check.py --cpu-smoke --bundle   # the same on the restored bundle (make gpu-twin)

Phases, each in its own process with a time cap (a phase stopped at its cap keeps what it measured):
server (IaD Apply, Lynx, context windows, fp8_scaled, multi-GPU through a real v0.28.2 server),
identity (one identity-token computation), train (iad.train on the GPU, every mode, DDP on one
device), bench_train (benchmarks/bench_train.py --gpu with the loss column).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from gpu import environment, report  # noqa: E402
from gpu.process_group import end_group  # noqa: E402

# name: (module:function, seconds reserved on the GPU, in the CPU smoke run), in the order they run
PHASES = {
    "server": ("gpu.server_phase:run", 215, 150),
    "identity": ("gpu.train_phases:identity", 25, 30),
    "train": ("gpu.train_phases:train", 100, 60),
    "bench_train": ("gpu.train_phases:bench_train", 100, 80),
}
BUDGET_S = 470           # the whole run, restore and server start included, inside 8 minutes
SMOKE_BUDGET_S = 420


def run_phase(args) -> int:
    """In the phase's own process: run it, recording into its PhaseLog file."""
    log = report.PhaseLog(Path(args.phase_out), float(args.deadline))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))    # the cap: unwind (stops the server) and keep the log
    work = Path(args.work)
    if args.phase == "train":   # the trainer's own ComfyUI import decides the device (GPU mode on the GPU)
        from iad.comfy_runtime import import_comfy

        import_comfy(cpu=True if args.cpu_smoke else None)
    else:
        from harness.comfy_env import import_comfy

        import_comfy()
    module, function = PHASES[args.phase][0].split(":")
    try:
        getattr(importlib.import_module(module), function)(log, args.cpu_smoke, work)
    except BaseException as exc:
        import traceback

        log.note("error", "".join(traceback.format_exception(exc))[-6000:])
        raise
    return 0


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    info["device"] = (", ".join(torch.cuda.get_device_name(i) for i in range(info["gpus"])) if info["gpus"]
                      else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    return info


def run_all(args) -> int:
    started = time.time()
    smoke = args.cpu_smoke
    budget = args.budget or (SMOKE_BUDGET_S if smoke else BUDGET_S)
    work = Path(args.work or tempfile.mkdtemp(prefix="iad-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    folders = [Path(args.results) if args.results else REPO / ("test-artifacts/gpu-smoke" if smoke else "docs/results")]
    if os.environ.get("OUT") and not smoke:
        folders.append(Path(os.environ["OUT"]))
    result = {"mode": "cpu-smoke" if smoke else "gpu", "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "budget_s": budget, "phases": {}, **machine()}
    try:
        env, result["comfyui"] = environment.prepare(work, use_bundle=args.use_bundle)
    except BaseException as exc:  # noqa: BLE001 - recorded, then the run ends
        result["comfyui"] = {"source": "none", "version": None}
        result["phases"]["environment"] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "seconds": 0, "cap_s": 0}
        report.write(result, folders)
        print(report.markdown(result))
        return 1
    result["environment_s"] = round(time.time() - started, 1)
    manifest = environment.BUNDLE / "manifest.json"
    if args.use_bundle and manifest.is_file():
        data = json.loads(manifest.read_text())
        result["bundle"] = {"wheels": [w["file"] for w in data["wheels"]], "left_out_wheels": data["left_out_wheels"]}
    only = set(args.only or PHASES)
    failed = False
    selected = [name for name in PHASES if name in only]
    for index, name in enumerate(selected):
        # A phase's cap is a reservation: it may also use what the phases before it left unused, never
        # what the phases after it are reserved.
        reserved = sum(PHASES[later][2 if smoke else 1] for later in selected[index + 1:])
        cap = budget - (time.time() - started) - reserved - 3
        if cap < 10:
            result["phases"][name] = {"status": f"not run: the {budget} s budget is spent", "seconds": 0, "cap_s": 0}
            failed = True
            continue
        out = work / f"phase-{name}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--phase-out", str(out), "--work",
                   str(work), "--deadline", str(time.time() + cap - 10), *(["--cpu-smoke"] if smoke else [])]
        print(f"[gpu-check] {name}: up to {cap:.0f} s", flush=True)
        phase_start = time.time()
        with open(work / f"phase-{name}.log", "w") as log_file:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                rc = process.wait(timeout=cap)
                status = "ok" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                end_group(process, grace_s=15)   # SIGTERM: the phase unwinds and stops its server
                status = f"timeout: stopped at its {cap:.0f} s cap (figures up to then kept)"
        data = report.read_phase(out)
        if status.startswith("timeout") and data.get("server_pgid"):   # its server has a session of its own: end it too
            try:
                os.killpg(int(data["server_pgid"]), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        entry = {"status": status, "seconds": round(time.time() - phase_start, 1), "cap_s": round(cap), **data}
        if status == "failed" and not entry.get("error"):
            entry["error"] = (work / f"phase-{name}.log").read_text(errors="replace")[-4000:]
        failed |= status != "ok"
        result["phases"][name] = entry
        result["total_s"] = round(time.time() - started, 1)
        report.write(result, folders)
        print(f"[gpu-check] {name}: {status} in {entry['seconds']:.0f} s", flush=True)
    result["total_s"] = round(time.time() - started, 1)
    report.write(result, folders)
    if os.environ.get("OUT") and not smoke:   # the device call returns at most 8 files: these 4 logs' tails
        for log in [work / "server" / "server.log", *(work / f"phase-{n}.log" for n in PHASES)]:
            if log.is_file():
                text = log.read_bytes()[-2 * 2**20:]
                (Path(os.environ["OUT"]) / log.name.replace("phase-", "log-")).write_bytes(text)
    print(report.markdown(result))
    print(f"[gpu-check] wrote {', '.join(str(f / 'gpu.json') for f in folders)}; work folder {work}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every phase on the CPU at tiny sizes (tests)")
    environment.add_bundle_option(parser)
    parser.add_argument("--results", help="where gpu.json / gpu.md go (default docs/results; smoke: test-artifacts/gpu-smoke)")
    parser.add_argument("--work", help="scratch folder (generated models, server, logs; default a new temp folder)")
    parser.add_argument("--budget", type=float, help=f"seconds for the whole run (default {BUDGET_S}; smoke {SMOKE_BUDGET_S})")
    parser.add_argument("--only", action="append", choices=list(PHASES), help="run only this phase (repeatable)")
    parser.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--phase-out", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.use_bundle = environment.uses_bundle(parser, args)
    if args.phase:
        return run_phase(args)
    if not args.cpu_smoke:
        reason = None
        if not environment.gpu_visible():
            reason = "no NVIDIA device on this machine"
        else:
            import torch

            if not torch.cuda.is_available():
                reason = f"torch {torch.__version__} sees no CUDA device"
        if reason:
            print(f"gpu-check: {reason}; nothing to measure here (run it on a GPU machine: docs/gpu.md).")
            return 0
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
