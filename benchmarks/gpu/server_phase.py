"""Phase "server": a real ComfyUI v0.28.2 server (on the GPU: no --cpu, its default dynamic-VRAM model
management) runs IaD Apply, the Lynx nodes and a context-window graph on the generated models.

Each experiment starts with every model unloaded (``POST /free``: so each one's first run without the
identity starts with no adapter on the device, whatever the experiment before it left there), queues
graphs side by side (without and with the identity, alternating, then the unpatched graph again as
the A/A control and weight 0) and reads ``IaDGpuCheckProbe``'s record of every sampling step: its time
(the device synchronised), its model calls, the peak of ``torch.cuda.max_memory_allocated`` from the
first step on (torch's allocator: without the weights dynamic VRAM holds), the device's used memory
(all allocators) and the models on the device when sampling began. A run's first step warms up and
is left out. Figures, per experiment: step time with / without (median of the steps, and the ratio),
the A/A ratio (the noise floor) and whether the A/A latents are bit-identical, both peaks with /
without, whether weight 0 is bit-identical to the graph without IaD and whether the identity changes
the latent. The record is rewritten after every run (``partial: k of n runs``), so a phase stopped at
its cap keeps what it measured.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import time
from pathlib import Path

import torch

from harness.comfy_server import ComfyServer
from harness.paths import REPO_ROOT, TEST_NODES_DIR
from harness.prompts import Prompt, saved_latent

from . import models

PROBE_NODES = Path(__file__).resolve().parent / "probe_nodes"


class CheckServer(ComfyServer):
    """The harness's server, on the GPU when there is one, with no frontend and no API nodes (the
    bundle carries neither)."""

    def __init__(self, *args, cpu: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.cpu = cpu

    def command(self) -> list[str]:
        command = [a for a in super().command() if self.cpu or a != "--cpu"]
        empty = self.base_dir / "no-frontend"
        empty.mkdir(parents=True, exist_ok=True)
        return [*command, "--front-end-root", str(empty), "--disable-api-nodes"]


def _windows(p: Prompt, info: dict, model, length: int, overlap: int):
    """Core's WanContextWindowsManual with its own defaults, our window and overlap, FreeNoise off."""
    values = {}
    for section in ("required", "optional"):
        for name, item in info["WanContextWindowsManual"]["input"].get(section, {}).items():
            options = item[1] if len(item) > 1 and isinstance(item[1], dict) else {}
            if "default" in options:
                values[name] = options["default"]
            elif isinstance(item[0], list) and item[0]:
                values[name] = item[0][0]
    values.update(context_length=length, context_overlap=overlap, freenoise=False)
    return p.add("WanContextWindowsManual", model=model, **{k: v for k, v in values.items() if k != "model"})[0]


