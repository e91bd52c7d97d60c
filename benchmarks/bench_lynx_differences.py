"""What the remaining differences between the pack's Lynx and bytedance/lynx as released change,
measured side by side in one run on the CPU (issue 34; docs/lynx.md, "Remaining differences").

    .venv/bin/python scripts/lanes.py run v0.28.2 -- .venv/bin/python benchmarks/bench_lynx_differences.py

Optional: ``--vae path/to/wan_2.1_vae.safetensors`` (the real Wan 2.1 VAE: its posterior std is what
section 1 is about; by default the synthetic world's Wan VAE, a real ComfyUI ``WanVAE`` trained on the
world's clips), ``--diffusers DIR`` (a folder where ``pip install --target DIR diffusers`` put
diffusers: section 3 then also runs Lynx's own sampler loop with diffusers' ``UniPCMultistepScheduler``).

A tiny Lynx-layout Wan (ComfyUI's ``WanModel``, 4 blocks of width 256, 2 heads of 128 as in the 14B)
with random Lynx full ID weights (resampler + ip layers, real key names) and random ``ref_layers``,
patched by the pack's own code (IaD Apply with the null identity, IaD Lynx Ref Adapter's entry, IaD
Lynx Guider). Random weights: the numbers say how large each difference is against the effects it
competes with *in this model*; what they do to a real video needs the real weights and a GPU.

1. VAE posterior (bytedance/lynx ``modules/full/lynx_pipeline.py::encode_reference_images``:
   ``vae.encode(x).latent_dist.sample(generator)``, generator seeded ``seed + 1`` in
   ``modules/full/lynx_infer.py``; the pack: ComfyUI's VAE Encode, the posterior mean). The
   posterior std is ``exp(0.5 * clamp(log_var, -30, 20))`` (diffusers' ``DiagonalGaussianDistribution``),
   ``log_var`` the second half of ComfyUI's ``WanVAE.conv1`` output, read here with a forward hook.
2. Guidance: two-pass CFG (cfg 5, null identity in the uncond rows) against Lynx's three passes
   (``guidance_scale`` 5, ``guidance_scale_i`` 2; IaD Lynx Guider), the guided denoised output at a
   few sigmas. Their difference is ``(g_i - g) * (neg_with_identity - uncond)``: zero at ``g_i = g``.
3. Schedule and solver: Lynx's 50 UniPC sigmas (diffusers ``scheduling_unipc_multistep.py``,
   ``use_flow_sigmas``: ``1 - linspace(1, 1/1000, N + 1)``, shifted, flipped, last dropped, final 0;
   the transformer gets ``int64(sigma * 1000)``) against ComfyUI's ``simple`` at shift 3 (the Lynx
   workflows' BasicScheduler) and KSampler's ``uni_pc`` (51 sigmas, penultimate dropped). ComfyUI's
   ``uni_pc`` is UniPC's bh1 variant, ``uni_pc_bh2`` (the workflows') diffusers' default ``solver_type``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import apply_fixtures as af  # noqa: E402
from harness import insightface_pack as ip  # noqa: E402
from harness import tiny_models as tiny  # noqa: E402
from harness.lynx_files import LynxSpec, ref_tensors, write_lynx  # noqa: E402

SYNTH_VAE = REPO / "synthworld" / "assets" / "world" / "iad-synthworld-wan2.1-vae.safetensors"
WAN = tiny.WanSpec("bench-wan-lynx-4x256.safetensors", dim=256, ffn_dim=512, num_layers=4, seed=9)
ID_SPEC = LynxSpec("full", output=256, model_dim=256, entries=4, registers=3, seed=11)
CFG, CFG_IDENTITY = 5.0, 2.0          # bytedance/lynx infer.py defaults (full)
LYNX_SEED = 42                        # infer.py --seed; the reference posterior draw uses seed + 1


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


@dataclass
class World:
    model: object           # the unpatched ComfyUI Wan ModelPatcher
    vae: object
    vae_name: str
    id_model: object        # the model with Lynx full's ID adapter (IaD Apply, null identity)
    ref_patcher: object     # the ref layers' ModelPatcher
    context: torch.Tensor   # the reference text ("image of a face"), a stand-in T5 output
    positive: list
    negative: list
    latent_shape: tuple


def build(vae_path: str | None, tmp: Path, frames: int = 3, size: int = 16) -> World:
    af.pack()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import comfy.sd
    import comfy.utils

    lynx = af.module("iad.lynx")
    lynx_ref = af.module("iad.lynx_ref")
    patching = af.module("iad.patching")
    nodes = af.module("nodes.iad_nodes")
    ft = af.module("iad.face_types")

    model = comfy.sd.load_diffusion_model_state_dict(tiny.build_wan_state_dict(WAN))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():   # distinct q/k norm scales, as in tests/test_lynx_ref.py
        for block in model.model.diffusion_model.blocks:
            for attn in (block.self_attn, block.cross_attn):
                for norm in (attn.norm_q, attn.norm_k):
                    norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=g))
    path = Path(vae_path) if vae_path else (SYNTH_VAE if SYNTH_VAE.is_file() else tiny.ensure(tiny.WAN21_VAE))
    sd, metadata = comfy.utils.load_torch_file(str(path), return_metadata=True)
    vae = comfy.sd.VAE(sd=sd, metadata=metadata)

    adapter = lynx.load_adapter_or_lynx(write_lynx(tmp / "lynx_full", ID_SPEC))
    iad_model = patching.IaDModel.wrap(adapter, name="lynx_full")
    z = torch.nn.functional.normalize(torch.randn(512, generator=torch.Generator().manual_seed(4)), dim=0)
    face = ft.DetectedFace(0, np.zeros(4, np.float32), np.zeros((5, 2), np.float32), 0.99, z)
    identity = nodes.IaDIdentity.execute(iad_model, ft.FaceEmbeds([face], embedder="facexlib/irse50"), "none", 1.0).result[0]
    id_model = nodes.IaDApply.execute(model, iad_model, identity, 1.0, 0.0, 1.0, "null identity (Lynx)").result[0]

    layers = lynx_ref.LynxRefLayers(lynx_ref.RefLayout(WAN.num_layers, WAN.dim, "F32"), operations=comfy.ops.manual_cast)
    layers.load_state_dict(ref_tensors(WAN.num_layers, WAN.dim))
    ref_patcher = comfy.model_patcher.ModelPatcher(layers, load_device=mm.get_torch_device(),
                                                   offload_device=mm.unet_offload_device())
    text = lambda seed, n: torch.randn(1, n, 4096, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    return World(model, vae, path.name, id_model, ref_patcher, text(7, 6), [[text(1, 12), {}]], [[text(2, 12), {}]],
                 (1, 16, frames, size, size))


# --- 1. the VAE posterior ------------------------------------------------------------------------

def posterior(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log_var) of the Wan VAE posterior of ``pixels`` ([1, H, W, 3] in [0, 1]): ComfyUI's
    VAE Encode returns the mean; log_var is the other half of ``conv1``'s output."""
    seen = []
    hook = vae.first_stage_model.conv1.register_forward_hook(lambda mod, args, out: seen.append(out.detach()))
    try:
        mean = vae.encode(pixels)
    finally:
        hook.remove()
    mu, log_var = seen[-1].float().cpu().chunk(2, dim=1)
    torch.testing.assert_close(mu, mean.float().cpu(), atol=1e-4, rtol=1e-4)   # the hook saw what VAE Encode returned
    return mean.float().cpu(), log_var


