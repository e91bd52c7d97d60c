"""Training throughput (samples/s) and peak memory of iad.train, side by side in one run.

CPU (default): the tiny Wan 2.1 T2V model (dim 128, 2 blocks) on a synthetic prepared dataset with
64x64x5-frame latents, batch 2: fp32 vs bf16, gradient checkpointing off vs on. Every
configuration runs in a fresh process (so peak memory is its own): peak RSS on the CPU.

GPU (``--gpu``): a Wan 2.1 1.3B-shaped model (dim 1536, 30 blocks, ffn 8960, random bf16 weights
generated in the real key layout) at a small resolution (256x256, 17 frames -> latents
[16, 5, 32, 32]), bf16, gradient checkpointing off vs on; peak memory = torch.cuda.max_memory_allocated.

Throughput is the steady state: the samples of the steps after ``--warmup`` over their time (the
first steps carry allocator and kernel warm-up). Each configuration runs ``--rounds`` times, the
rounds interleaved (a drift in the machine's load hits every configuration alike); the table gives
the median and the range, and a ratio counts only where the ranges do not overlap. Each run also
prints a ``RUN {json}`` line as it ends (what make gpu-check keeps of a run stopped at its cap).

    .venv/bin/python benchmarks/bench_train.py [--steps 200] [--warmup 20] [--rounds 3] [--gpu]
        [--latent C,T,H,W] [--batch N] [--compare precision|data_in_memory]

``--latent`` / ``--batch`` replace the mode's latent shape (ComfyUI's raw Wan latent: 16 channels, T
latent frames = (frames - 1) / 4 + 1, H x W = pixels / 8) and batch size: ``--gpu --latent 16,9,60,104``
is the D33 training set's 832x480x33 (docs/training.md, 4.2). ``--compare data_in_memory`` runs the first
configuration twice, its training tensors read from the shards at each batch and held in memory
(``data_in_memory``): the data path's share of a step (``--latent 16,9,8,8 --batch 48`` is the
GPU-scale synthetic world's adapter stage).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def one(args: argparse.Namespace) -> None:
    """Runs in its own process: one configuration, prints a JSON line."""
    import torch

    if args.device == "cpu":
        from harness.comfy_env import import_comfy

        import_comfy()
    from iad.train import run

    config = json.loads(args.one)
    result = run(config)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # history has the cumulative samples/s at every log_every (= warm-up) steps: time of the steps after the first entry
    first, last = result.history[0], result.history[-1]
    per_step = config["batch_size"]
    t_first, t_last = first["step"] * per_step / first["samples_per_s"], last["step"] * per_step / last["samples_per_s"]
    steady = (last["step"] - first["step"]) * per_step / max(t_last - t_first, 1e-9)
    print("RESULT " + json.dumps({"samples_per_s": steady, "peak_rss": peak_rss,
                                  "peak_cuda": result.peak_memory_bytes,
                                  "loss_first": result.evals[0]["total"], "loss_last": result.evals[-1]["total"],
                                  "data_ms": last["data_ms"], "step_ms": last["step_ms"],
                                  "threads": torch.get_num_threads()}))


def _latent_shape(text: str) -> list[int]:
    try:
        shape = [int(v) for v in text.split(",")]
    except ValueError:
        shape = []
    if len(shape) != 4 or min(shape) < 1 or shape[0] != 16 or shape[2] % 2 or shape[3] % 2:
        raise argparse.ArgumentTypeError(f"--latent must be C,T,H,W with C = 16 (Wan 2.1's latent channels) and even "
                                         f"H and W (the patch is 2 x 2), e.g. 16,9,60,104; got {text!r}")
    return shape


def _batch_size(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--batch must be at least 1, got {text!r}")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the timing")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration (interleaved)")
    parser.add_argument("--gpu", action="store_true", help="Wan 1.3B-shaped model on CUDA")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest for the tiny model)")
    parser.add_argument("--latent", type=_latent_shape, help="latent shape C,T,H,W (default: the mode's)")
    parser.add_argument("--batch", type=_batch_size, help="batch size (default: the mode's)")
    parser.add_argument("--compare", choices=("precision", "data_in_memory"), default="precision",
                        help="precision: fp32/bf16 x gradient checkpointing off/on (GPU: bf16 only); data_in_memory: "
                             "the first of those, its training tensors read from the shards per batch or held in memory")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args)
    work = Path(tempfile.mkdtemp(prefix="iad-bench-train-"))
    try:
        _compare(args, parser, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _compare(args, parser, work: Path) -> None:
    from harness import tiny_models as tiny
    from harness.train_data import TINY_ADAPTER, synthetic_dataset

    if args.gpu:
        spec = tiny.WanSpec("iad-bench-wan2.1-1.3B-shaped.safetensors", dim=1536, ffn_dim=8960, num_layers=30,
                            dtype="bfloat16", seed=5)
        base = tiny.ensure(spec)
        latent = args.latent or [16, 5, 32, 32]
        adapter = {"token_dim": 1536, "num_tokens": 16, "num_registers": 16}
        batch, device = args.batch or 1, "cuda"
        variants = [("bf16, checkpointing off", {"precision": "bf16", "gradient_checkpointing": False}),
                    ("bf16, checkpointing on", {"precision": "bf16", "gradient_checkpointing": True})]
    else:
        base = tiny.ensure(tiny.WAN21_T2V)
        latent = args.latent or [16, 2, 8, 8]
        adapter, batch, device = dict(TINY_ADAPTER), args.batch or 2, "cpu"
        variants = [("fp32, checkpointing off", {"precision": "fp32", "gradient_checkpointing": False}),
                    ("fp32, checkpointing on", {"precision": "fp32", "gradient_checkpointing": True}),
                    ("bf16, checkpointing off", {"precision": "bf16", "gradient_checkpointing": False}),
                    ("bf16, checkpointing on", {"precision": "bf16", "gradient_checkpointing": True})]
    if args.compare == "data_in_memory":   # the same training, its tensors read per batch or held in memory
        first = variants[0][1]
        variants = [("read from the shards", {**first, "data_in_memory": False}),
                    ("held in memory", {**first, "data_in_memory": True})]
    if not 0 < args.warmup < args.steps:
        parser.error("--warmup must be between 0 and --steps")
    data = synthetic_dataset(work / "data", latent)
    runs: dict[str, list[dict]] = {name: [] for name, _ in variants}
    for round_index in range(args.rounds):
        for name, extra in variants:
            config = dict(base_model=str(base), data=str(data),
                          output_dir=str(work / f"{name.replace(', ', '-').replace(' ', '_')}-{round_index}"),
                          adapter=adapter, steps=args.steps, batch_size=batch, log_every=args.warmup,
                          checkpoint_every=10**6, resume=False, device=device,
                          cpu_threads=args.threads if device == "cpu" else 0, **extra)
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if device == "cpu" else dict(os.environ)
            done = subprocess.run([sys.executable, __file__, "--one", json.dumps(config), "--device", device],
                                  capture_output=True, text=True, env=env, cwd=REPO)
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not line:
                print(f"{name}: failed\n{done.stderr[-3000:]}")
                continue
            runs[name].append(json.loads(line[0][7:]))
            # each run as it ends: a caller that stops this at a deadline keeps the runs made (gpu-check)
            print("RUN " + json.dumps({"configuration": name, "round": round_index, **runs[name][-1]}), flush=True)
    rows = []
    for name, results in runs.items():
        if results:
            speeds = sorted(r["samples_per_s"] for r in results)
            rows.append((name, {**results[0], "samples_per_s": statistics.median(speeds), "low": speeds[0],
                                "high": speeds[-1], "peak_rss": max(r["peak_rss"] for r in results),
                                "peak_cuda": max(r["peak_cuda"] for r in results),
                                "data_ms": statistics.median(r["data_ms"] for r in results)}))
    if not rows:
        return
    ref = rows[0][1]
    size = f"{latent[3] * 8}x{latent[2] * 8}x{(latent[1] - 1) * 4 + 1} frames (latent {'x'.join(map(str, latent))})"
    what = f"Wan 1.3B-shaped, {size}, batch {batch}, CUDA" if args.gpu else \
        f"tiny Wan (dim 128, 2 blocks), {size}, batch {batch}, CPU, {args.threads} thread(s)"
    print(f"\niad.train throughput, {what}, {args.steps} steps ({args.warmup} warm-up steps untimed), "
          f"median of {args.rounds} interleaved rounds")
    memory = "peak CUDA MB" if args.gpu else "peak RSS MB"   # GPU: max_memory_allocated; CPU: the process
    print(f"{'configuration':28s} {'samples/s':>10s} {'range':>15s} {'vs first':>9s} {'significant':>12s} "
          f"{memory:>12s} {'data ms/step':>12s} {'loss start -> end':>20s}")
    for name, r in rows:
        separate = r["low"] > ref["high"] or r["high"] < ref["low"]
        print(f"{name:28s} {r['samples_per_s']:10.2f} {r['low']:7.2f}-{r['high']:<7.2f} "
              f"{r['samples_per_s'] / ref['samples_per_s']:8.2f}x {'yes' if separate else 'no':>12s} "
              f"{(r['peak_cuda'] if args.gpu else r['peak_rss']) / 2**20:12.0f} {r['data_ms']:12.2f} "
              f"{r['loss_first']:9.4f} -> {r['loss_last']:.4f}")


if __name__ == "__main__":
    main()
