"""Phases "identity", "train" and "bench_train" of the GPU check.

- identity: the time of one identity-token computation (IaD Identity: faces -> resampler -> tokens) for
  the 1.3B's IaD adapter and for Lynx full at its released resampler size, on the GPU, cold and warm.
- train: ``iad.train`` on the GPU in its three modes (adapter, base, vae), fp32 and bf16, gradient
  checkpointing off and on, each a few steps on the tiny Wan and the prepared tiny dataset
  (tests/harness/train_data.py); then DDP in one process (torchrun, NCCL; gloo on the CPU).
- bench_train: ``benchmarks/bench_train.py --gpu`` (after the batch-size-1 NaN fix), its table with the
  loss column parsed into figures.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

from .process_group import end_group

REPO = Path(__file__).resolve().parents[2]


def _device(smoke: bool) -> str:
    return "cuda" if torch.cuda.is_available() and not smoke else "cpu"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _warm_up(device: str) -> None:
    """cuBLAS and the attention kernels start on their first call, not with the CUDA context: one bf16
    matmul and one SDPA call first, so that the first configuration measured does not pay for them."""
    if device != "cuda":
        return
    x = torch.randn(4, 8, 256, 64, device=device, dtype=torch.bfloat16)
    torch.nn.functional.scaled_dot_product_attention(x, x, x)
    x.flatten(0, 1) @ x.flatten(0, 1).transpose(-1, -2)
    _sync()


# -- identity ------------------------------------------------------------------------------------
def identity(log, smoke: bool, work: Path) -> None:
    from harness import apply_fixtures as af

    from . import models

    sizes = models.SMOKE if smoke else models.GPU
    device = _device(smoke)
    adapter_module = af.module("iad.adapter")
    width13, width14 = sizes.wan13["dim"], sizes.wan14["dim"]
    lynx = sizes.lynx
    configs = {
        "IaD adapter (1.3B, default resampler)": adapter_module.AdapterConfig(
            **{"family": "wan2.1", "model_dim": width13, "token_dim": width13,
               "blocks": list(range(sizes.wan13["num_layers"])), **sizes.adapter}),
        "Lynx full (released resampler)": adapter_module.AdapterConfig.lynx_full(
            model_dim=width14, token_dim=width14, blocks=list(range(sizes.wan14["num_layers"])),
            num_registers=lynx["registers"], resampler_dim=lynx["dim"], resampler_depth=lynx["depth"],
            resampler_heads=lynx["heads"], num_tokens=lynx["queries"]),
    }
    nodes = af.module("nodes.iad_nodes")
    faces = af.face_embeds(count=3)
    _warm_up(device)
    out = {}
    for name, config in configs.items():
        adapter = adapter_module.IdentityAdapter.random(config, seed=0).to(device, torch.bfloat16)
        iad_model = af.module("iad.patching").IaDModel.wrap(adapter, name)
        times = []
        for _ in range(11):
            _sync()
            start = time.perf_counter()
            nodes.IaDIdentity.execute(iad_model, type(faces)(faces.faces, embedder=config.embedder))
            _sync()
            times.append(time.perf_counter() - start)
        out[name] = {"cold_s": times[0], "median_warm_s": statistics.median(times[1:]), "min_warm_s": min(times[1:]),
                     "device": device, "dtype": "bfloat16", "references": 3,
                     "parameters": sum(p.numel() for p in adapter.parameters())}
        log.set(name, out[name])
        del adapter, iad_model
    log.set("headline", {k: f"{1000 * v['median_warm_s']:.2f} ms warm, {1000 * v['cold_s']:.1f} ms cold"
                         for k, v in out.items()})


# -- train ---------------------------------------------------------------------------------------
def _config(data: Path, out: Path, mode: str, precision: str, checkpointing: bool, device: str, steps: int,
            student: Path) -> dict:
    from harness import train_data

    config = train_data.train_config(data, out, steps=steps, batch_size=2, log_every=1, resume=False, device=device,
                                     cpu_threads=1 if device == "cpu" else 0, precision=precision,
                                     gradient_checkpointing=checkpointing, checkpoint_every=10**6)
    if mode != "adapter":
        config.pop("adapter")
        config.update(mode=mode, name=f"gpu-check-{mode}", save_dtype="float32", optimizer={"lr": 1e-3})
        if mode == "vae":
            config["base_model"] = str(student)
    return config


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for v in values)


# The CPU smoke run trains one configuration of each mode (the code path; the GPU run trains all 10).
SMOKE_CONFIGURATIONS = ("adapter, bf16, checkpointing on", "base, fp32, checkpointing off", "vae, fp32, checkpointing off")


def train(log, smoke: bool, work: Path) -> None:
    from harness import tiny_models as tiny
    from harness import train_data
    from iad.train import run as train_run

    device = _device(smoke)
    steps = 2 if smoke else 6
    started = time.perf_counter()
    data = train_data.ensure_prepared(persons=4, clips_per_person=2)
    student = tiny.ensure(tiny.WanVAESpec("iad-tiny-wan2.1-vae-student.safetensors", seed=5))
    log.set("dataset_s", round(time.perf_counter() - started, 1))
    _warm_up(device)
    results, failed = {}, []
    for mode in ("adapter", "base", "vae"):
        for precision in ("fp32", "bf16"):
            for checkpointing in (False, True):
                key = f"{mode}, {precision}, checkpointing {'on' if checkpointing else 'off'}"
                if mode == "vae" and checkpointing:
                    log.set(key, {"status": "not applicable: mode vae has no gradient checkpointing (the config "
                                            "refuses it: it is for the diffusion model)"})
                    continue
                if smoke and key not in SMOKE_CONFIGURATIONS:
                    log.set(key, {"status": "not run in the CPU smoke run (the GPU run trains every configuration)"})
                    continue
                if log.left() < 25:
                    results[key] = {"status": f"not run: {log.left():.0f} s left of the phase cap"}
                    log.set(key, results[key])
                    continue
                out = work / "train" / re.sub(r"[^a-z0-9]+", "-", key)
                start = time.perf_counter()
                try:
                    result = train_run(_config(data, out, mode, precision, checkpointing, device, steps, student))
                    losses = [e["total"] for e in result.evals]
                    results[key] = {"status": "ok", "seconds": round(time.perf_counter() - start, 2), "device": device,
                                    "steps": result.steps, "eval_loss_first": losses[0], "eval_loss_last": losses[-1],
                                    "losses_finite": _finite(losses + [h.get("total", 0.0) for h in result.history]),
                                    "peak_memory_bytes": result.peak_memory_bytes,
                                    "samples_per_s": result.samples_per_second,
                                    "checkpoint_written": bool(result.final_checkpoint and result.final_checkpoint.is_file())}
                    if not (results[key]["losses_finite"] and results[key]["checkpoint_written"]):
                        results[key]["status"] = "failed"
                except Exception as exc:  # noqa: BLE001 - a failing configuration is the finding; go on
                    results[key] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[-3000:]}
                if results[key]["status"] != "ok":
                    failed.append(key)
                log.set(key, results[key])
    ddp = _ddp(data, work, device, steps, timeout=log.left() - 5) if log.left() > 40 else \
        {"status": f"not run: {log.left():.0f} s left"}
    log.set("ddp, one process", ddp)
    if ddp["status"] != "ok":
        failed.append("ddp, one process")
    ran = [k for k, v in results.items() if v["status"] == "ok"]
    log.set("headline", {"configurations that trained (finite losses, checkpoint written)": f"{len(ran)} of {len(results)}",
                         "failed or not run": ", ".join(failed) or "none",
                         "DDP on one device": ddp["status"] + (f" ({ddp.get('backend')})" if ddp.get("backend") else "")})


def _run_group(command: list[str], env: dict | None, timeout: float) -> types.SimpleNamespace:
    """``command`` in a process group of its own, its output kept; at ``timeout`` the whole group is
    killed (bench_train.py's and torchrun's children too, which would otherwise keep the GPU) and the
    output so far is returned, with ``timed_out``."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=max(timeout, 1.0))
        return types.SimpleNamespace(returncode=process.returncode, stdout=stdout, stderr=stderr, timed_out=False)
    except subprocess.TimeoutExpired:
        end_group(process)
        stdout, stderr = process.communicate()
        return types.SimpleNamespace(returncode=process.returncode, stdout=stdout, stderr=stderr, timed_out=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp(data: Path, work: Path, device: str, steps: int, timeout: float) -> dict:
    """torchrun, one process, strategy ddp: NCCL on the GPU, gloo on the CPU; stopped (its process group
    with it) at ``timeout``, inside the phase's cap."""
    backend = "nccl" if device == "cuda" else "gloo"
    out = work / "train" / "ddp"
    config = _config(data, out, "adapter", "bf16" if device == "cuda" else "fp32", False, device, steps, Path())
    config["distributed"] = {"strategy": "ddp", "backend": backend}
    path = work / "train" / "ddp.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "iad.train", str(path)]
    start = time.perf_counter()
    done = _run_group(command, env, min(240.0, timeout))
    record = {"backend": backend, "seconds": round(time.perf_counter() - start, 1), "returncode": done.returncode}
    if done.timed_out:
        record["timed_out_after_s"] = round(min(240.0, timeout))
    checkpoint = out / f"{config['name']}.safetensors"
    logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()] if (out / "log.jsonl").is_file() else []
    record["status"] = "ok" if done.returncode == 0 and checkpoint.is_file() else "failed"
    record["logged_steps"] = len([r for r in logged if "eval" not in json.dumps(r)])
    if record["status"] != "ok":
        record["error"] = (done.stdout[-1500:] + done.stderr[-3000:]).strip()
    return record