def posterior_sample(mean: torch.Tensor, log_var: torch.Tensor, seed: int, std_scale: float = 1.0) -> torch.Tensor:
    """One draw as diffusers' ``DiagonalGaussianDistribution.sample(generator)``: mean + std * N(0, 1),
    std = exp(0.5 * clamp(log_var, -30, 20)), the noise from a CPU generator seeded ``seed``
    (fp32 here; Lynx draws it at the VAE's dtype, bf16). ``std_scale`` 0 gives the mean exactly."""
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed))
    return mean + std_scale * torch.exp(0.5 * log_var.clamp(-30.0, 20.0)) * eps


def face_pixels(person: int) -> torch.Tensor:
    """A generated 256 px face photo (the size of Lynx's reference crop), [1, 256, 256, 3] in [0, 1]."""
    return torch.from_numpy(ip.face_image(256, 80, person=person)).float().div(255)[None]


def reference_kv(world: World, latent: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Lynx's reference pass written out: the unpatched model at timestep 0 on ``latent`` (processed)
    with the reference text, each block's self-attention input -> (norm_k(to_k_ref f), to_v_ref f)."""
    import comfy.model_management as mm

    mm.unload_all_models()
    dm = world.model.model.diffusion_model
    feats = {}
    hooks = [b.self_attn.register_forward_pre_hook(lambda mod, args, i=i: feats.__setitem__(i, args[0]))
             for i, b in enumerate(dm.blocks)]
    try:
        with torch.no_grad():
            dm(latent, torch.zeros(1), world.context)
    finally:
        for h in hooks:
            h.remove()
    layers = world.ref_patcher.model
    with torch.no_grad():
        return {i: layers.block_kv(i, f, dm.blocks[i].self_attn.norm_k) for i, f in feats.items()}


def kv_change(a: dict, b: dict) -> float:
    """Mean over blocks of ||K_a - K_b|| / ||K_b|| and ||V_a - V_b|| / ||V_b|| together."""
    return float(np.mean([rel(torch.cat([a[i][0], a[i][1]], -1), torch.cat([b[i][0], b[i][1]], -1)) for i in b]))


def ref_model(world: World, image_latent: torch.Tensor, zero_latent: torch.Tensor):
    """The ID model with IaD Lynx Ref Adapter's patch on the given reference latents (processed)."""
    patching = af.module("iad.patching")
    wan_ref = af.module("iad.patching.wan_ref")
    entry = wan_ref.ReferenceEntry(world.ref_patcher, {wan_ref.IMAGE: image_latent, wan_ref.ZERO: zero_latent},
                                   world.context, 1.0, 0.0, 1.0, patching.step_gate(world.id_model, 0.0, 1.0))
    return wan_ref.apply_reference(world.id_model, entry, WAN.num_layers)


def denoised(world: World, model, sigma: float, three_pass: bool = True, cfg: float = CFG,
             cfg_identity: float = CFG_IDENTITY, seed: int = 0) -> torch.Tensor:
    """The guided denoised latent at ``sigma`` (one Euler step from sigma to 0 lands on it), in the
    model's processed latent space."""
    import comfy.samplers

    noise = torch.randn(world.latent_shape, generator=torch.Generator().manual_seed(seed))
    if three_pass:
        guider = af.module("nodes.lynx_nodes").IaDLynxGuider.execute(model, world.positive, world.negative, cfg,
                                                                     cfg_identity).result[0]
    else:
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(world.positive, world.negative)
        guider.set_cfg(cfg)
    out = guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"),
                        torch.tensor([sigma, 0.0]), disable_pbar=True, seed=seed)
    return world.model.model.process_latent_in(out).float()


