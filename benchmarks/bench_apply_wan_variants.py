"""IaD Apply on Wan 2.2 Animate and S2V at the released 14B layout: step time of the patched vs the
unpatched model, side by side in one run, on the CPU.

    .venv/bin/python scripts/lanes.py run v0.28.2 -- .venv/bin/python benchmarks/bench_apply_wan_variants.py

A slice of the real 14B models: ComfyUI's own ``AnimateWanModel`` and ``WanModel_S2V`` at the released
width (5120, 40 heads of 128, feed-forward 13824), with every module of the real layout (Animate: the
pose embedding, the face-motion encoder and adapter, CLIP-image tokens in the cross-attention; S2V:
the causal audio encoder, the 12 audio injectors, the frame packer for motion frames), but a few
blocks instead of 40: Animate blocks 0-4 (its face adapter sits on every 5th block; a file with fewer
is not detected as Animate), S2V blocks 0-1 (block 0 carries the first audio injector; its twelve
5120-wide injectors alone are 1.9 B parameters), loaded through ComfyUI's loader from random weights. The conditioning is what the core nodes build (``WanAnimateToVideo``: reference image
as latent frame 0 and pose latents; ``WanSoundImageToVideo``: wav2vec2-large audio features, a
reference image and motion frames), through the model's own ``extra_conds``.

The same seeded model call that one CFG sampler step makes (cond + uncond batch) runs with: the
unpatched model; IaD active in every block of the slice; IaD with a step range that never activates;
and the unpatched model once more, as a control that shows the run's noise floor. The variants are
interleaved call by call in a shuffled order; the median thread CPU time (one torch
thread) is reported with its ratio to the unpatched model. Also checked in the same run: the
never-active output is bit-identical to the unpatched one; the identity K/V are computed once per block.

Goals (issue 31): <= 5 % step-time overhead inside the range, 0 outside it.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import apply_fixtures as af  # noqa: E402
from harness import tiny_models as tiny  # noqa: E402

ROUNDS = 7
ID_TOKENS = 16
TEXT_TOKENS = 128                    # fewer than Wan's 512: less base cost, the conservative case
WIDTH, HEADS, FFN = 5120, 40, 13824
LATENT = (2, 8, 12)                  # latent frames, height, width: 2 x 4 x 6 = 48 video tokens per sample


def build(cls_path: str, in_dim: int, blocks: int):
    """The slice, through ComfyUI's loader (which must detect the variant from the weights). The random
    weights are made in bf16 and loaded as fp32, so that the model exists once in fp32."""
    import importlib

    import comfy.ops
    import comfy.sd

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(f"comfy.ldm.wan.{module}"), name)
    model = cls(dim=WIDTH, ffn_dim=FFN, num_heads=HEADS, num_layers=blocks, in_dim=in_dim, out_dim=16,
                operations=comfy.ops.disable_weight_init, dtype=torch.bfloat16)
    generator = torch.Generator().manual_seed(31)
    state = {k: tiny._seeded_like(k, v, generator).to(torch.bfloat16) for k, v in sorted(model.state_dict().items())}
    del model
    gc.collect()
    return comfy.sd.load_diffusion_model_state_dict(state, model_options={"dtype": torch.float32})


def animate_conds(model, g):
    t, h, w = LATENT
    return {"concat_latent_image": torch.randn(1, 16, t, h, w, generator=g),
            "concat_mask": torch.cat([torch.zeros(1, 1, 1, h, w), torch.ones(1, 1, t - 1, h, w)], dim=2),
            "pose_video_latent": torch.randn(1, 16, t - 1, h, w, generator=g),
            "clip_vision_output": _clip(g)}


def s2v_conds(model, g):
    t, h, w = LATENT
    return {"audio_embed": torch.randn(1, 25, 1024, 4 * t, generator=g),
            "reference_latents": [torch.randn(1, 16, 1, h, w, generator=g)],
            "reference_motion": torch.randn(1, 16, 19, h, w, generator=g),
            "control_video": torch.zeros(1, 16, t, h, w)}


def _clip(g):
    import comfy.clip_vision

    out = comfy.clip_vision.Output()
    out.penultimate_hidden_states = torch.randn(1, 257, 1280, generator=g)
    return out


VARIANTS = {
    # name: (class, input channels, blocks in the slice, the core node's conditioning, config ComfyUI must detect)
    "animate": ("model_animate:AnimateWanModel", 36, 5, animate_conds, "WAN22_Animate"),
    "s2v": ("model:WanModel_S2V", 16, 2, s2v_conds, "WAN22_S2V"),
}


def model_inputs(model, conds):
    """(x, sigma, kwargs) of one CFG step: ``extra_conds`` of a cond and an uncond text with the
    variant's conditioning, concatenated as ComfyUI's sampler batches them."""
    g = torch.Generator().manual_seed(0)
    t, h, w = LATENT
    x = torch.randn(2, 16, t, h, w, generator=g)
    extra = conds(model, g)
    rows = []
    for row in range(2):
        text = torch.randn(1, TEXT_TOKENS, 4096, generator=g)
        made = model.model.extra_conds(noise=x[row:row + 1], cross_attn=text, device=x.device, **extra)
        rows.append({k: c.process_cond(batch_size=1, area=None) for k, c in made.items()})
    return x, torch.full((2,), 0.5), {k: c.concat([rows[1][k]]) for k, c in rows[0].items()}


def run_variant(name: str) -> dict:
    cls, in_dim, blocks, conds, config_name = VARIANTS[name]
    model = build(cls, in_dim, blocks)
    assert type(model.model.model_config).__name__ == config_name, type(model.model.model_config).__name__
    arch = af.module("iad.patching").architecture_of(model)
    AdapterConfig = af.module("iad.adapter").AdapterConfig
    config = AdapterConfig(family="wan2.1", model_dim=WIDTH, token_dim=1024, blocks=list(range(blocks)),
                           num_tokens=ID_TOKENS, num_registers=0, kv_bias=False, resampler_dim=512, resampler_depth=2,
                           resampler_heads=8, resampler_dim_head=64, name="bench adapter")
    adapter = af.module("iad.adapter").IdentityAdapter.random(config, seed=0)
    kv_calls = [0]
    for b in config.blocks:
        adapter.blocks[str(b)].to_k_ip.register_forward_hook(lambda *a: kv_calls.__setitem__(0, kv_calls[0] + 1))
    variants = af.overhead_variants(model, adapter)
    variants["unpatched again (A/A control)"] = model.clone()   # the noise floor: the same model, timed separately
    x, sigma, kwargs = model_inputs(model, conds)
    medians, mins, outputs = af.time_steps(variants, x, sigma, kwargs, ROUNDS)
    tokens = {k: tuple(v.shape) for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    result = {"name": name, "arch": arch, "medians": medians, "mins": mins,
              "inactive_identical": torch.equal(outputs["unpatched"], outputs["IaD, range never active"]),
              "active_differs": not torch.equal(outputs["unpatched"], outputs["IaD active every step"]),
              "kv_calls": kv_calls[0], "conds": tokens,
              "params": sum(p.numel() for p in model.model.diffusion_model.parameters())}
    del model, variants, outputs
    gc.collect()
    return result


def report(r: dict) -> None:
    arch, medians, mins = r["arch"], r["medians"], r["mins"]
    base = medians["unpatched"]
    t, h, w = LATENT
    print(f"\n== {arch.variant}: a 14B slice, width {arch.model_dim}, {arch.num_heads} heads, {arch.num_blocks} blocks "
          f"({r['params'] / 1e9:.2f} B parameters), {t} latent frames of {h}x{w}, {TEXT_TOKENS} text + {ID_TOKENS} "
          f"identity tokens, fp32 CPU, {ROUNDS} interleaved CFG steps per variant")
    print("conditioning: " + ", ".join(f"{k} {list(v)}" for k, v in r["conds"].items()))
    print(f"{'variant':26s} {'median step (s)':>15s} {'ratio':>7s} {'min (s)':>9s} {'ratio':>7s}")
    for key, value in medians.items():
        print(f"{key:26s} {value:15.3f} {value / base:6.3f}x {mins[key]:9.3f} {mins[key] / mins['unpatched']:6.3f}x")
    print(f"overhead inside the range {100 * (medians['IaD active every step'] / base - 1):+.2f} %, "
          f"outside it {100 * (medians['IaD, range never active'] / base - 1):+.2f} %; the unpatched model against "
          f"itself (noise floor) {100 * (medians['unpatched again (A/A control)'] / base - 1):+.2f} %")
    print(f"never-active output bit-identical to unpatched: {r['inactive_identical']}; active output differs: "
          f"{r['active_differs']}; identity K/V computed {r['kv_calls']} time(s) for {arch.num_blocks} blocks over "
          f"{ROUNDS + 1} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    from harness.comfy_env import import_comfy

    import_comfy()
    af.pack()
    for name in args.variants:
        report(run_variant(name))


if __name__ == "__main__":
    main()
