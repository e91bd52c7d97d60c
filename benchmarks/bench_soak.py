"""A 50-prompt soak on one real ComfyUI server: plain and IaD prompts interleaved, side by side.

    .venv/bin/python scripts/lanes.py run "" -- .venv/bin/python benchmarks/bench_soak.py          # 0.3.75
    .venv/bin/python scripts/lanes.py run v0.28.2 -- .venv/bin/python benchmarks/bench_soak.py     # v0.28.2
    ... benchmarks/bench_soak.py --prompts 50 --unload-every 5

Tiny Wan 2.1 T2V (test models), KSampler 2 steps, a new seed every prompt. Three kinds of prompt
take turns: plain; IaD with the same adapter and weight (only the sampler re-runs, as when a user
re-rolls seeds); IaD switching between two adapter files with a new weight (the loader, IaD Identity
and IaD Apply re-run too). Every ``--unload-every`` prompts the models are unloaded (POST /free, the
"Unload models" button). Reported: the server's "memory leak" log lines (goal: none), its resident
memory (RSS) after prompt 10 and after the last one (goal: flat), and the median wall time of each
IaD kind against plain prompts after the first of each (goal: within 10 % for re-rolled seeds; the
switching kind also loads an adapter and recomputes the identity, a fixed cost that the tiny model's
~50 ms prompts make look large).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import make_server  # noqa: E402
from harness import apply_fixtures as af  # noqa: E402
from harness import tiny_models as tiny  # noqa: E402
from harness.paths import comfyui_version  # noqa: E402
from test_apply_server import graph  # noqa: E402


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--unload-every", type=int, default=5)
    args = parser.parse_args()

    af.pack()
    save_adapter = af.module("iad.checkpoint").save_adapter
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        adapters = []
        for seed in (0, 1):
            name = f"soak-adapter-{seed}.safetensors"
            save_adapter(af.make_adapter(af.FAMILIES["wan-t2v"], seed=seed), tmp / name)
            adapters.append(name)
        server = make_server(tmp / "server", tiny.ensure_all()).start()
        try:
            for name in adapters:
                server.add_model("iad", tmp / name, name)
            times = {"plain": [], "iad": [], "iad-switch": []}
            rss = {}
            log_start = len(server.log_text())
            for i in range(args.prompts):
                kind = ("plain", "iad", "iad-switch")[i % 3]
                iad = {"plain": [], "iad": [{"weight": 0.8, "start": 0.5, "adapter": adapters[0]}],
                       "iad-switch": [{"weight": 0.5 + 0.1 * (i % 5), "start": 0.5, "adapter": adapters[(i // 3) % 2]}]}[kind]
                prompt, _ = graph(iad=iad, steps=2, prefix=f"soak{i}")
                sampler = next(k for k, v in prompt.items() if v["class_type"] == "KSampler")
                prompt[sampler]["inputs"]["seed"] = i
                started = time.perf_counter()
                server.run_ok(prompt)
                times[kind].append(time.perf_counter() - started)
                if args.unload_every and (i + 1) % args.unload_every == 0:
                    server.request("POST", "/free", {"unload_models": True, "free_memory": True})
                if i + 1 in (10, args.prompts):
                    rss[i + 1] = rss_mb(server.process.pid)
            leaks = [line for line in server.log_text()[log_start:].splitlines() if "memory leak" in line.lower()]
        finally:
            server.stop()

    plain, iad, switch = (statistics.median(times[k][1:]) for k in ("plain", "iad", "iad-switch"))
    print(f"ComfyUI {comfyui_version()}: {args.prompts} prompts (plain / IaD / IaD switching adapters in turn), "
          f"unload every {args.unload_every}")
    print(f"  'memory leak' log lines: {len(leaks)}" + (f"  e.g. {leaks[0]}" if leaks else ""))
    first, last = min(rss), max(rss)
    print(f"  server RSS: {rss[first]:.0f} MiB after prompt {first}, {rss[last]:.0f} MiB after prompt {last} "
          f"(ratio {rss[last] / rss[first]:.3f})")
    print(f"  median prompt time after the first: plain {plain * 1000:.0f} ms, IaD re-rolled seed {iad * 1000:.0f} ms "
          f"(ratio {iad / plain:.3f}), IaD switching adapter {switch * 1000:.0f} ms (ratio {switch / plain:.3f})")


if __name__ == "__main__":
    main()