# -- bench_train ---------------------------------------------------------------------------------
ROW = re.compile(r"^(?P<name>(fp32|bf16), checkpointing (on|off)|read from the shards|held in memory)\s+(?P<speed>[\d.]+)"
                 r"\s+(?P<low>[\d.]+)-(?P<high>[\d.]+)\s+(?P<ratio>[\d.]+)x\s+(?P<significant>yes|no)\s+(?P<memory>\d+)"
                 r"\s+(?P<data>[\d.]+)\s+(?P<first>\S+) -> (?P<last>\S+)$")


def parse_bench_train(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        found = ROW.match(line.strip())
        if found:
            g = found.groupdict()
            rows.append({"configuration": g["name"], "samples_per_s": float(g["speed"]), "range": [float(g["low"]), float(g["high"])],
                         "vs_first": float(g["ratio"]), "significant": g["significant"] == "yes", "peak_memory_mb": int(g["memory"]),
                         "data_ms_per_step": float(g["data"]),
                         "loss_start": float(g["first"]), "loss_end": float(g["last"])})
    return rows


def parse_bench_runs(text: str) -> list[dict]:
    """bench_train.py's ``RUN`` lines: one per run, printed as each ends."""
    return [json.loads(line[4:]) for line in text.splitlines() if line.startswith("RUN {")]


def bench_train(log, smoke: bool, work: Path) -> None:
    args = ["--steps", "3", "--warmup", "1", "--rounds", "1"] if smoke else ["--gpu", "--steps", "30", "--warmup", "10", "--rounds", "2"]
    command = [sys.executable, str(REPO / "benchmarks" / "bench_train.py"), *args]
    log.set("command", " ".join(["python3", "benchmarks/bench_train.py", *args]))
    done = _run_group(command, None, max(log.left() - 5, 10))
    runs = parse_bench_runs(done.stdout)
    log.set("runs", runs)
    table = done.stdout[done.stdout.find("iad.train throughput"):] if "iad.train throughput" in done.stdout else ""
    log.set("table", table.strip())
    rows = parse_bench_train(done.stdout)
    log.set("rows", rows)
    if done.timed_out and runs:   # stopped at the phase's cap: the runs that ended are the figures
        log.set("headline", {f"{r['configuration']} (round {r['round'] + 1}; stopped at the cap before the table)":
                             f"{r['samples_per_s']:.2f} samples/s, peak {(r.get('peak_cuda') or 0) / 2**20:.0f} MB, loss "
                             f"{r['loss_first']:.4f} -> {r['loss_last']:.4f}" for r in runs})
        raise RuntimeError(f"bench_train.py stopped at the phase's cap after {len(runs)} runs (kept in 'runs')")
    if done.returncode or not rows:
        raise RuntimeError(f"bench_train.py exited {done.returncode} with {len(rows)} rows:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    log.set("headline", {r["configuration"]: f"{r['samples_per_s']:.2f} samples/s, peak {r['peak_memory_mb']} MB, loss "
                         f"{r['loss_start']:.4f} -> {r['loss_end']:.4f}" for r in rows})
