"""make gpu-check (issue 34; docs/gpu.md), tested without a GPU: without a GPU the command says so in
one line and exits 0 within seconds; the report and the wheel-tag rules; what make gpu-twin installs. The
CPU smoke run and the bundle: test_gpu_check_bundle.py (collected in the v0.28.2 lane only).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.paths import REPO_ROOT

SCRIPTS = REPO_ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))
import gpu_bundle  # noqa: E402
import gpu_twin  # noqa: E402
import unpacked_wheel  # noqa: E402

sys.path.pop(0)
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from gpu import report  # noqa: E402
from gpu.server_phase import compare  # noqa: E402
from gpu.train_phases import _run_group, parse_bench_runs, parse_bench_train  # noqa: E402

sys.path.pop(0)


def _clean_env() -> dict:
    """The environment of a shell, not of this lane: the check finds its ComfyUI itself."""
    return {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "IAD_LANE", "IAD_CACHE_DIR", "PYTHONPATH")}


def test_without_a_gpu_the_check_says_so_in_one_line_and_exits_0():
    for command in ([sys.executable, "benchmarks/gpu_check.py"], ["make", "-s", "gpu-check"]):
        start = time.monotonic()
        done = subprocess.run(command, cwd=REPO_ROOT, env=_clean_env(), capture_output=True, text=True, timeout=60)
        seconds = time.monotonic() - start
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("\n") == 1 and done.stdout.startswith("gpu-check: "), done.stdout
        assert "nothing to measure here" in done.stdout and not done.stderr.strip(), done.stderr
        assert seconds < 15, seconds


def test_bench_train_table_and_report_rendering():
    table = """configuration                 samples/s           range  vs first  significant peak CUDA MB data ms/step    loss start -> end
