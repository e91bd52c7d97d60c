"""IaD Apply on LTX-2 and HunyuanVideo 1.5: step time of the patched vs the unpatched model, side
by side in one run, on the CPU.

    .venv/bin/python scripts/lanes.py run v0.28.2 -- .venv/bin/python benchmarks/bench_apply_families.py
    .venv/bin/python benchmarks/bench_apply_families.py --families hunyuan_video15   # 0.3.75 has no LTX-2

Real layouts at a CPU-sized width: each model is ComfyUI's own class with the released model's
block structure and head size (LTX-2: video heads of 128, audio heads of 64, audio and
audio<->video attentions, text connectors; HunyuanVideo 1.5: double blocks only, heads of 128,
SigLIP/byT5 branches, 65 input channels), 4 heads per stream and 8 blocks instead of 32 heads and
48/54 blocks, loaded through ComfyUI's loader from random weights. A narrower model is the
conservative case: the identity attention costs ~ tokens x identity tokens x width, a block
~ tokens x width^2. LTX-2 samples video and audio together (ComfyUI's packed latent).

Per family, the same seeded model call that one CFG sampler step makes (a cond+uncond batch, as
ComfyUI's sampler builds it through the model's own ``extra_conds``) runs with: the unpatched
model; IaD active in every block; IaD with a step range that never activates. The variants are
interleaved call by call in a shuffled order over several rounds; the median thread CPU time (one
torch thread) is reported with its ratio to the unpatched model. Also checked in the same run: the
never-active output is bit-identical to the unpatched one, and the identity tokens and each
block's K/V are computed once per run, however many steps run.

Goals (issue 22): <= 5 % step-time overhead inside the range, 0 outside it, tokens once per run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import apply_fixtures as af  # noqa: E402
from harness import tiny_models as tiny  # noqa: E402

ROUNDS = 10
ID_TOKENS = 16
TEXT_TOKENS = 256
WIDTH, LAYERS = 512, 8


def ltx2_model():
    """LTX-2 layout: video 4 x 128, audio 4 x 64, connectors 4 x 128 on 512-wide text features."""
    import comfy.sd

    spec = tiny.LTX2Spec("bench-ltx2.safetensors", head_dim=128, audio_heads=4, audio_head_dim=64, caption_channels=512,
                         connector_heads=4, num_layers=LAYERS, seed=21)
    config = {**spec.transformer_config(), "num_attention_heads": WIDTH // 128}
    import comfy.ops
    from comfy.ldm.lightricks.av_model import LTXAVModel

    module = LTXAVModel(in_channels=128, audio_in_channels=128, cross_attention_dim=WIDTH,
                        **{k: v for k, v in config.items() if not k.startswith("connector_")},
                        connector_num_attention_heads=config["connector_num_attention_heads"],
                        connector_attention_head_dim=config["connector_attention_head_dim"],
                        operations=comfy.ops.disable_weight_init)
    state = tiny._randomise(module, spec.seed)
    del module
    # ComfyUI reads LTX-2's head count as 32 unless the file's config says otherwise, as released files do.
    return comfy.sd.load_diffusion_model_state_dict(state, metadata={"config": json.dumps({"transformer": config})})


def hunyuan15_model():
    import comfy.sd

    spec = tiny.HunyuanVideo15Spec("bench-hv15.safetensors", hidden_size=WIDTH, depth=LAYERS, context_in_dim=3584, seed=22)
    return comfy.sd.load_diffusion_model_state_dict(tiny.build_hunyuan_video15_state_dict(spec))


FAMILIES = {
    # family: (model builder, adapter family, video latent [C, T, H, W], audio latent or None, text width)
    "ltx2": (ltx2_model, "ltx2", (128, 3, 12, 20), (8, 25, 16), 512),
    "hunyuan_video15": (hunyuan15_model, "hunyuan_video15", (32, 3, 12, 20), None, 3584),
}


def model_inputs(model, video_shape, audio_shape, text_width):
    """(x, sigma, kwargs) of one CFG step: the batch ComfyUI's sampler builds (``extra_conds`` of
    a cond and an uncond text, concatenated)."""
    import comfy.utils

    g = torch.Generator().manual_seed(0)
    video = torch.randn(2, *video_shape, generator=g)
    parts = [video] if audio_shape is None else [video, torch.randn(2, *audio_shape, generator=g)]
    x, shapes = comfy.utils.pack_latents(parts) if audio_shape is not None else (video, [video.shape])
    base = model.model
    rows = []
    for row in range(2):
        text = torch.randn(1, TEXT_TOKENS, text_width, generator=g)
        noise = x[row:row + 1]
        conds = base.extra_conds(noise=noise, cross_attn=text, device=x.device, pooled_output=None, latent_shapes=shapes)
        rows.append({k: c.process_cond(batch_size=1, area=None) for k, c in conds.items()})
    kwargs = {k: c.concat([rows[1][k]]) for k, c in rows[0].items()}
    return x, torch.full((2,), 0.5), kwargs


def video_tokens(video_shape) -> int:
    _, t, h, w = video_shape
    return t * h * w   # both families patchify 1 x 1 x 1 here (LTX latents, HunyuanVideo 1.5 patch size 1)


def run_family(name: str) -> dict:
    build, adapter_family, video_shape, audio_shape, text_width = FAMILIES[name]
    model = build()
    arch = af.module("iad.patching").architecture_of(model)
    AdapterConfig = af.module("iad.adapter").AdapterConfig
    config = AdapterConfig(family=adapter_family, model_dim=arch.model_dim, token_dim=min(arch.model_dim, 1024),
                           blocks=list(range(arch.num_blocks)), num_tokens=ID_TOKENS, num_registers=0, kv_bias=False,
                           resampler_dim=512, resampler_depth=2, resampler_heads=8, resampler_dim_head=64, name="bench adapter")
    adapter = af.module("iad.adapter").IdentityAdapter.random(config, seed=0)
    calls = {"resampler": 0, "kv": 0}
    adapter.resampler.register_forward_hook(lambda *a: calls.__setitem__("resampler", calls["resampler"] + 1))
    for b in config.blocks:
        adapter.blocks[str(b)].to_k_ip.register_forward_hook(lambda *a: calls.__setitem__("kv", calls["kv"] + 1))
    variants = af.overhead_variants(model, adapter)
    x, sigma, kwargs = model_inputs(model, video_shape, audio_shape, text_width)
    medians, mins, outputs = af.time_steps(variants, x, sigma, kwargs, ROUNDS)
    base_params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    return {"name": name, "arch": arch, "medians": medians, "mins": mins,
            "inactive_identical": torch.equal(outputs["unpatched"], outputs["IaD, range never active"]),
            "active_differs": not torch.equal(outputs["unpatched"], outputs["IaD active every step"]),
            "resampler_calls": calls["resampler"], "kv_calls": calls["kv"], "blocks": len(config.blocks),
            "tokens": video_tokens(video_shape), "audio": audio_shape, "base_params": base_params}


def report(r: dict) -> None:
    arch, medians, mins = r["arch"], r["medians"], r["mins"]
    base = medians["unpatched"]
    audio = f", audio latent {r['audio']} sampled with it" if r["audio"] else ""
    print(f"\n== {arch.variant}: width {arch.model_dim}, {arch.num_heads} heads, {arch.num_blocks} blocks "
          f"({r['base_params'] / 1e6:.1f} M parameters), {r['tokens']} video tokens{audio}, {TEXT_TOKENS} text + "
          f"{ID_TOKENS} identity tokens, fp32 CPU, {ROUNDS} interleaved CFG steps per variant")
    print(f"{'variant':26s} {'median step (s)':>15s} {'ratio':>7s} {'min (s)':>9s} {'ratio':>7s}")
    for key, value in medians.items():
        print(f"{key:26s} {value:15.4f} {value / base:6.3f}x {mins[key]:9.4f} {mins[key] / mins['unpatched']:6.3f}x")
    print(f"overhead inside the range {100 * (medians['IaD active every step'] / base - 1):+.2f} %, "
          f"outside it {100 * (medians['IaD, range never active'] / base - 1):+.2f} %")
    print(f"never-active output bit-identical to unpatched: {r['inactive_identical']}; active output differs: {r['active_differs']}")
    print(f"identity tokens computed {r['resampler_calls']} time(s) for the run; identity K/V {r['kv_calls']} time(s) "
          f"for {r['blocks']} blocks, over the {ROUNDS + 1} steps of the active variant")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=sorted(FAMILIES))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    from harness.comfy_env import import_comfy

    import_comfy()
    af.pack()
    for name in args.families:
        if name == "ltx2" and tiny.LTX2_TINY not in tiny.other_family_specs():
            print("\n== LTX-2: this ComfyUI has no LTX-2 (it came with ComfyUI 0.7); run in the v0.28.2 lane.")
            continue
        report(run_family(name))


if __name__ == "__main__":
    main()
