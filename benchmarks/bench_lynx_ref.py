"""IaD Lynx Ref Adapter: step time of the patched vs the unpatched Wan, and the one-time reference
pass, side by side in one run, on the CPU.

    .venv/bin/python scripts/lanes.py run v0.28.2 -- .venv/bin/python benchmarks/bench_lynx_ref.py

ComfyUI's own ``WanModel`` with Wan 14B's head size (128) at a CPU-sized width: 512 wide, 4 heads,
8 blocks, loaded through ComfyUI's loader from random weights; Lynx-format ref layers of the same
width for every block (fp32 here; bf16 on a GPU). One CFG step (a cond + uncond batch of 720 video
tokens, 64 text tokens) per call, with the sampler's per-run feature store, as in a sampling run: the
first call runs the reference pass (face and zero image, one single-frame pass of 256 tokens), the
others reuse it. Variants, interleaved call by call in a shuffled order over several rounds, median
thread CPU time (one torch thread): unpatched; the ref-adapter active; a step range that never
activates. Also checked in the same run: the never-active output is bit-identical to the unpatched
one, and the reference pass runs once per run. A narrower model is the conservative case for the
reference term (one extra query projection ~ tokens x width^2 and an attention over 256 reference
tokens, against a block's ~ tokens x width^2 x 12 + attention over all tokens).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import apply_fixtures as af  # noqa: E402
from harness import tiny_models as tiny  # noqa: E402

ROUNDS = 10
WIDTH, LAYERS = 512, 8
LATENT = (2, 16, 3, 24, 40)        # cond + uncond, 3 x 12 x 20 = 720 video tokens each
TEXT_TOKENS = 64


def main() -> None:
    torch.set_grad_enabled(False)
    from harness.comfy_env import import_comfy

    import_comfy()
    af.pack()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import comfy.patcher_extension
    import comfy.sd

    lynx_ref = af.module("iad.lynx_ref")
    wan_ref = af.module("iad.patching.wan_ref")
    patching = af.module("iad.patching")

    spec = tiny.WanSpec("bench-wan-512.safetensors", dim=WIDTH, ffn_dim=int(WIDTH * 2.7), num_layers=LAYERS, seed=31)
    model = comfy.sd.load_diffusion_model_state_dict(tiny.build_wan_state_dict(spec))
    layers = lynx_ref.LynxRefLayers(lynx_ref.RefLayout(LAYERS, WIDTH, "F32"), operations=comfy.ops.manual_cast)
    layers.load_state_dict(tiny._randomise(layers, 1))
    g = torch.Generator().manual_seed(1)
    patcher = comfy.model_patcher.ModelPatcher(layers, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
    latents = {wan_ref.IMAGE: torch.randn(1, 16, 1, 32, 32, generator=g), wan_ref.ZERO: torch.randn(1, 16, 1, 32, 32, generator=g)}
    context = torch.randn(1, 8, 4096, generator=g)

    def ref_model(start, end):
        entry = wan_ref.ReferenceEntry(patcher, latents, context, 1.0, start, end, patching.step_gate(model, start, end))
        return wan_ref.apply_reference(model, entry, LAYERS), entry

    active, active_entry = ref_model(0.0, 1.0)
    never, never_entry = ref_model(0.999, 1.0)
    variants = {"unpatched": (model, None), "ref-adapter active": (active, active_entry),
                "ref-adapter, range never active": (never, never_entry)}
    passes = {"count": 0}
    for block in model.model.diffusion_model.blocks:
        block.self_attn.register_forward_pre_hook(
            lambda mod, args, kwargs: passes.__setitem__("count", passes["count"] + bool(
                kwargs.get("transformer_options", {}).get("iad_ref_capture"))), with_kwargs=True)

    x = torch.randn(*LATENT, generator=g)
    sigma = torch.full((2,), 0.5)
    text = torch.randn(2, TEXT_TOKENS, 4096, generator=g)
    stores = {k: wan_ref.ReferenceFeatures() for k in variants}   # one sampling run per variant
    torch.set_num_threads(1)
    times = {k: [] for k in variants}
    first_call = {}
    outputs = {}
    order = list(variants)
    rng = random.Random(0)
    for round_index in range(ROUNDS + 1):   # round 0: the run's first call (reference pass) and warm-up
        rng.shuffle(order)
        for key in order:
            m, entry = variants[key]
            mm.load_models_gpu([m])
            options = dict(m.model_options["transformer_options"], sigmas=sigma, cond_or_uncond=[0, 1])
            # what a sampler adds (comfy.sampler_helpers.prepare_model_patcher): the patcher's wrappers
            options["wrappers"] = comfy.patcher_extension.copy_nested_dicts(m.wrappers)
            if entry is not None:
                options[wan_ref.store_key(entry.uid)] = stores[key]
            start = time.thread_time()
            out = m.model.apply_model(x, sigma, c_crossattn=text, transformer_options=options)
            elapsed = time.thread_time() - start
            if round_index == 0:
                first_call[key] = elapsed
            else:
                times[key].append(elapsed)
            outputs[key] = out.float()
    mm.unload_all_models()
    medians = {k: statistics.median(v) for k, v in times.items()}
    base = medians["unpatched"]
    params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    print(f"Wan (ComfyUI's WanModel): width {WIDTH}, {WIDTH // 128} heads of 128, {LAYERS} blocks ({params / 1e6:.1f} M "
          f"parameters), {LATENT[2] * LATENT[3] // 2 * LATENT[4] // 2} video tokens, {TEXT_TOKENS} text tokens, CFG batch 2, "
          f"fp32 CPU, one thread, {ROUNDS} interleaved steps per variant")
    print(f"{'variant':34s} {'median step (s)':>15s} {'ratio':>7s}")
    for key, value in medians.items():
        print(f"{key:34s} {value:15.4f} {value / base:6.3f}x")
    print(f"overhead inside the range {100 * (medians['ref-adapter active'] / base - 1):+.2f} %, outside it "
          f"{100 * (medians['ref-adapter, range never active'] / base - 1):+.2f} %")
    once = first_call["ref-adapter active"] - medians["ref-adapter active"]
    print(f"the reference pass (first call of a run, minus a later call): {once:.4f} s = {once / base:.2f} unpatched steps")
    print(f"reference passes over the {ROUNDS + 1} calls of the active run: {passes['count'] // LAYERS}; "
          f"never-active output bit-identical to unpatched: {torch.equal(outputs['unpatched'], outputs['ref-adapter, range never active'])}; "
          f"active output differs: {not torch.equal(outputs['unpatched'], outputs['ref-adapter active'])}")


if __name__ == "__main__":
    main()
