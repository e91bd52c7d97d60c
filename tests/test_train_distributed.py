"""torchrun with 2 CPU processes on the gloo backend, DDP and FSDP (fully_shard, also sharding the
frozen base): the same parameters as one process with the equivalent batch (2 x 1 == 1 x 2)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from harness import train_data
from harness.train_fixtures import _restore_threads, dataset  # noqa: F401  (fixtures)
from harness.paths import REPO_ROOT

STEPS = 6


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory):
    from iad.train import run

    out = tmp_path_factory.mktemp("single")
    result = run(train_data.train_config(dataset, out, steps=STEPS, batch_size=2, log_every=1))
    return load_file(str(result.final_checkpoint)), out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(config: dict, tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "iad.train", str(path)]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]


@pytest.mark.slow
@pytest.mark.parametrize("strategy,extra", [("ddp", {}), ("fsdp", {"fsdp_shard_base": True})], ids=["ddp", "fsdp"])
def test_two_gloo_processes_equal_one_process_with_the_equivalent_batch(single, dataset, tmp_path, strategy, extra):
    reference, single_out = single
    out = tmp_path / strategy
    _torchrun(train_data.train_config(dataset, out, steps=STEPS, batch_size=1, log_every=1,
                                      distributed={"strategy": strategy, "backend": "gloo", **extra}), tmp_path)
    trained = load_file(str(out / "iad-tiny-trained.safetensors"))
    assert trained.keys() == reference.keys()
    worst = max(float((trained[k] - reference[k]).abs().max()) for k in reference)
    initial_gap = max(float(reference[k].abs().max()) for k in reference if ".to_v_ip." in k)
    assert initial_gap > 1e-2          # to_v_ip starts at zero: training moved it far beyond the tolerance
    assert worst < 1e-4, f"{strategy}: max parameter difference {worst}"
    # the logged loss terms are the global-batch means, as in the single-process run
    rows = lambda p: [json.loads(x) for x in (p / "log.jsonl").read_text().splitlines() if '"eval"' not in x]  # noqa: E731
    for a, b in zip(rows(out), rows(single_out)):
        assert a["step"] == b["step"] and abs(a["diffusion"] - b["diffusion"]) < 1e-4 * max(1.0, b["diffusion"])
        assert abs(a["text_alignment"] - b["text_alignment"]) < 1e-4


def _model_config(mode: str, dataset, out, **overrides) -> dict:
    """mode 'base' (the tiny Wan itself) or 'vae' (the tiny Wan VAE, whole clips)."""
    from harness import tiny_models as tiny

    extra = ({"base_model": str(tiny.ensure(tiny.WanVAESpec("iad-tiny-wan2.1-vae-student.safetensors", seed=5)))}
             if mode == "vae" else {})
    config = train_data.train_config(dataset, out, mode=mode, name=f"tiny-{mode}", steps=STEPS, log_every=1,
                                     save_dtype="float32", optimizer={"lr": 1e-3}, **extra, **overrides)
    config.pop("adapter")
    return config


@pytest.fixture(scope="module")
def single_model(dataset, tmp_path_factory):
    """Single-process runs of each mode with the global batch (2), made once."""
    from iad.train import run

    runs = {}

    def get(mode):
        if mode not in runs:
            out = tmp_path_factory.mktemp(f"single-{mode}")
            result = run(_model_config(mode, dataset, out, batch_size=2))
            runs[mode] = (load_file(str(result.final_checkpoint)), out, result.history[0])
        return runs[mode]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("mode,strategy", [("base", "ddp"), ("base", "fsdp"), ("vae", "ddp"), ("vae", "fsdp")])
def test_model_modes_two_gloo_processes_equal_one_process(single_model, dataset, tmp_path, mode, strategy):
    """The model itself trains (mode 'base': the Wan, FSDP sharding every block; mode 'vae': the
    Wan VAE, FSDP as one unit): 2 processes x batch 1 == 1 process x batch 2."""
    from safetensors import safe_open

    reference, single_out, _ = single_model(mode)
    out = tmp_path / strategy
    config = _model_config(mode, dataset, out, batch_size=1, distributed={"strategy": strategy, "backend": "gloo"})
    _torchrun(config, tmp_path)
    trained = load_file(str(out / f"tiny-{mode}.safetensors"))
    with safe_open(config["base_model"], framework="pt") as f:
        original = {k: f.get_tensor(k) for k in f.keys()}
    assert trained.keys() == reference.keys() == original.keys()
    moved = max(float((reference[k] - original[k].float()).abs().max()) for k in original)
    worst = max(float((trained[k] - reference[k]).abs().max()) for k in reference)
    assert moved > 1e-3, "training should move the weights well beyond the tolerance"
    assert worst < 1e-4, f"{mode}/{strategy}: max parameter difference {worst}"
    term = "diffusion" if mode == "base" else "vae_decode"
    rows = lambda p: [json.loads(x) for x in (p / "log.jsonl").read_text().splitlines() if '"eval"' not in x]  # noqa: E731
    for a, b in zip(rows(out), rows(single_out)):
        assert a["step"] == b["step"] and abs(a[term] - b[term]) < 1e-4 * max(1.0, b[term])


def test_a_bare_cuda_device_gets_this_process_index():
    """`device: cuda` in a config: torch.cuda.set_device refuses a CUDA device without an index
    (found on a GPU machine), so the trainer names this process's GPU (LOCAL_RANK, 0 in one process)."""
    from iad.train.distributed import device_name

    assert device_name("cuda", 0, True) == "cuda:0"
    assert device_name("cuda", 3, True) == "cuda:3"
    assert device_name("auto", 1, True) == "cuda:1" and device_name("auto", 0, False) == "cpu"
    assert device_name("cuda:2", 0, True) == "cuda:2" and device_name("cpu", 5, True) == "cpu"