def graph(s: "Run", unet: str, tag: str, iad: dict | None = None, lynx: dict | None = None, windows: bool = False,
          multigpu: bool = False, video=None, steps: int | None = None):
    """UNETLoader -> ModelSamplingSD3 -> [windows] -> [IaD Apply | Lynx: IaD Apply + ref-adapter] ->
    [MultiGPU_WorkUnits] -> probe -> KSampler (CFG 5) -> SaveLatent."""
    p = Prompt()
    model = p.add("UNETLoader", unet_name=unet, weight_dtype="default")[0]
    model = p.add("ModelSamplingSD3", model=model, shift=5.0)[0]
    if windows:
        model = _windows(p, s.info, model, *s.sizes.windows)
    if iad is not None:
        loader = p.add("IaDModelLoader", adapter_name=models.ADAPTER_FILE, dtype="auto")
        faces = p.add("IaDTestFaceEmbeds", seed=0, count=3)
        identity = p.add("IaDIdentity", iad_model=loader[0], face_embeds=faces[0], decoupling="auto", strength=1.0)
        model = p.add("IaDApply", model=model, iad_model=loader[0], identity=identity[0], weight=iad.get("weight", 1.0),
                      start_percent=0.0, end_percent=1.0)[0]
    if lynx is not None:
        face = p.add("IaDFaceAnalysisLoader", model_pack="antelopev2", provider="auto", det_size=s.sizes.face[2])
        irse = p.add("IaDIRSE50FaceEmbedder", face_analysis=face[0], weights=models.IRSE50_FILE)
        photo = p.add("LoadImage", image=models.FACE_IMAGE)
        embed = p.add("IaDFaceEmbed", face_analysis=irse[0], images=photo[0], policy="largest", face_index=0,
                      min_score=0.5, same_person_threshold=0.3)
        loader = p.add("IaDModelLoader", adapter_name=f"{models.LYNX_FOLDER}/resampler.safetensors", dtype="auto")
        identity = p.add("IaDIdentity", iad_model=loader[0], face_embeds=embed[0], decoupling="none", strength=1.0)
        model = p.add("IaDApply", model=model, iad_model=loader[0], identity=identity[0], weight=lynx.get("weight", 1.0),
                      start_percent=0.0, end_percent=1.0, uncond_identity="null identity (Lynx)")[0]
        if lynx.get("ref", True):
            model = p.add("IaDLynxRefAdapter", model=model, face_analysis=face[0], image=photo[0],
                          ref_text=p.add("IaDTestWanConditioning", text="image of a face", length=s.sizes.text_tokens,
                                         scale=1.0)[0],
                          vae=p.add("VAELoader", vae_name=models.VAE_FILE)[0],
                          ref_layers=f"{models.LYNX_FOLDER}/ref_layers.safetensors", ref_scale=lynx.get("ref_scale", 1.0),
                          start_percent=0.0, end_percent=1.0, dtype="bf16")[0]
    if multigpu:
        model = p.add("MultiGPU_WorkUnits", model=model, max_gpus=2)[0]
    model = p.add("IaDGpuCheckProbe", model=model, name=tag)[0]
    pos = p.add("IaDTestWanConditioning", text="a person laughs", length=s.sizes.text_tokens, scale=1.0)
    neg = p.add("IaDTestWanConditioning", text="", length=s.sizes.text_tokens, scale=1.0)
    width, height, frames = video or s.sizes.video
    latent = p.add("EmptyHunyuanLatentVideo", width=width, height=height, length=frames, batch_size=1)
    sampled = p.add("KSampler", model=model, positive=pos[0], negative=neg[0], latent_image=latent[0], seed=0,
                    steps=steps or s.sizes.steps, cfg=5.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    return p, p.add("SaveLatent", samples=sampled[0], filename_prefix=f"iad_gpu_{tag}")


class Run:
    """The server, the sizes and the log one phase shares."""

    def __init__(self, server: CheckServer, sizes: models.Sizes, log):
        self.server, self.sizes, self.log = server, sizes, log
        self.info = server.object_info()

    def run(self, tag: str, prompt_and_save, timeout: float = 300.0) -> dict:
        import json

        prompt, save = prompt_and_save
        start = time.perf_counter()
        result = self.server.run_ok(prompt, timeout=timeout)
        seconds = time.perf_counter() - start
        probe = json.loads((self.server.output_dir / "iad_gpu_probe" / f"{tag}.json").read_text())
        return {"latent": saved_latent(self.server, result, save), "probe": probe, "seconds": seconds}


def _timed(probe: dict) -> list[float]:
    return probe["steps_s"][1:] or probe["steps_s"]


def _peak(probe: dict) -> int | None:
    peaks = probe.get("peak_bytes_per_device")
    return max(peaks) if peaks else None


def _device_used(probe: dict) -> int | None:
    used = probe.get("device_used_peak_bytes_per_device")
    return max(used) if used else None


def compare(runs: dict[str, dict], base: str, patched: str, again: str | None, zero: str | None) -> dict:
    """The headline figures of one experiment from its runs (names: lists of runs of one graph); the
    runs not made yet are left out."""
    steps = {name: [t for r in rs for t in _timed(r["probe"])] for name, rs in runs.items()}
    median = {name: statistics.median(v) for name, v in steps.items() if v}
    out = {"median_step_s": median,
           "runs": {name: [round(r["seconds"], 2) for r in rs] for name, rs in runs.items()},
           "model_calls_per_step": {name: rs[0]["probe"]["model_calls_per_step"] for name, rs in runs.items()},
           "dynamic_vram": runs[base][0]["probe"].get("dynamic_vram"),
           "resident_when_steps_began": {name: rs[0]["probe"].get("resident_at_first_step") for name, rs in runs.items()}}
    if patched not in runs:
        return out
    out["ratio_with_to_without"] = median[patched] / median[base]
    if again in runs:
        out["aa_ratio"] = median[again] / median[base]
        out["aa_bit_identical"] = torch.equal(runs[base][0]["latent"], runs[again][0]["latent"])
    peaks = {name: _peak(rs[0]["probe"]) for name, rs in runs.items()}
    if peaks.get(base) is not None:
        # torch's allocator only: activations, cast buffers and the adapters (plain ModelPatchers); under
        # dynamic VRAM the diffusion model's weights are not in it (docs/gpu.md, "Memory")
        out["peak_max_memory_allocated_bytes"] = peaks
        out["peak_added_by_identity_bytes"] = peaks[patched] - peaks[base]
        out["allocated_when_steps_began"] = {name: rs[0]["probe"]["allocated_at_first_step"] for name, rs in runs.items()}
        used = {name: _device_used(rs[0]["probe"]) for name, rs in runs.items()}
        out["device_used_peak_bytes"] = used
        out["device_used_added_by_identity_bytes"] = used[patched] - used[base]
    reference, changed = runs[base][0]["latent"], runs[patched][0]["latent"]
    out["identity_changes_latent"] = not torch.equal(reference, changed)
    out["latent_max_abs_difference"] = float((changed.float() - reference.float()).abs().max())
    out["latent_max_abs"] = float(reference.float().abs().max())
    out["latent_finite"] = bool(torch.isfinite(changed).all())
    if zero in runs:
        out["weight0_bit_identical"] = torch.equal(reference, runs[zero][0]["latent"])
    return out


def unload_models(server: CheckServer) -> None:
    """Every model off the device before an experiment (ComfyUI's own ``POST /free``; the node cache is
    kept, so nothing is read from disk again). The prompt worker applies it as soon as the flag wakes it,
    when the queue is empty, then collects garbage and empties torch's cache: the pause makes sure that
    is done before the next prompt arrives (the first run's ``resident_when_steps_began`` shows it)."""
    status, body = server.request("POST", "/free", {"unload_models": True})
    if status != 200:
        raise RuntimeError(f"POST /free -> HTTP {status}: {body[:300]!r}")
    time.sleep(2.0)


def experiment(s: Run, key: str, order: list[tuple[str, object]], base: str, patched: str, again: str | None,
               zero: str | None, estimate_s: float) -> None:
    """Queue ``order`` ([(name, graph maker)]), then record the comparison under ``key``."""
    if s.log.left() < estimate_s:
        s.log.set(key, {"status": f"not run: {s.log.left():.0f} s left of the phase cap, about {estimate_s:.0f} s needed"})
        return
    runs: dict[str, list] = {}
    started = time.perf_counter()
    try:
        unload_models(s.server)
        for index, (name, make) in enumerate(order):
            tag = f"{key}-{name}-{index}".replace(" ", "_").replace("/", "_")
            runs.setdefault(name, []).append(s.run(tag, make(tag)))
            done = index + 1 == len(order)
            s.log.set(key, {"status": "ok" if done else f"partial: {index + 1} of {len(order)} runs",
                            "seconds": round(time.perf_counter() - started, 1), **compare(runs, base, patched, again, zero)})
    except Exception as exc:  # noqa: BLE001 - one experiment's failure is a figure; the others still run
        s.log.set(key, {**s.log.data["figures"].get(key, {}), "status": "failed",   # the runs made so far stay
                        "error": f"{type(exc).__name__}: {exc}"[-4000:], "server_log_tail": s.server.log_tail(3000)})


def multigpu(s: Run, smoke: bool) -> None:
    """IaD + Lynx under core's MultiGPU_WorkUnits on two devices against one device (two GPUs only; the
    CPU smoke run uses the test servers' two-CPU-device stand-in)."""
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not smoke and devices < 2:
        s.log.set("multigpu", {"status": f"skipped: one GPU (this machine has {devices})"})
        return
    if "MultiGPU_WorkUnits" not in s.info:
        s.log.set("multigpu", {"status": "failed", "error": "this ComfyUI has no MultiGPU_WorkUnits"})
        return
    video, lynx = s.sizes.multigpu_video, {"weight": 1.0, "ref_scale": 1.0}
    order = [("one device", lambda t: graph(s, models.WAN14_FILE, t, lynx=lynx, video=video, steps=2)),
             ("two devices", lambda t: graph(s, models.WAN14_FILE, t, lynx=lynx, multigpu=True, video=video, steps=2))]
    experiment(s, "multigpu", order, "one device", "two devices", None, None, 60)
    record = s.log.data["figures"]["multigpu"]
    if record.get("status") == "ok":
        # cond and uncond run apart on two devices: equal up to float differences
        record.update(devices=max(devices, 2), equal_within_1e_3_relative=record["latent_max_abs_difference"]
                      <= 1e-3 * max(record["latent_max_abs"], 1.0))
        s.log.set("multigpu", record)


def run(log, smoke: bool, work: Path) -> None:
    sizes = models.SMOKE if smoke else models.GPU
    device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    fp8 = importlib.util.find_spec("comfy_kitchen") is not None
    started = time.perf_counter()
    files = models.generate(work / "gpu-models", sizes, device, fp8)
    log.set("model_generation_s", round(time.perf_counter() - started, 1))
    env = dict(os.environ)
    if smoke:
        env["IAD_TEST_DEVICES"] = "cpu,cpu:0"   # the test nodes' two-device stand-in (multigpu on the CPU)
    server = CheckServer(Path(os.environ["COMFYUI_PATH"]), work / "server",
                         custom_nodes={"ComfyUI-IaD": REPO_ROOT, "iad_test_nodes": TEST_NODES_DIR,
                                       "iad_gpu_check_probe": PROBE_NODES},
                         models={"diffusion_models": {p.name: p for p in (files["wan13"], files["wan14"], files["wan14_fp8"]) if p},
                                 "vae": {models.VAE_FILE: files["vae"]},
                                 "iad": {models.ADAPTER_FILE: files["adapter"], models.LYNX_FOLDER: files["lynx"]},
                                 "facexlib": {models.IRSE50_FILE: files["irse50"]},
                                 "insightface": {f"models/{files['face_pack'].name}": files["face_pack"]}},
                         env=env, cpu=device == "cpu")
    log.note("server_log", str(server.log_path))
    started = time.perf_counter()
    server.start(timeout=240)
    log.note("server_pgid", server.process.pid)   # the runner ends it if this phase is killed at its cap
    try:
        log.set("server_start_s", round(time.perf_counter() - started, 1))
        shutil.copy(files["face_image"], server.input_dir / models.FACE_IMAGE)
        s = Run(server, sizes, log)
        system = server.get_json("/system_stats")
        log.set("server_devices", [d.get("name") for d in system.get("devices", [])])
        w13, w14, w14_fp8 = models.WAN13_FILE, models.WAN14_FILE, models.WAN14_FP8_FILE
        base = lambda u, **kw: lambda t: graph(s, u, t, **kw)  # noqa: E731
        experiment(s, "iad_apply_wan1.3B_bf16", [
            ("without IaD", base(w13)), ("with IaD", base(w13, iad={})), ("without IaD again", base(w13)),
            ("with IaD", base(w13, iad={})), ("without IaD", base(w13)), ("IaD weight 0", base(w13, iad={"weight": 0.0}))],
            "without IaD", "with IaD", "without IaD again", "IaD weight 0", 60)
        experiment(s, "context_windows_wan1.3B_bf16", [
            ("windows alone", base(w13, windows=True)), ("windows + IaD", base(w13, windows=True, iad={})),
            ("windows + IaD weight 0", base(w13, windows=True, iad={"weight": 0.0}))],
            "windows alone", "windows + IaD", None, "windows + IaD weight 0", 40)
        experiment(s, "lynx_wan14B_slice_bf16", [
            ("without Lynx", base(w14)), ("Lynx full (ID + ref)", base(w14, lynx={})), ("without Lynx again", base(w14)),
            ("Lynx full (ID + ref)", base(w14, lynx={})), ("Lynx ID weight 0", base(w14, lynx={"weight": 0.0, "ref": False}))],
            "without Lynx", "Lynx full (ID + ref)", "without Lynx again", "Lynx ID weight 0", 60)
        if fp8:
            experiment(s, "lynx_wan14B_slice_fp8_scaled", [
                ("without Lynx", base(w14_fp8)), ("Lynx full (ID + ref)", base(w14_fp8, lynx={})),
                ("Lynx ID weight 0", base(w14_fp8, lynx={"weight": 0.0, "ref": False}))],
                "without Lynx", "Lynx full (ID + ref)", None, "Lynx ID weight 0", 40)
        else:
            log.set("lynx_wan14B_slice_fp8_scaled", {"status": "not run: comfy-kitchen is not installed (the bundle "
                                                               "was built --without comfy-kitchen)"})
        multigpu(s, smoke)
        figures = log.data["figures"]
        headline = {}
        for key in ("iad_apply_wan1.3B_bf16", "context_windows_wan1.3B_bf16", "lynx_wan14B_slice_bf16",
                    "lynx_wan14B_slice_fp8_scaled", "multigpu"):
            f = figures.get(key, {})
            if f.get("status") != "ok":
                headline[key] = f.get("status", "not run")
                continue
            bits = [] if key == "multigpu" else [f"step ratio {f['ratio_with_to_without']:.3f}"]
            if "aa_ratio" in f:
                bits.append(f"A/A {f['aa_ratio']:.3f} (latents bit-identical {f['aa_bit_identical']})")
            if "peak_added_by_identity_bytes" in f:
                bits.append(f"torch-allocator peak +{f['peak_added_by_identity_bytes'] / 2**20:.0f} MiB, device used "
                            f"+{f['device_used_added_by_identity_bytes'] / 2**20:.0f} MiB")
            if key != "multigpu":
                bits.append(f"dynamic VRAM {'on' if f.get('dynamic_vram') else 'off'}")
            if "weight0_bit_identical" in f:
                bits.append(f"weight 0 bit-identical {f['weight0_bit_identical']}")
            if "equal_within_1e_3_relative" in f:
                bits.append(f"two devices = one within 1e-3: {f['equal_within_1e_3_relative']}")
            headline[key] = "; ".join(bits)
        log.set("headline", headline)
    finally:
        server.stop()
