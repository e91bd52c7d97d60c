"""make gpu-world's CPU smoke run (issue 34): the GPU-scale world's whole command -- its build with the
step budget's probes, the experiment and the three result files -- on the CPU at a few steps. It uses
ComfyUI v0.28.2 as the GPU run does (environment.prepare), so it is collected in that lane only
(tests/conftest.py). The checks that need no build: test_gpu_world.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest

from harness.paths import REPO_ROOT

from test_gpu_check import _clean_env

sys.path.insert(0, str(REPO_ROOT))
from synthworld import assets, build  # noqa: E402

sys.path.pop(0)


def _digest(path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


@pytest.mark.slow
def test_cpu_smoke_builds_the_gpu_scale_world_and_runs_the_experiment(tmp_path):
    published = {p.name: _digest(p) for p in (REPO_ROOT / "docs" / "results").glob("synth*")}
    results = tmp_path / "results"
    start = time.monotonic()
    returned = tmp_path / "out"     # the device call's $OUT: what comes back from the GPU machine
    returned.mkdir()
    done = subprocess.run([sys.executable, "benchmarks/gpu_world.py", "--cpu-smoke", "--results", str(results)],
                          cwd=REPO_ROOT, env={**_clean_env(), "OUT": str(returned)}, capture_output=True, text=True, timeout=900)
    print(f"\nCPU smoke run: {time.monotonic() - start:.0f} s\n{done.stdout[-3000:]}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((results / "synth_experiment_gpu.json").read_text())

    # labelled: never a GPU number, never mixed with the CPU world's published files
    assert data["device"] == "CPU smoke run (not a result)" and data["scale_name"] == "gpu-smoke"
    assert (results / "synth_table_gpu.md").read_text().startswith("GPU-scale synthetic world, CPU smoke run")
    assert (results / "synth_samples_gpu.png").stat().st_size > 0
    assert sorted(p.name for p in returned.iterdir()) == sorted(p.name for p in results.iterdir())
    assert data["status"] == "ok" and data["bit_reproducible"] is True and data["tf32"] is False
    assert {p.name: _digest(p) for p in (REPO_ROOT / "docs" / "results").glob("synth*")} == published

    # the GPU layout, its steps fitted by the budget (never above the scale's), the shipped judges copied
    b = data["build"]
    assert b["wan"]["dim"] == build.GPU.wan_dim and b["wan"]["num_layers"] == build.GPU.wan_layers
    probes = {p["stage"]: p for p in b["step_budget"]["probes"]}
    assert set(probes) == {"wan", "adapter-naive", "adapter-iad"} and all(p["samples_per_s"] > 0 for p in probes.values())
    fitted = b["step_budget"]["fitted"]
    assert b["scale"]["wan_steps"] == fitted["wan"]["steps"] <= build.GPU_SMOKE.wan_steps
    assert b["scale"]["adapter_steps"] == fitted["adapters"]["steps"] <= build.GPU_SMOKE.adapter_steps
    assert fitted["adapters"]["runs"] == 2 and fitted["adapters"]["probes"] == ["adapter-iad", "adapter-naive"]
    # what each stage trained on, beside the shipped CPU world's (the budget decides, so it is measured)
    cpu = assets.manifest()["scale"]
    assert data["training_samples"] == {
        "wan": fitted["wan"]["steps"] * build.GPU_SMOKE.wan_batch, "adapter": fitted["adapters"]["steps"] * build.GPU_SMOKE.adapter_batch,
        "cpu_world": {"wan": cpu["wan_steps"] * cpu["wan_batch"], "adapter": cpu["adapter_steps"] * cpu["adapter_batch"]}}
    assert f"each adapter {data['training_samples']['adapter']:,} (CPU world 72,000)" in (results / "synth_table_gpu.md").read_text()
    assert {"recognizer_from", "judges_and_vae_from"} <= set(b["reused"])
    shipped = assets.manifest()["files"]
    for name in (f"{build.PACK_NAME}/{build.RECOGNIZER_FILE}", f"{build.PACK_NAME}/{build.DETECTOR_FILE}", build.VAE_FILE):
        assert b["files"][name] == shipped[name], name          # one judge for both worlds
    assert b["files"][build.WAN_FILE] != shipped[build.WAN_FILE]

    # the experiment ran every system and computed every goal with its interval
    exp = data["experiment"]
    assert set(exp["results"]) == {"base", "naive", "iad", "naive_tf"}
    assert exp["config"]["identities"] == 8 and set(exp["goals"]) >= {"naive_identity_accuracy", "iad_copy_over_naive",
                                                                       "iad_identity_delta_points"}
    for name, goal in exp["goals"].items():
        assert {"value", "ci95", "target", "met"} <= set(goal), name
