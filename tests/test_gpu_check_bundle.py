"""make gpu-check's CPU smoke run and its bundle (issue 34; docs/gpu.md), tested without a GPU. The
bundle carries ComfyUI v0.28.2, so this file is collected in that version's lane only (tests/conftest.py);
the checks that need no ComfyUI are in test_gpu_check.py.

- ``--cpu-smoke`` runs every phase's code path on the CPU at tiny sizes (a real v0.28.2 server with
  --cpu, the probe node, iad.train, DDP on gloo, bench_train.py) and writes gpu.json / gpu.md.
- The bundle (``scripts/gpu_bundle.py``, built once into ``.gpu/`` as ``make gpu-bundle`` does; the wheels
  come from the package index the first time) fits in 64 MiB with the working tree, carries only
  CPython 3.12 manylinux x86_64 (or pure) wheels whose requirements the bundle or the GPU image meets,
  and a ComfyUI v0.28.2 tree without tests.
- The bundled ComfyUI tree, restored as the GPU machine restores it (unpack, RECORD check, pip
  --no-index --target), starts a server with this pack and runs IaD Apply, in a Python that sees only
  the GPU image's packages (tests/harness/gpu_image.py); make gpu-world's modules import there and load
  the shipped world. This Python is 3.11, the GPU's 3.12, so the
  compiled wheels come from the bundle's CPython 3.11 twin: the same versions, built the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from harness import tiny_models as tiny
from harness.comfy_server import ComfyServer
from harness.paths import REPO_ROOT, TEST_NODES_DIR
from harness.prompts import Prompt, run_latent

from test_gpu_check import _clean_env, gpu_bundle, unpacked_wheel  # one copy of the shared setup


@pytest.mark.slow
def test_cpu_smoke_runs_every_phase(tmp_path):
    results = tmp_path / "results"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--work", str(tmp_path / "work"),
                           "--results", str(results)], cwd=REPO_ROOT, env=_clean_env(), capture_output=True, text=True,
                          timeout=600)
    seconds = time.monotonic() - start
    print(f"\nCPU smoke run: {seconds:.0f} s\n{done.stdout[-3000:]}")
    data = json.loads((results / "gpu.json").read_text())
    assert (results / "gpu.md").read_text().startswith("# make gpu-check (cpu-smoke)")
    assert data["mode"] == "cpu-smoke" and data["comfyui"]["version"] == "0.28.2" and data["gpus"] == 0
    assert list(data["phases"]) == ["server", "identity", "train", "bench_train"]
    problems = {name: p.get("error", "")[-1500:] for name, p in data["phases"].items() if p["status"] != "ok"}
    assert not problems, problems
    server = data["phases"]["server"]["figures"]
    for key in ("iad_apply_wan1.3B_bf16", "context_windows_wan1.3B_bf16", "lynx_wan14B_slice_bf16",
                "lynx_wan14B_slice_fp8_scaled", "multigpu"):
        assert server[key]["status"] == "ok", (key, server[key])
        assert server[key]["latent_finite"], key
        assert all(len(p) == 3 or key == "multigpu" for p in server[key]["model_calls_per_step"].values())
    for key in ("iad_apply_wan1.3B_bf16", "context_windows_wan1.3B_bf16", "lynx_wan14B_slice_bf16",
                "lynx_wan14B_slice_fp8_scaled"):
        assert server[key]["weight0_bit_identical"] is True, key
        assert server[key]["identity_changes_latent"] is True, key
        assert server[key]["ratio_with_to_without"] > 0
    for key, base, patched, again in (("iad_apply_wan1.3B_bf16", "without IaD", "with IaD", "without IaD again"),
                                      ("lynx_wan14B_slice_bf16", "without Lynx", "Lynx full (ID + ref)", "without Lynx again")):
        assert server[key]["aa_bit_identical"] is True, key    # the A/A control of weight 0's bit identity
        resident = server[key]["resident_when_steps_began"]
        assert len(resident[patched]) > len(resident[base]) >= 1, (key, resident)   # the adapters load with the identity
    # every experiment starts with the models unloaded: the one after IaD Apply's begins without its adapter
    resident = [server[k]["resident_when_steps_began"] for k in ("iad_apply_wan1.3B_bf16", "context_windows_wan1.3B_bf16")]
    assert [m["model"] for m in resident[1]["windows alone"]] == [m["model"] for m in resident[0]["without IaD"]], resident
    assert server["iad_apply_wan1.3B_bf16"]["dynamic_vram"] is False     # --cpu: no dynamic VRAM
    windows = server["context_windows_wan1.3B_bf16"]["model_calls_per_step"]["windows alone"]
    assert min(windows) >= 2, windows        # the windows were used: more than one model call per step
    assert server["multigpu"]["equal_within_1e_3_relative"] is True    # the two-CPU-device stand-in
    identity = data["phases"]["identity"]["figures"]
    assert all(identity[k]["median_warm_s"] > 0 for k in identity if k != "headline")
    train = data["phases"]["train"]["figures"]
    trained = {k: v for k, v in train.items() if isinstance(v, dict) and v.get("status") == "ok"}
    assert {k.split(",")[0] for k in trained} >= {"adapter", "base", "vae", "ddp"}, train
    assert all(v["losses_finite"] and v["checkpoint_written"] for k, v in trained.items() if k != "ddp, one process")
    assert len(data["phases"]["bench_train"]["figures"]["rows"]) == 4
    assert len(data["phases"]["bench_train"]["figures"]["runs"]) == 4      # one RUN line per run, as each ends


@pytest.fixture(scope="module")
def bundle() -> Path:
    """``.gpu/`` as ``make gpu-bundle`` builds it (reused while up to date)."""
    done = subprocess.run([sys.executable, "scripts/gpu_bundle.py", "build"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=1500)
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return REPO_ROOT / ".gpu"


@pytest.mark.slow
def test_the_bundle_fits_in_64_mib_with_the_working_tree_and_is_for_the_gpu_machine(bundle):
    size = gpu_bundle.size_report(bundle)
    print(f"\nworking tree {size['working_tree_bytes'] / 2**20:.2f} MiB + bundle {size['bundle_bytes'] / 2**20:.2f} MiB")
    assert size["fits"] and size["total_bytes"] <= 64 * 2**20, size
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["python_version"] == "3.12" and manifest["comfyui"]["version"] == "0.28.2"
    files = [w["file"] for w in manifest["wheels"]]
    assert {gpu_bundle.canonical(f.split("-")[0]) for f in files} >= {"av", "comfy-aimdo", "comfy-kitchen", "sqlalchemy",
                                                                        "torchsde", "insightface", "pydantic"}
    assert all(gpu_bundle.wheel_fits(f, "3.12") is None for f in files), files
    av = next(w for w in manifest["wheels"] if w["file"].startswith("av-"))   # its DWARF: 5 MiB of the 64
    assert manifest["strip"] and av["debug_stripped"]["files"] > 0 and av["debug_stripped"]["bytes_removed"] > 20 * 10**6
    cache = REPO_ROOT / ".cache" / "gpu-wheels" / "cp312"
    assert gpu_bundle.unmet_requirements([cache / f for f in files], "3.12") == []
    for archive in manifest["archives"]:
        assert gpu_bundle.sha256_file(bundle / archive["file"]) == archive["sha256"]
    with tarfile.open(bundle / "comfyui.tar.xz", "r:xz") as tar:
        names = tar.getnames()
    assert "ComfyUI/main.py" in names and "ComfyUI/comfy/ldm/wan/model.py" in names
    assert not [n for n in names if n.split("/")[1] in (".git", "tests", "tests-unit", "comfy_api_nodes")]


class ImageServer(ComfyServer):
    """A server in a Python that sees only the restored bundle and the GPU image's packages (-S: no
    site-packages), with no frontend and no API nodes, as the GPU check runs it."""

    def command(self) -> list[str]:
        command = super().command()
        (self.base_dir / "no-frontend").mkdir(parents=True, exist_ok=True)
        return [command[0], "-S", *command[1:], "--front-end-root", str(self.base_dir / "no-frontend"), "--disable-api-nodes"]


@pytest.mark.slow
def test_the_restored_bundle_starts_a_server_with_the_pack_on_the_gpu_images_packages(bundle, tmp_path):
    from harness import apply_fixtures as af
    from harness import gpu_image

    twin = REPO_ROOT / ".cache" / "gpu-bundle-py311"
    built = subprocess.run([sys.executable, "scripts/gpu_bundle.py", "build", "--python-version", "3.11", "--preset", "0",
                            "--out", str(twin), "--no-limit"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    real, copy = (json.loads((b / "manifest.json").read_text()) for b in (bundle, twin))
    assert [w["requirement"] for w in copy["wheels"]] == [w["requirement"] for w in real["wheels"]]
    paths = gpu_bundle.restore(twin, tmp_path / "restored")
    assert not unpacked_wheel.has_debug_sections(Path(paths["site"]) / "av" / "_core.abi3.so")   # stripped; the server imports it
    image = gpu_image.build_image_folder(tmp_path / "image", Path(paths["comfyui"]))
    assert "torch" in image["linked"] and not {"av", "sqlalchemy", "comfy-kitchen", "insightface"} & set(image["linked"])
    env = {**_clean_env(), "PYTHONPATH": os.pathsep.join([paths["site"], str(tmp_path / "image")])}
    check = subprocess.run([sys.executable, "-S", "-c", "import sqlalchemy"], env={**env, "PYTHONPATH": str(tmp_path / "image")},
                           capture_output=True, text=True)
    assert check.returncode != 0, "the image stand-in must not see this environment's packages"
    adapter = af.module("iad.checkpoint").save_adapter(af.make_adapter(af.FAMILIES["wan-t2v"]), tmp_path / "adapter.safetensors")
    server = ImageServer(Path(paths["comfyui"]), tmp_path / "base",
                         custom_nodes={"ComfyUI-IaD": REPO_ROOT, "iad_test_nodes": TEST_NODES_DIR},
                         models={"diffusion_models": {tiny.WAN21_T2V.filename: tiny.ensure(tiny.WAN21_T2V)},
                                 "iad": {"adapter.safetensors": adapter}}, env=env)
    with server:
        info = server.object_info()
        assert {"IaDApply", "IaDLynxRefAdapter", "IaDModelLoader", "WanContextWindowsManual", "MultiGPU_WorkUnits",
                "KSampler", "SaveLatent"} <= set(info)
        log = server.log_text()
        assert "Failed to import comfy_kitchen" not in log and "blake3 package not installed" not in log
        p = Prompt()
        model = p.add("UNETLoader", unet_name=tiny.WAN21_T2V.filename, weight_dtype="default")[0]
        loader = p.add("IaDModelLoader", adapter_name="adapter.safetensors", dtype="auto")
        faces = p.add("IaDTestFaceEmbeds", seed=0, count=3)
        identity = p.add("IaDIdentity", iad_model=loader[0], face_embeds=faces[0], decoupling="auto", strength=1.0)
        model = p.add("IaDApply", model=model, iad_model=loader[0], identity=identity[0], weight=1.0, start_percent=0.0,
                      end_percent=1.0)[0]
        pos = p.add("IaDTestWanConditioning", text="a person laughs", length=16, scale=1.0)
        neg = p.add("IaDTestWanConditioning", text="", length=16, scale=1.0)
        latent = p.add("EmptyHunyuanLatentVideo", width=64, height=64, length=5, batch_size=1)
        sampled = p.add("KSampler", model=model, positive=pos[0], negative=neg[0], latent_image=latent[0], seed=0, steps=2,
                        cfg=4.0, sampler_name="euler", scheduler="simple", denoise=1.0)
        out = run_latent(server, (p, p.add("SaveLatent", samples=sampled[0], filename_prefix="iad_bundle")))
        assert out.shape == (1, 16, 2, 8, 8) and bool(out.isfinite().all())
    # make gpu-world (benchmarks/gpu_world.py) runs in the same Python: its child's modules import there and
    # the shipped world loads (its recognizer and detector through onnxruntime and insightface)
    code = (f"import sys; sys.path[:0] = [{str(REPO_ROOT)!r}, {str(REPO_ROOT / 'benchmarks')!r}]; "
            "from iad.comfy_runtime import import_comfy; import_comfy(cpu=True); "
            "from bench_synth_experiment import goal_table, group_table, sample_sheet, table; import onnx; "
            "from synthworld import assets, build, experiment, step_budget; experiment.World(assets.WORLD_DIR); print('loaded')")
    done = subprocess.run([sys.executable, "-S", "-c", code], env={**env, "COMFYUI_PATH": paths["comfyui"]},
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("loaded"), done.stderr[-3000:]