def vae_section(world: World, sigmas: list[float], sweep: list[float]) -> dict:
    process = world.model.model.process_latent_in
    zero_px = torch.full((1, 256, 256, 3), 0.5)
    post = {name: posterior(world.vae, px) for name, px in (("A", face_pixels(1)), ("B", face_pixels(2)), ("zero", zero_px))}
    mean = {k: process(m) for k, (m, _) in post.items()}
    # Lynx: the face and the zero image are both drawn with a generator seeded seed + 1 (the same noise)
    sample = {k: process(posterior_sample(m, lv, LYNX_SEED + 1)) for k, (m, lv) in post.items()}
    forced = process(posterior_sample(*post["A"], LYNX_SEED + 1, std_scale=0.0))
    latents_std = float(((sample["A"] - mean["A"]).std()))
    kv = {k: reference_kv(world, lat) for k, lat in (("mean", mean["A"]), ("sample", sample["A"]), ("B", mean["B"]))}
    out = {"vae": world.vae_name,
           "posterior_std_raw": float(torch.exp(0.5 * post["A"][1].clamp(-30, 20)).mean()),
           "log_var_mean": float(post["A"][1].mean()),
           "posterior_std_processed": latents_std,
           "latent_change": rel(sample["A"], mean["A"]), "latent_change_other_face": rel(mean["B"], mean["A"]),
           "latent_change_std_zero": rel(forced, mean["A"]),
           "kv_change": kv_change(kv["sample"], kv["mean"]), "kv_change_other_face": kv_change(kv["B"], kv["mean"]),
           "steps": []}
    models = {"mean": ref_model(world, mean["A"], mean["zero"]), "sample": ref_model(world, sample["A"], sample["zero"]),
              "B": ref_model(world, mean["B"], mean["zero"])}
    eps = torch.randn(mean["A"].shape, generator=torch.Generator().manual_seed(LYNX_SEED + 1))
    for sigma in sigmas:
        d = {k: denoised(world, m, sigma) for k, m in models.items()}
        d["no ref"] = denoised(world, world.id_model, sigma)
        row = {"sigma": sigma, "sample_vs_mean": rel(d["sample"], d["mean"]), "other_face": rel(d["B"], d["mean"]),
               "ref_effect": rel(d["no ref"], d["mean"]), "sweep": {}}
        for s in sweep:   # a posterior std of s in processed latent units (the real VAE's is unknown here)
            m = ref_model(world, mean["A"] + s * eps, mean["zero"] + s * eps)
            row["sweep"][s] = rel(denoised(world, m, sigma), d["mean"])
        out["steps"].append(row)
    return out


