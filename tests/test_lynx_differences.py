"""benchmarks/bench_lynx_differences.py keeps working (issue 34, docs/lynx.md "Remaining differences
from bytedance/lynx"): its quick configuration runs end to end on the tiny Lynx-layout Wan, and what it
measures obeys the structural facts the documentation relies on. No measured value is asserted.
"""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest
import torch

from harness.paths import REPO_ROOT


@pytest.fixture(scope="module")
def bench(pack):
    spec = importlib.util.spec_from_file_location("bench_lynx_differences", REPO_ROOT / "benchmarks" / "bench_lynx_differences.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(bench):
    """The quick run, and what it left behind in this process (the suite's later tests train models)."""
    rng = torch.get_rng_state()
    out = bench.main(["--small"])
    return out, {"grad_enabled": torch.is_grad_enabled(), "rng_unchanged": torch.equal(torch.get_rng_state(), rng)}


@pytest.fixture(scope="module")
def results(run):
    return run[0]


def test_the_run_leaves_autograd_on_and_the_global_rng_untouched(run):
    assert run[1] == {"grad_enabled": True, "rng_unchanged": True}


def test_posterior_sample_is_the_mean_plus_std_times_seeded_noise(bench):
    mean = torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    log_var = torch.full_like(mean, -4.0)
    a, b = bench.posterior_sample(mean, log_var, 43), bench.posterior_sample(mean, log_var, 43)
    assert torch.equal(a, b)   # seeded: Lynx's draw is reproducible from its seed
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(43))
    torch.testing.assert_close(a, mean + math.exp(-2.0) * eps)
    assert torch.equal(bench.posterior_sample(mean, log_var, 43, std_scale=0.0), mean)


def test_lynx_sigmas_follow_diffusers_flow_schedule(bench):
    s = bench.lynx_sigmas(50, 3.0)
    assert s.shape == (51,) and float(s[-1]) == 0.0
    assert bool((s[:-1] > s[1:]).all())
    first = 3.0 * 0.999 / (1 + 2.0 * 0.999)   # 1 - 1/1000, shifted
    assert abs(float(s[0]) - first) < 1e-6 and float(s[0]) < 1.0
    assert np.isclose(float(bench.lynx_sigmas(4, 1.0)[1]), 0.999 * 3 / 4, atol=1e-6)   # unshifted: linear


def test_vae_section_structure(results):
    vae = results["vae"]
    assert vae["latent_change_std_zero"] == 0.0           # std forced to 0: the sample is the mean
    assert vae["latent_change"] > 0 and vae["kv_change"] > 0
    assert vae["latent_change_other_face"] > 0 and vae["kv_change_other_face"] > 0
    for row in vae["steps"]:
        assert row["sample_vs_mean"] > 0 and row["other_face"] > 0 and row["ref_effect"] > 0
        assert all(v > 0 for v in row["sweep"].values())


def test_guidance_three_pass_equals_two_pass_at_equal_scales(results):
    for row in results["guidance"]:
        assert row["three_at_equal_scales_vs_two"] < 1e-5   # (g_i - g) * (neg_id - uncond) vanishes at g_i = g
        assert row["two_vs_three"] > 1e-3                    # and is there at Lynx's 5 / 2
        assert row["lynx_effect"] > 0


def test_schedule_section_structure(results, bench):
    s = results["schedule"]
    assert s["same_initial_noise"]   # ComfyUI's noise for a seed is torch.randn from a generator with that seed
    assert s["lynx_first"] < s["basic_first"] == 1.0
    assert 0 < s["max_dt"] < 1.0 and s["truncation_velocity_change"] > 0
    assert s["basic_max_dsigma"] > 0 and s["ksampler_max_dsigma"] > 0
    assert s["ends"][s["reference"]] == 0.0
    assert all(v > 0 for k, v in s["ends"].items() if k != s["reference"])
