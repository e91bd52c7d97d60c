"""Data preparation on 2 processes against 1: ``torchrun --nproc_per_node 2 -m iad.prepare`` and
``python -m iad.prepare`` on the same generated clips, side by side in one run.

CPU, one thread per process (torch, onnxruntime and OpenCV: ``cpu_threads`` 1 and
OMP_NUM_THREADS=1), the hash text encoder, the tiny Wan VAE and the generated insightface pack
(``tests/harness``), 64x64 latents of 5-frame windows, ``--clips-per-shard`` clips per shard.
Every run is a fresh output folder and fresh processes (start-up included: that is what a user
waits for); the rounds alternate the configurations, so a drift in the machine's load hits all.

A third configuration measures what the machine allows: two plain ``python -m iad.prepare`` at
once, each on its own half of the clips (no torchrun, no coordination; the wall time until both
are done). Its speed-up over one process is the most any 2-process split can reach here, since
processes on neighbouring cores slow each other down (shared caches, memory bandwidth, clocks).

The table gives every round's wall time, the medians and their ratios to one process, and whether
every later output folder (2 processes, or 1 again) is byte for byte the first 1-process one.

    .venv/bin/python benchmarks/bench_prepare.py [--clips 512] [--frames 13] [--clips-per-shard 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
CONFIGS = ("1 process", "torchrun 2 processes", "2 independent halves")


def _command(nproc: int, config: dict, out: Path) -> list[str]:
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps({**config, "output": str(out)}))
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    return [sys.executable, *launcher, "-m", "iad.prepare", str(path), "--no-progress"]


def timed(commands: list[list[str]]) -> float:
    """Wall time until every command (started together) is done."""
    start = time.perf_counter()
    running = [subprocess.Popen(c, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for c in commands]
    outputs = [p.communicate() for p in running]
    seconds = time.perf_counter() - start
    for p, (out, err) in zip(running, outputs):
        if p.returncode:
            sys.exit(f"{' '.join(p.args)} failed:\n{out[-2000:]}\n{err[-6000:]}")
    return seconds


def split_halves(clips: Path, work: Path, count: int) -> list[Path]:
    """Two input folders of symbolic links: the first and the second half of the clips (and sidecars)."""
    halves = [work / "half-a", work / "half-b"]
    for half in halves:
        half.mkdir()
    for path in clips.iterdir():
        n = int(re.match(r"clip(\d+)", path.name).group(1))
        (halves[n >= count // 2] / path.name).symlink_to(path)
    return halves


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--frames", type=int, default=13, help="frames per generated clip")
    parser.add_argument("--clips-per-shard", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from harness import train_data

    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        started = time.perf_counter()
        clips = train_data.make_dataset(work / "clips", persons=args.clips, clips_per_person=1, frames=args.frames)
        halves = split_halves(clips, work, args.clips)
        config = dict(train_data.prepare_settings(clips, work / "unused"), clips_per_shard=args.clips_per_shard,
                      cpu_threads=1)
        print(f"{args.clips} generated clips of {args.frames} frames (128x128; half mp4, half PNG folders) in "
              f"{time.perf_counter() - started:.0f} s; {args.clips_per_shard} clips per shard, {args.rounds} rounds, "
              f"{os.cpu_count()} CPUs")
        times: dict[str, list[float]] = {name: [] for name in CONFIGS}
        reference: dict[str, bytes] | None = None
        identical: list[tuple[str, bool]] = []
        for r in range(args.rounds):
            for name in CONFIGS:
                outs = [work / f"r{r}-{len(times[name])}-{n}" for n in range(2 if name == CONFIGS[2] else 1)]
                if name == CONFIGS[2]:
                    commands = [_command(1, {**config, "input": str(h)}, o) for h, o in zip(halves, outs)]
                else:
                    commands = [_command(1 if name == CONFIGS[0] else 2, config, outs[0])]
                seconds = timed(commands)
                times[name].append(seconds)
                if name != CONFIGS[2]:
                    files = folder_bytes(outs[0])
                    if reference is None:
                        reference = files
                        print(f"output: {len(files)} files, {sum(map(len, files.values())) / 2**20:.1f} MiB")
                    else:
                        identical.append((name, files == reference))
                for out in outs:
                    shutil.rmtree(out)
                print(f"round {r + 1}: {name:22s} {seconds:7.1f} s", flush=True)
        one = statistics.median(times[CONFIGS[0]])
        print()
        print(f"{'':22s} {'median s':>9s} {'range s':>15s} {'clips/s':>8s} {'speed-up':>9s}")
        for name in CONFIGS:
            t = times[name]
            m = statistics.median(t)
            print(f"{name:22s} {m:9.1f} {min(t):7.1f}-{max(t):<7.1f} {args.clips / m:8.2f} {one / m:8.2f}x")
        for name in CONFIGS[:2]:
            same = [ok for n, ok in identical if n == name]
            if same:
                print(f"{name}: output byte-identical to the first 1-process output: {all(same)} "
                      f"({sum(same)}/{len(same)} runs)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