# --- 2. two-pass against three-pass guidance ------------------------------------------------------

def guidance_section(world: World, sigmas: list[float]) -> list[dict]:
    import comfy.model_management as mm

    mm.unload_all_models()
    process = world.model.model.process_latent_in
    zero = torch.full((1, 256, 256, 3), 0.5)
    model = ref_model(world, process(world.vae.encode(face_pixels(1)).float().cpu()),
                      process(world.vae.encode(zero).float().cpu()))
    rows = []
    for sigma in sigmas:
        three = denoised(world, model, sigma, three_pass=True)
        two = denoised(world, model, sigma, three_pass=False)
        equal_scales = denoised(world, model, sigma, three_pass=True, cfg_identity=CFG)
        no_id = denoised(world, world.model, sigma, three_pass=False)   # plain CFG without Lynx: the scale of Lynx's effect
        rows.append({"sigma": sigma, "two_vs_three": rel(two, three), "lynx_effect": rel(no_id, three),
                     "three_at_equal_scales_vs_two": rel(equal_scales, two),
                     "output_rms": float(three.pow(2).mean().sqrt())})
    return rows


# --- 3. schedule, timesteps and solver -------------------------------------------------------------

def lynx_sigmas(steps: int, shift: float) -> torch.Tensor:
    """diffusers UniPCMultistepScheduler.set_timesteps with use_flow_sigmas, final_sigmas_type "zero"."""
    s = 1.0 - np.linspace(1.0, 1.0 / 1000, steps + 1)
    s = np.flip(shift * s / (1 + (shift - 1) * s))[:-1]
    return torch.from_numpy(np.append(s, 0.0).astype(np.float32))


def pack_sigmas(model, steps: int, ksampler_uni_pc: bool) -> torch.Tensor:
    import comfy.samplers

    ms = model.get_model_object("model_sampling")
    if not ksampler_uni_pc:
        return comfy.samplers.calculate_sigmas(ms, "simple", steps).float()
    s = comfy.samplers.calculate_sigmas(ms, "simple", steps + 1).float()   # KSampler: uni_pc drops the penultimate
    return torch.cat([s[:-2], s[-1:]])


def shifted(model, shift: float):
    import comfy_extras.nodes_model_advanced as adv

    return adv.ModelSamplingSD3().patch(model, shift)[0]


def timestep_truncation(world: World, model, sigmas: torch.Tensor) -> float:
    """The largest relative change of the model's velocity when it gets int(1000 sigma) instead of 1000 sigma."""
    import comfy.model_management as mm

    mm.load_models_gpu([model])
    x = torch.randn(world.latent_shape, generator=torch.Generator().manual_seed(5))
    cond = world.positive[0][0]
    worst = 0.0
    with torch.no_grad():
        for s in sigmas[:-1].tolist():
            t = np.floor(s * 1000) / 1000
            v = [(x - model.model.apply_model(x, torch.tensor([q]), c_crossattn=cond).float()) / q for q in (s, t)]
            worst = max(worst, rel(v[1], v[0]))
    return worst