bf16, checkpointing off            4.45    4.30-4.61        1.00x           no         8225         0.41    3.0523 -> 1.8969
bf16, checkpointing on             2.48    2.31-2.65        0.56x          yes         6400         0.40       nan -> nan"""
    rows = parse_bench_train(table)
    assert [r["configuration"] for r in rows] == ["bf16, checkpointing off", "bf16, checkpointing on"]
    assert rows[0]["samples_per_s"] == 4.45 and rows[0]["range"] == [4.30, 4.61] and rows[1]["significant"]
    assert rows[0]["peak_memory_mb"] == 8225 and rows[0]["loss_end"] == 1.8969 and rows[1]["loss_end"] != rows[1]["loss_end"]
    assert rows[0]["data_ms_per_step"] == 0.41
    text = report.markdown({"mode": "gpu", "device": "NVIDIA H100", "phases": {
        "server": {"status": "ok", "seconds": 10, "cap_s": 200, "figures": {"headline": {"x": "step ratio 1.01"}}},
        "train": {"status": "failed", "error": "Traceback\nValueError: boom", "seconds": 1, "cap_s": 100}}})
    assert "| server | ok | 10 (200) |" in text and "| train | failed: ValueError: boom |" in text
    assert "| x | step ratio 1.01 |" in text


def test_bench_train_takes_a_latent_shape_and_batch_and_refuses_a_bad_one():
    """bench_train.py --latent / --batch (on the GPU, --latent 16,9,60,104 is D33's 832x480x33): the run trains
    on that shape, its table says which, and gpu-check's parser reads its rows; --compare data_in_memory trains
    the same losses either way."""
    bench = [sys.executable, "benchmarks/bench_train.py", "--steps", "3", "--warmup", "1", "--rounds", "1"]
    done = subprocess.run([*bench, "--latent", "16,2,4,6", "--batch", "1"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "48x32x5 frames (latent 16x2x4x6), batch 1, CPU" in done.stdout, done.stdout[-2000:]
    assert len(parse_bench_train(done.stdout)) == 4
    runs = parse_bench_runs(done.stdout)   # one line per run as it ends: what a cut run keeps
    assert [(r["configuration"], r["round"]) for r in runs] == [(r["configuration"], 0) for r in parse_bench_train(done.stdout)]
    assert all(r["samples_per_s"] > 0 and r["loss_first"] == r["loss_first"] for r in runs)
    for bad in ("16,2,4", "4,2,4,4", "16,2,3,4", "16,x,4,4"):
        refused = subprocess.run([*bench, "--latent", bad], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "--latent must be C,T,H,W with C = 16" in refused.stderr, refused.stderr
    refused = subprocess.run([*bench, "--batch", "0"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--batch must be at least 1" in refused.stderr, refused.stderr
    # --compare data_in_memory: the same training with its tensors read per batch or held in memory
    done = subprocess.run([*bench, "--batch", "3", "--compare", "data_in_memory"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shards, memory = parse_bench_train(done.stdout)
    assert (shards["configuration"], memory["configuration"]) == ("read from the shards", "held in memory")
    assert (shards["loss_start"], shards["loss_end"]) == (memory["loss_start"], memory["loss_end"])
    assert shards["data_ms_per_step"] > 0 and memory["data_ms_per_step"] > 0


def test_a_stopped_subprocess_takes_its_children_along_and_keeps_its_output(tmp_path):
    """bench_train.py and torchrun start children that hold the GPU: at the phase's deadline the whole
    process group goes, and the lines printed before it are kept (the runs that ended)."""
    pid_file = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time; child = subprocess.Popen(['sleep', '60']); open({str(pid_file)!r}, 'w')"
              f".write(str(child.pid)); print('RUN {{\"configuration\": \"a\", \"round\": 0}}', flush=True); time.sleep(60)")
    start = time.monotonic()
    done = _run_group([sys.executable, "-c", script], None, timeout=3)
    assert done.timed_out and time.monotonic() - start < 20
    assert parse_bench_runs(done.stdout) == [{"configuration": "a", "round": 0}]
    child = int(pid_file.read_text())
    for _ in range(50):   # the grandchild was killed with the group (reaped by init)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the child outlived its group")
    done = _run_group([sys.executable, "-c", "print('fine')"], None, timeout=30)
    assert not done.timed_out and done.returncode == 0 and done.stdout.strip() == "fine"


def _probe(steps, calls=3, peak=None, used=None, resident=(), dynamic=True):
    return {"steps_s": steps, "model_calls_per_step": [1] * calls, "peak_bytes_per_device": peak,
            "allocated_at_first_step": 0 if peak else None, "device_used_peak_bytes_per_device": used,
            "resident_at_first_step": [{"model": m, "device": "cuda:0", "loaded_bytes": b} for m, b in resident],
            "dynamic_vram": dynamic}


def test_an_experiments_figures_from_its_runs_as_they_come():
    """gpu-check's server phase: the figures of one experiment, rewritten after each run (a cut experiment
    keeps what it measured), with both memories (torch's allocator, without the weights dynamic VRAM
    holds; the device's used memory, with them) and the A/A control of bit identity."""
    import torch

    latent = torch.zeros(1, 16, 2, 8, 8)
    wan = ("WAN21", 2_800_000_000)

    def run(steps, peak, used, resident, value=0.0):
        return {"latent": latent + value, "seconds": 1.0, "probe": _probe(steps, peak=[peak], used=[used], resident=resident)}

    runs = {"without": [run([9.0, 1.0, 1.0], 100, 3000, [wan])]}
    partial = compare(runs, "without", "with", "again", "zero")
    assert "ratio_with_to_without" not in partial and partial["dynamic_vram"] is True
    assert partial["resident_when_steps_began"]["without"][0]["model"] == "WAN21"
    runs["with"] = [run([9.0, 1.2, 1.2], 160, 3400, [wan, ("IdentityAdapter", 300)], value=0.5)]
    runs["again"] = [run([9.0, 1.1, 1.1], 100, 3000, [wan])]
    out = compare(runs, "without", "with", "again", "zero")
    assert abs(out["ratio_with_to_without"] - 1.2) < 1e-9 and abs(out["aa_ratio"] - 1.1) < 1e-9   # first step left out
    assert out["aa_bit_identical"] is True and out["identity_changes_latent"] is True and "weight0_bit_identical" not in out
    assert out["peak_added_by_identity_bytes"] == 60 and out["device_used_added_by_identity_bytes"] == 400
    runs["zero"] = [run([9.0, 1.0, 1.0], 100, 3000, [wan], value=1e-7)]
    assert compare(runs, "without", "with", "again", "zero")["weight0_bit_identical"] is False
    runs["again"] = [run([9.0, 1.0, 1.0], 100, 3000, [wan], value=1e-7)]
    assert compare(runs, "without", "with", "again", "zero")["aa_bit_identical"] is False
    cpu = {name: [{**r[0], "probe": _probe(r[0]["probe"]["steps_s"], dynamic=False)}] for name, r in runs.items()}
    out = compare(cpu, "without", "with", "again", "zero")     # the CPU smoke run: no CUDA memory figures
    assert "peak_added_by_identity_bytes" not in out and "device_used_peak_bytes" not in out and out["dynamic_vram"] is False


def test_wheel_tags_are_judged_for_the_gpu_machine():
    fits = gpu_bundle.wheel_fits
    assert fits("av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl", "3.12") is None
    assert fits("sqlalchemy-2.1.9-py3-none-any.whl", "3.12") is None
    assert fits("blake3-1.0.11-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "3.12") is None
    assert "not for CPython 3.12" in fits("blake3-1.0.11-cp311-cp311-manylinux_2_17_x86_64.whl", "3.12")
    assert "glibc 2.34" in fits("x-1-cp312-cp312-manylinux_2_34_x86_64.whl", "3.12")
    assert "not a manylinux x86_64" in fits("x-1-cp312-cp312-manylinux_2_28_aarch64.whl", "3.12")
    assert "not a manylinux x86_64" in fits("x-1-cp312-cp312-win_amd64.whl", "3.12")


def _record_row(folder, name: str) -> list[str]:
    data = (folder / name).read_bytes()   # PEP 427's digest, written out here rather than by the code under test
    return [name, "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode(), str(len(data))]


def test_the_bundle_strips_debug_sections_and_the_stripped_library_still_loads(tmp_path):
    """av's Cython modules carry 25 MB of DWARF: the bundle strips it (5 MiB of the 64) and rewrites the
    wheel's RECORD, which the GPU machine checks every file against. markupsafe's speed-up module here is
    built the same way (with debug information): stripped, it still imports and escapes."""
    import markupsafe._speedups as speedups

    source = Path(speedups.__file__)
    assert unpacked_wheel.has_debug_sections(source), "the stand-in must carry debug sections"
    folder = tmp_path / "wheel"
    (folder / "markupsafe").mkdir(parents=True)
    (folder / "x-1.dist-info").mkdir()
    library = f"markupsafe/{source.name}"
    shutil.copy(source, folder / library)
    (folder / "markupsafe/__init__.py").write_text("")
    names = [library, "markupsafe/__init__.py", "x-1.dist-info/RECORD"]
    with open(folder / names[-1], "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([_record_row(folder, n) for n in names[:2]] + [[names[-1], "", ""]])
    before = (folder / library).read_bytes()

    stripped = unpacked_wheel.strip_debug(folder, names)
    assert stripped["files"] == 1 and stripped["bytes_removed"] == len(before) - (folder / library).stat().st_size > 0
    assert not unpacked_wheel.has_debug_sections(folder / library)
    assert not unpacked_wheel.has_debug_sections(folder / "markupsafe/__init__.py")
    unpacked_wheel.check_record(folder)   # RECORD matches the stripped file, as restore checks it
    assert unpacked_wheel.strip_debug(folder, names) == {"files": 0, "bytes_removed": 0}   # nothing left to strip
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('markupsafe._speedups', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print(m._escape_inner('<a & b>'))")
    done = subprocess.run([sys.executable, "-c", code, str(folder / library)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "&lt;a &amp; b&gt;", done.stderr

    (folder / library).write_bytes(before[:-1] + bytes([before[-1] ^ 1]))   # a damaged file is still caught
    with pytest.raises(SystemExit, match="does not match its RECORD"):
        unpacked_wheel.check_record(folder)


def test_the_twin_installs_the_image_packages_that_comfyui_the_pack_and_the_bundle_require(tmp_path):
    """make gpu-twin: the requirements that the GPU image meets (markers as on the GPU machine, extras and
    bundled packages left out, opencv-python met by the image's headless build), at the image's versions."""
    comfyui, site = tmp_path / "ComfyUI", tmp_path / "site"
    comfyui.mkdir()
    (comfyui / "requirements.txt").write_text("comfyui-frontend-package==1.45.21\ntorch\nav>=16.0.0\n"
                                              "numpy>=1.25.0\n#non essential dependencies:\nkornia>=0.7.1\n")
    for dist, requires in (("av-18.1.0", []), ("insightface-2.1", ["numpy", "opencv-python", "scikit-image",
                                                                   "PySide6-Essentials>=6.5; extra == \"gui\""]),
                           ("pydantic-2.14.4", ["pydantic-core==2.50.5", "typing-extensions>=4.14.1",
                                                "tomli; python_version < \"3.11\""])):
        (site / f"{dist}.dist-info").mkdir(parents=True)
        (site / f"{dist}.dist-info" / "METADATA").write_text(
            f"Name: {dist.split('-')[0]}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires))
    needs = gpu_twin.image_needs(comfyui, site)
    assert needs["install"] == ["einops", "numpy", "opencv-python-headless", "pytest", "safetensors", "scikit-image",
                                "torch", "typing-extensions"]
    # pydantic-core: in neither the image nor this made-up bundle, so listed, never installed in the twin
    assert needs["neither_image_nor_bundle"] == ["comfyui-frontend-package", "kornia", "onnxruntime-gpu",
                                                 "pydantic-core"]
    assert set(gpu_bundle.IMAGE_VERSIONS) <= gpu_bundle.GPU_IMAGE_PACKAGES
    assert gpu_bundle.IMAGE_VERSIONS["torch"] == "2.11.0"


def test_the_twin_wants_the_gpu_machines_python_and_the_bundle_flag_goes_with_the_smoke_run():
    with pytest.raises(SystemExit, match="not a CPython 3.12"):
        gpu_twin.find_python(sys.executable if sys.version_info[:2] != (3, 12) else "/bin/true")
    with pytest.raises(SystemExit, match="no such program"):
        gpu_twin.find_python("/nonexistent/python3.12")
    for script in ("gpu_check.py", "gpu_world.py"):
        done = subprocess.run([sys.executable, f"benchmarks/{script}", "--bundle"], cwd=REPO_ROOT, env=_clean_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "--bundle goes with --cpu-smoke" in done.stderr, (script, done.stderr[-500:])
