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
    # Two adapter files: alternating them replaces the loader's cached output (and its patcher)
    # while models patched with the other one are still around.
    other = server.add_model("iad", iad_files[ADAPTERS["wan-t2v"]], "iad-tiny-wan-copy.safetensors")
    adapters = [ADAPTERS["wan-t2v"], other]
    log_start = len(server.log_text())
    first = {}
    for i in range(16):
        seed_graph = graph(iad=[{"weight": 0.5 + 0.1 * (i % 4), "start": 0.5, "adapter": adapters[i % 2]}], steps=2,
                           prefix=f"soak{i}")
        sampler = next(k for k, v in seed_graph[0].items() if v["class_type"] == "KSampler")
        seed_graph[0][sampler]["inputs"]["seed"] = i % 5   # new work each prompt, repeats to compare
        latent = run_latent(server, seed_graph)
        # What the "Unload models" button does: model management lets go of every model, and the
        # next prompt's clean-up collects what is no longer referenced.
        status, _ = server.request("POST", "/free", {"unload_models": True, "free_memory": True})
        assert status == 200
        key = (i % 4, i % 5)
        if key in first:
            assert torch.equal(latent, first[key]), f"prompt {i} differs from the same prompt earlier"
        first[key] = latent
    log = server.log_text()[log_start:]
    leaks = [line for line in log.splitlines() if "memory leak" in line.lower()]
    assert not leaks, leaks