def lynx_unipc_sampler(diffusers_scheduler, shift: float, steps: int, truncate: bool):
    """A ComfyUI sampler that runs Lynx's loop: diffusers' UniPC (flow sigmas, ``shift``) stepping the
    velocity of the guided model, the model called at int64(1000 sigma) when ``truncate``."""
    import comfy.samplers

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        sched = diffusers_scheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                    flow_shift=shift)
        sched.set_timesteps(steps)
        x = x / float(sigmas[0])   # Lynx starts from the unscaled noise
        for i, t in enumerate(sched.timesteps):
            s_model = float(t) / 1000 if truncate else float(sched.sigmas[i])
            den = model(x, torch.full((x.shape[0],), s_model), **(extra_args or {}))
            x = sched.step((x - den) / s_model, t, x, return_dict=False)[0]
        return x

    return comfy.samplers.KSAMPLER(sample)


def schedule_section(world: World, steps: int, diffusers_dir: str | None) -> dict:
    import comfy.sample
    import comfy.samplers

    ms3 = shifted(world.model, 3.0)
    lynx = lynx_sigmas(steps, 3.0)
    basic, ksampler = pack_sigmas(ms3, steps, False), pack_sigmas(ms3, steps, True)
    out = {"steps": steps, "lynx_first": float(lynx[0]), "basic_first": float(basic[0]),
           "basic_max_dsigma": float((basic - lynx).abs().max()), "ksampler_max_dsigma": float((ksampler - lynx).abs().max()),
           "max_dt": float((lynx[:-1] * 1000 - torch.floor(lynx[:-1] * 1000)).max()),
           "truncation_velocity_change": timestep_truncation(world, ms3, lynx)}
    noise = comfy.sample.prepare_noise(torch.zeros(world.latent_shape), LYNX_SEED)
    out["same_initial_noise"] = bool(torch.equal(noise, torch.randn(world.latent_shape, generator=torch.Generator().manual_seed(LYNX_SEED))))
    process = world.model.model.process_latent_in
    model = ref_model(shifted_world(world, ms3), process(world.vae.encode(face_pixels(1)).float().cpu()),
                      process(world.vae.encode(torch.full((1, 256, 256, 3), 0.5)).float().cpu()))

    def run(sampler, sigmas, seed=LYNX_SEED):
        guider = af.module("nodes.lynx_nodes").IaDLynxGuider.execute(model, world.positive, world.negative, CFG,
                                                                     CFG_IDENTITY).result[0]
        n = comfy.sample.prepare_noise(torch.zeros(world.latent_shape), seed)
        return process(guider.sample(n, torch.zeros_like(n), sampler, sigmas, disable_pbar=True, seed=seed)).float()

    uni_pc, bh2 = comfy.samplers.sampler_object("uni_pc"), comfy.samplers.sampler_object("uni_pc_bh2")
    ends = {"uni_pc_bh2, simple (workflows)": run(bh2, basic),      # the Lynx-as-released workflows' sampling
            "uni_pc, simple": run(uni_pc, basic),
            "uni_pc, KSampler's sigmas": run(uni_pc, ksampler),      # KSampler uni_pc: the penultimate sigma dropped
            "uni_pc, Lynx's sigmas": run(uni_pc, lynx),
            "uni_pc_bh2, Lynx's sigmas": run(bh2, lynx),
            "workflows, another seed": run(bh2, basic, seed=LYNX_SEED + 7)}
    if diffusers_dir:
        sys.path.insert(0, diffusers_dir)
        from diffusers import UniPCMultistepScheduler

        ends["Lynx (diffusers UniPC)"] = run(lynx_unipc_sampler(UniPCMultistepScheduler, 3.0, steps, True), lynx)
        ends["Lynx, float timesteps"] = run(lynx_unipc_sampler(UniPCMultistepScheduler, 3.0, steps, False), lynx)
    ref = "Lynx (diffusers UniPC)" if diffusers_dir else "uni_pc_bh2, simple (workflows)"
    out["reference"] = ref
    out["ends"] = {k: rel(v, ends[ref]) for k, v in ends.items()}
    return out


def shifted_world(world: World, model) -> World:
    """``world`` whose ID model samples at shift 3 (the ref patch then goes on top of it, as in the workflow:
    ModelSamplingSD3's clone keeps IaD Apply's patches)."""
    import copy

    w = copy.copy(world)
    w.id_model = shifted(world.id_model, 3.0)
    return w


