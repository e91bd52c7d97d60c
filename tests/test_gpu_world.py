"""make gpu-world's GPU-scale synthetic world (issue 34; docs/gpu.md, docs/synth-world.md), tested without a
GPU: the scales (the shipped CPU world's is unchanged), the step budget that fits the GPU build to its
8 minutes, the refusals, and one line + exit 0 without a GPU. The CPU smoke run of the whole command:
test_gpu_world_smoke.py (v0.28.2 lane only).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, replace
from types import SimpleNamespace

import pytest

from harness.paths import REPO_ROOT

from test_gpu_check import _clean_env

sys.path.insert(0, str(REPO_ROOT))
from synthworld import assets, build, diffusion  # noqa: E402
from synthworld.step_budget import Probe, StepBudget, steady_samples_per_s  # noqa: E402

sys.path.pop(0)


def test_without_a_gpu_gpu_world_says_so_in_one_line_and_exits_0():
    for command in ([sys.executable, "benchmarks/gpu_world.py"], ["make", "-s", "gpu-world"]):
        start = time.monotonic()
        done = subprocess.run(command, cwd=REPO_ROOT, env=_clean_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("\n") == 1 and done.stdout.startswith("gpu-world: no CUDA GPU"), done.stdout
        assert not done.stderr.strip(), done.stderr
        assert time.monotonic() - start < 15


def test_the_shipped_cpu_world_keeps_its_scale_and_model():
    manifest = assets.manifest()
    assert manifest["scale"] == json.loads(json.dumps(asdict(build.FULL)))
    spec = diffusion.WanWorldSpec(dim=build.FULL.wan_dim, ffn_dim=build.FULL.wan_ffn_dim, num_layers=build.FULL.wan_layers)
    assert diffusion.spec_dict(spec) == manifest["wan"] == diffusion.spec_dict(diffusion.WanWorldSpec())
    assert build.FULL.device == "cpu" and build.SCALES["full"] is build.FULL


def test_the_gpu_scale_changes_only_the_generator_and_its_training():
    full, gpu, smoke = asdict(build.FULL), asdict(build.GPU), asdict(build.GPU_SMOKE)
    changed = {k for k in full if full[k] != gpu[k]}
    assert changed == {"wan_dim", "wan_ffn_dim", "wan_layers", "wan_steps", "wan_batch", "wan_lr", "adapter_steps",
                       "adapter_batch", "adapter_lr", "adapter_base_lr", "device"}
    assert not changed & set(build.JUDGE_FIELDS)       # the shipped world's judges can judge it
    assert gpu["wan_dim"] > full["wan_dim"] and gpu["wan_layers"] > full["wan_layers"]
    assert gpu["wan_steps"] * gpu["wan_batch"] > full["wan_steps"] * full["wan_batch"]
    assert gpu["adapter_steps"] * gpu["adapter_batch"] > full["adapter_steps"] * full["adapter_batch"]
    # the smoke scale is the GPU layout on the CPU at a few steps
    assert {k for k in gpu if gpu[k] != smoke[k]} <= {"wan_steps", "wan_batch", "adapter_steps", "adapter_batch",
                                                       "decoupler_steps", "device"}
    assert smoke["device"] == "cpu" and smoke["wan_dim"] == gpu["wan_dim"]


def test_judges_are_copied_only_from_a_world_built_with_the_same_judge_settings(tmp_path):
    with pytest.raises(ValueError, match="train_identities"):
        build.build_world(tmp_path / "w", replace(build.GPU_SMOKE, train_identities=100),
                          reuse_judges_from=assets.WORLD_DIR, reuse_recognizer=True)
    with pytest.raises(ValueError, match="reuse_judges_from"):
        build.build_world(tmp_path / "w", build.GPU_SMOKE, reuse_recognizer=True)
    # any copy of the classifier, detector and VAE is checked, not only the GPU world's
    with pytest.raises(ValueError, match="detector_steps"):
        build.build_world(tmp_path / "w", replace(build.FULL, detector_steps=1), reuse_judges_from=assets.WORLD_DIR)
    with pytest.raises(ValueError, match="multiple of 128"):
        build.build_world(tmp_path / "w", replace(build.GPU_SMOKE, wan_dim=200))
    assert not (tmp_path / "w").exists()        # refused before anything was written


def test_build_script_refusals_name_the_fix(tmp_path):
    script = [sys.executable, "scripts/build_synth_world.py"]
    cases = [
        (["--scale", "gpu"], "never overwrites the shipped world"),
        (["--scale", "gpu", "--out", str(tmp_path / "w")], "none is visible"),
        (["--scale", "gpu-smoke", "--verify"], "builds the whole world once"),
        (["--smoke", "--scale", "gpu"], "--smoke is --scale smoke"),
    ]
    for args, message in cases:
        done = subprocess.run(script + args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr[-2000:])


def _history(rates_by_step: dict[int, float]):
    return [{"step": s, "samples_per_s": r} for s, r in rates_by_step.items()]


def test_steady_rate_leaves_out_the_first_steps_warm_up():
    # batch 10: step 10 at 5 s (warm-up), step 30 at 7 s -> 200 samples in 2 s after the first entry
    history = _history({10: 100 / 5, 30: 300 / 7})
    assert steady_samples_per_s(history, 10) == pytest.approx(100.0)
    assert steady_samples_per_s(_history({3: 12.5}), 4) == 12.5
    with pytest.raises(ValueError, match="log_every"):
        steady_samples_per_s([], 4)


def test_the_budget_fits_steps_to_the_time_left_and_records_them(monkeypatch):
    clock = {"now": 1000.0}
    monkeypatch.setattr(time, "time", lambda: clock["now"])
    budget = StepBudget(deadline=1000.0 + 300, probe_steps=30, slack=1.0)

    def run(steps, log_every):     # a stand-in iad.train run: 5 s start-up, then 100 samples/s at batch 10
        assert (steps, log_every) == (30, 10)
        clock["now"] += 5 + steps * 10 / 100
        return SimpleNamespace(history=_history({s: s * 10 / (5 + s * 10 / 100) for s in (10, 20, 30)}))

    probe = budget.probe("wan", 10, run)
    assert probe.samples_per_s == pytest.approx(100.0) and probe.startup_s == pytest.approx(5.0)
    # 292 s left, a third each: 97.3 s - 5 s start-up -> 923 steps of 10 samples; the plan allows 5000
    steps = budget.fit("wan", 5000, [probe], share=1 / 3)
    assert steps == int((292 / 3 - 5) * 100 / 10) and budget.fitted["wan"]["limited_by"] == "time"
    assert budget.fit("small", 40, [probe], share=1 / 3) == 40 and budget.fitted["small"]["limited_by"] == "scale"
    # two runs share what is left, each paying its own start-up and running at its own rate, with the same
    # steps: a slower second configuration (IaD's extra losses: 50 samples/s, 8 s start-up) costs its share
    slower = Probe("adapter-iad", 30, 10, wall_s=14.0, samples_per_s=50.0, startup_s=8.0)
    both = budget.fit("adapters", 5000, [probe, slower], share=1.0)
    assert both == int((292 - 5 - 8) / (10 / 100 + 10 / 50))
    assert budget.fitted["adapters"]["runs"] == 2 and budget.fitted["adapters"]["probes"] == ["adapter-iad", "wan"]
    assert budget.fit("twice", 5000, [probe, probe], share=1.0) == int((292 / 2 - 5) * 100 / 10)
    clock["now"] = budget.deadline + 10         # past the deadline: one step each, never zero or negative
    assert budget.fit("late", 5000, [probe], share=0.5) == 1
    with pytest.raises(ValueError, match="share"):
        budget.fit("bad", 10, [probe], share=0)
    with pytest.raises(ValueError, match="probe"):
        budget.fit("none", 10, [], share=1.0)
    record = budget.record()
    assert record["probes"][0]["stage"] == "wan" and set(record["fitted"]) == {"wan", "small", "adapters", "twice", "late"}


def test_only_the_files_this_run_wrote_go_back(tmp_path):
    """make gpu-world copies to $OUT whatever this run wrote, whatever its exit, and never an earlier
    run's file left in the results folder."""
    import os

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import gpu_world

    sys.path.pop(0)
    old, new = (tmp_path / name for name in gpu_world.FILES[:2])
    old.write_text("an earlier run")
    os.utime(old, (time.time() - 3600,) * 2)
    started = time.time() - 1
    new.write_text("this run")
    assert gpu_world.written_by_this_run(tmp_path, started) == [new]
