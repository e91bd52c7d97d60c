"""Repeated IaD prompts on one server: the adapter is owned by model management the way core's
model patches own theirs, so ComfyUI never reports it as leaked (0.3.75 did on about half of the
prompts when each clone of the model carried its own copy of the adapter's ModelPatcher), and the
output of every prompt equals a fresh server's. Timing and memory of a 50-prompt soak are measured
in benchmarks/bench_soak.py, not here."""

from __future__ import annotations

import pytest
import torch

from test_apply_server import ADAPTERS, graph, iad_files, run_latent, server  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_repeated_identity_prompts_never_log_a_leak_and_stay_deterministic(server, iad_files):
    """Plain and IaD prompts interleaved (a plain prompt drops the IaD nodes' cached outputs while the
    patched model may still be loaded), two adapter files alternating, models unloaded now and then:
    before, ComfyUI 0.3.75 logged "memory leak with model IdentityAdapter" and paid a full garbage
    collection on most prompts. Every repeated prompt gives the same latent."""
    other = server.add_model("iad", iad_files[ADAPTERS["wan-t2v"]], "iad-tiny-wan-copy.safetensors")
    adapters = [ADAPTERS["wan-t2v"], other]
    log_start = len(server.log_text())
    first = {}
    for i in range(20):
        iad = [{"weight": 0.6, "start": 0.5, "adapter": adapters[(i // 2) % 2]}] if i % 2 else []
        prompt, save = graph(iad=iad, steps=2, prefix=f"soak{i}")
        sampler = next(k for k, v in prompt.items() if v["class_type"] == "KSampler")
        prompt[sampler]["inputs"]["seed"] = i % 3
        latent = run_latent(server, (prompt, save))
        key = (i % 2, (i // 2) % 2 if i % 2 else 0, i % 3)
        if key in first:
            assert torch.equal(latent, first[key]), f"prompt {i} differs from the same prompt earlier"
        first[key] = latent
        if i % 5 == 4:   # the "Unload models" button
            status, _ = server.request("POST", "/free", {"unload_models": True, "free_memory": True})
            assert status == 200
    assert len(first) < 20, "no prompt was repeated"
    log = server.log_text()[log_start:]
    leaks = [line for line in log.splitlines() if "memory leak" in line.lower()]
    assert not leaks, f"{len(leaks)} leak lines, e.g. {leaks[0]}"