def report(vae: dict, guidance: list[dict], schedule: dict) -> None:
    print(f"\n1. Reference latent: VAE posterior sample (Lynx) vs mean (the pack); VAE {vae['vae']}")
    print(f"   posterior std: {vae['posterior_std_raw']:.3e} raw (mean log_var {vae['log_var_mean']:+.3f}), "
          f"{vae['posterior_std_processed']:.3e} in processed latent units")
    print(f"   {'':38s} {'sample vs mean':>15s} {'face B vs face A':>17s}")
    print(f"   {'latent, relative':38s} {vae['latent_change']:15.3e} {vae['latent_change_other_face']:17.3e}")
    print(f"   {'reference K/V, relative (mean/block)':38s} {vae['kv_change']:15.3e} {vae['kv_change_other_face']:17.3e}")
    print(f"   posterior std forced to 0: latent change {vae['latent_change_std_zero']:.1e}")
    sweep = list(vae["steps"][0]["sweep"]) if vae["steps"] else []
    print(f"   denoised (ID + ref, three-pass), relative to the mean's: {'sigma':>5s} {'sample':>9s} {'face B':>9s} "
          f"{'no ref':>9s} " + " ".join(f"{'std ' + format(s, 'g'):>9s}" for s in sweep))
    for r in vae["steps"]:
        print(f"   {'':56s} {r['sigma']:5.2f} {r['sample_vs_mean']:9.2e} {r['other_face']:9.2e} {r['ref_effect']:9.2e} "
              + " ".join(f"{r['sweep'][s]:9.2e}" for s in sweep))
    print(f"\n2. Guidance: two-pass cfg {CFG:g} (null identity uncond) vs three-pass {CFG:g}/{CFG_IDENTITY:g}, denoised output")
    print(f"   {'sigma':>5s} {'|2-pass - 3-pass| / |3-pass|':>29s} {'|no Lynx - 3-pass| / |3-pass|':>30s} {'3-pass at g_i = g vs 2-pass':>28s}")
    for r in guidance:
        print(f"   {r['sigma']:5.2f} {r['two_vs_three']:29.3e} {r['lynx_effect']:30.3e} {r['three_at_equal_scales_vs_two']:28.1e}")
    s = schedule
    print(f"\n3. Schedule ({s['steps']} steps, shift 3): Lynx first sigma {s['lynx_first']:.5f}, pack's {s['basic_first']:.5f}; "
          f"max |dsigma| {s['basic_max_dsigma']:.2e} (BasicScheduler simple, the workflows), {s['ksampler_max_dsigma']:.2e} "
          "(KSampler uni_pc)")
    print(f"   Lynx's transformer timestep int(1000 sigma): up to {s['max_dt']:.3f} below 1000 sigma; velocity change "
          f"up to {s['truncation_velocity_change']:.2e} (relative)")
    print(f"   ComfyUI's noise for seed {LYNX_SEED} equals torch.randn with a generator seeded {LYNX_SEED}: {s['same_initial_noise']}")
    print(f"   final latent after {s['steps']} steps (ID + ref, three-pass), relative to {s['reference']}:")
    for k, v in s["ends"].items():
        print(f"     {k:30s} {v:.3e}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vae", help="a Wan 2.1 VAE file (default: the synthetic world's)")
    p.add_argument("--diffusers", help="a folder holding diffusers (pip install --target DIR diffusers)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.9, 0.6, 0.3, 0.1])
    p.add_argument("--sweep", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    p.add_argument("--small", action="store_true", help="a quick configuration (the test's)")
    args = p.parse_args(argv)
    # no gradients and a seeded RNG for this run only: the test suite calls main() in its own process,
    # and every later test must find autograd on and torch's RNG as it was
    with torch.no_grad(), torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        small = args.small
        world = build(args.vae, Path(tmp), frames=1 if small else 3, size=8 if small else 16)
        sigmas = args.sigmas[:2] if small else args.sigmas
        results = {"vae": vae_section(world, sigmas, args.sweep[:1] if small else args.sweep),
                   "guidance": guidance_section(world, sigmas),
                   "schedule": schedule_section(world, 6 if small else args.steps, args.diffusers)}
    print(f"Tiny Lynx-layout Wan: {WAN.num_layers} blocks, width {WAN.dim}, 2 heads of 128; Lynx full ID "
          f"(resampler + ip layers) + ref layers, random weights; latent {list(world.latent_shape)}")
    report(results["vae"], results["guidance"], results["schedule"])
    return results


if __name__ == "__main__":
    main()
