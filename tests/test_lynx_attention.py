"""Lynx on native Wan: the IaD-patched cross-attention computes exactly Lynx's attention equations.

A tiny 4-block, 2-head Wan is loaded with ComfyUI's own loader and sampled with ComfyUI's own
sampler, patched by the real IaD nodes (Model Loader path ``load_adapter_or_lynx`` -> IaD Identity
-> IaD Apply) with random-weight Lynx files. Every cross-attention call is captured and compared
with a straightforward implementation of the reference processors written here from their
equations (bytedance/lynx ``WanIPAttnProcessor`` for full, ``IPAWanAttnProcessor2_0`` for lite),
computed from the *file* tensors and the block's own weights, to 1e-5.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import tiny_models as tiny
from harness.lynx_files import LynxSpec, attention_heads, rms_norm, lynx_tensors, reference_resampler, write_lynx

WAN = tiny.WanSpec("iad-tiny-wan-lynx-4x256.safetensors", dim=256, ffn_dim=512, num_layers=4, seed=9)
HEADS = 2
SPECS = {
    # full: every block, token width = model width, registers, K/V bias
    "full": LynxSpec("full", output=256, model_dim=256, entries=4, registers=3, seed=11),
    # lite: blocks 0 and 2, narrower tokens, no bias, no registers
    "lite": LynxSpec("lite", output=128, model_dim=256, entries=2, registers=0, seed=12),
}
WEIGHT = 0.7   # IaD Apply weight == Lynx ip_scale


def _module(pack, name):
    return importlib.import_module(f"{pack.__name__}.{name}")




def lynx_cross_attention(m, x, context, tokens, ip, entry, variant, ip_scale):
    """Lynx's patched Wan cross-attention (attn2), from the reference equations.

    text:  q = norm_q(W_q x), k = norm_k(W_k c), v = W_v c, a_txt = softmax(q k^T / sqrt(d)) v   (per head)
    full:  t = [tokens ; registers_j];  k_ip = norm_k(W_k_ip t + b),  v_ip = W_v_ip t + b
    lite:  t = tokens;                  k_ip = RMS(W_k_ip t) (no weight, eps 1e-5),  v_ip = W_v_ip t
    out = W_o (a_txt + ip_scale * softmax(q k_ip^T / sqrt(d)) v_ip) + b_o
    """
    lin = lambda t, layer: t @ layer.weight.T + layer.bias  # noqa: E731
    q = rms_norm(lin(x, m.q), m.norm_q.weight)
    k = rms_norm(lin(context, m.k), m.norm_k.weight)
    a_txt = attention_heads(q, k, lin(context, m.v), HEADS)
    t = tokens.expand(x.shape[0], -1, -1)
    if variant == "full":
        t = torch.cat([t, ip[f"{entry}.registers"].expand(x.shape[0], -1, -1)], dim=1)
        k_ip = rms_norm(t @ ip[f"{entry}.to_k_ip.weight"].T + ip[f"{entry}.to_k_ip.bias"], m.norm_k.weight)
        v_ip = t @ ip[f"{entry}.to_v_ip.weight"].T + ip[f"{entry}.to_v_ip.bias"]
    else:
        k_ip = rms_norm(t @ ip[f"{entry}.to_k_ip.weight"].T, eps=1e-5)
        v_ip = t @ ip[f"{entry}.to_v_ip.weight"].T
    a_ip = attention_heads(q, k_ip, v_ip, HEADS)
    return lin(a_txt + ip_scale * a_ip, m.o)


def _face_embeds(pack, embedding, embedder):
    ft = _module(pack, "iad.face_types")
    face = ft.DetectedFace(0, np.zeros(4, np.float32), np.zeros((5, 2), np.float32), 0.99, embedding)
    return ft.FaceEmbeds([face], embedder=embedder)


@pytest.fixture(scope="module")
def wan_model(pack):
    import comfy.sd

    model = comfy.sd.load_diffusion_model(str(tiny.ensure(WAN)))
    dm = model.model.diffusion_model
    assert dm.num_heads == HEADS
    # The generator sets every norm scale to 1; make them distinct so using the wrong norm shows.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for block in dm.blocks:
            for norm in (block.cross_attn.norm_q, block.cross_attn.norm_k):
                norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=g))
    return model


def _run_patched(pack, wan_model, lynx_dir, embedding, uncond_identity="same as cond", cfg=1.0, three_pass=False):
    """Sample 2 steps through the IaD nodes (KSampler-style CFG, or IaD Lynx Guider when
    ``three_pass``); returns (captured cross-attention calls, identity tokens). Each call is
    (block, x, context, out, cond_or_uncond of its batch rows)."""
    import comfy.sample
    import comfy.samplers

    lynx = _module(pack, "iad.lynx")
    patching = _module(pack, "iad.patching")
    nodes = _module(pack, "nodes.iad_nodes")
    lynx_nodes = _module(pack, "nodes.lynx_nodes")
    adapter = lynx.load_adapter_or_lynx(lynx_dir, expected_embedder="facexlib/irse50")
    iad_model = patching.IaDModel.wrap(adapter, name=lynx_dir.name)
    identity = nodes.IaDIdentity.execute(iad_model, _face_embeds(pack, embedding, "facexlib/irse50"), "none", 1.0).result[0]
    patched = nodes.IaDApply.execute(wan_model, iad_model, identity, WEIGHT, 0.0, 1.0, uncond_identity).result[0]

    calls = []

    def record(i):
        def hook(mod, args, kwargs, out):
            cond_or_uncond = list(kwargs["transformer_options"].get("cond_or_uncond") or [0])
            calls.append((i, args[0].detach().clone(), args[1].detach().clone(), out.detach().clone(), cond_or_uncond))
        return hook

    handles = [block.cross_attn.register_forward_hook(record(i), with_kwargs=True)
               for i, block in enumerate(wan_model.model.diffusion_model.blocks)]
    try:
        positive = [[torch.randn(1, 12, 4096, generator=torch.Generator().manual_seed(1)), {}]]
        negative = [[torch.randn(1, 12, 4096, generator=torch.Generator().manual_seed(2)), {}]]
        noise = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(0))
        if three_pass:
            guider = lynx_nodes.IaDLynxGuider.execute(patched, positive, negative, 5.0, 2.0).result[0]
            sigmas = comfy.samplers.calculate_sigmas(patched.get_model_object("model_sampling"), "simple", 2)
            guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"), sigmas,
                          disable_pbar=True, seed=0)
        else:
            comfy.sample.sample(patched, noise, 2, cfg, "euler", "simple", positive, negative,
                                torch.zeros_like(noise), seed=0, disable_pbar=True)
    finally:
        for h in handles:
            h.remove()
    return calls, identity.tokens


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_patched_wan_cross_attention_equals_lynx_equations(pack, wan_model, tmp_path, variant):
    spec = SPECS[variant]
    lynx_dir = write_lynx(tmp_path / f"lynx_{variant}", spec)
    resampler_sd, ip = lynx_tensors(spec)
    embedding = F.normalize(torch.randn(512, generator=torch.Generator().manual_seed(4)), dim=0)

    calls, tokens = _run_patched(pack, wan_model, lynx_dir, embedding)
    # Identity tokens: Lynx's resampler applied to the one ArcFace embedding ([1, 1, 512]).
    expected_tokens = reference_resampler(resampler_sd, embedding[None, None], spec.heads, spec.depth)
    torch.testing.assert_close(tokens, expected_tokens, atol=1e-5, rtol=1e-5)

    blocks = wan_model.model.diffusion_model.blocks
    lynx_blocks = {b: j for j, b in enumerate(range(0, 4) if variant == "full" else (0, 2))}
    assert len(calls) == 2 * 4   # 2 steps x 4 blocks, cfg 1: one pass per step
    worst = 0.0
    with torch.no_grad():
        for block, x, context, out, _ in calls:
            m = blocks[block].cross_attn
            if block in lynx_blocks:
                ref = lynx_cross_attention(m, x, context, expected_tokens, ip, lynx_blocks[block], variant, WEIGHT)
            else:  # lite leaves the odd blocks alone: plain Wan text cross-attention
                ref = lynx_cross_attention(m, x, context, expected_tokens, ip, 0, variant, 0.0)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
            worst = max(worst, float((out - ref).abs().max()))
            if block in lynx_blocks:
                # and the identity really contributes (the check is not vacuous)
                plain = lynx_cross_attention(m, x, context, expected_tokens, ip, lynx_blocks[block], variant, 0.0)
                assert float((ref - plain).abs().max()) > 1e-3
    print(f"Lynx {variant}: max |patched - reference| = {worst:.2e} over {len(calls)} cross-attention calls")


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_three_pass_guider_with_null_identity_matches_lynx_on_both_branches(pack, wan_model, tmp_path, variant):
    """IaD Apply (uncond_identity 'null identity (Lynx)') + IaD Lynx Guider = Lynx's three passes:
    (positive, identity), (negative, identity), (negative, null tokens). Every row of every
    cross-attention call equals Lynx's equations with the tokens of its branch, to 1e-5; the null
    tokens are Lynx's resampler applied to an all-zero embedding (registers still appended, full)."""
    spec = SPECS[variant]
    lynx_dir = write_lynx(tmp_path / f"lynx_{variant}", spec)
    resampler_sd, ip = lynx_tensors(spec)
    embedding = F.normalize(torch.randn(512, generator=torch.Generator().manual_seed(5)), dim=0)

    calls, tokens = _run_patched(pack, wan_model, lynx_dir, embedding, uncond_identity="null identity (Lynx)",
                                 three_pass=True)
    identity_tokens = reference_resampler(resampler_sd, embedding[None, None], spec.heads, spec.depth)
    null_tokens = reference_resampler(resampler_sd, torch.zeros(1, 1, 512), spec.heads, spec.depth)
    torch.testing.assert_close(tokens, identity_tokens, atol=1e-5, rtol=1e-5)

    blocks = wan_model.model.diffusion_model.blocks
    lynx_blocks = {b: j for j, b in enumerate(range(0, 4) if variant == "full" else (0, 2))}
    # Per step and block: one batched [positive, negative] call and one [negative] call.
    assert len(calls) == 2 * 2 * 4
    assert sorted(sorted(c[4]) for c in calls[:8]) == [[0], [0], [0], [0], [0, 1], [0, 1], [0, 1], [0, 1]]
    rows_checked = {"identity": 0, "null": 0}
    worst = 0.0
    with torch.no_grad():
        for block, x, context, out, cond_or_uncond in calls:
            m = blocks[block].cross_attn
            for row, kind in enumerate(cond_or_uncond):
                branch_tokens = identity_tokens if kind == 0 else null_tokens
                xr, cr, outr = x[row:row + 1], context[row:row + 1], out[row:row + 1]
                scale = WEIGHT if block in lynx_blocks else 0.0
                ref = lynx_cross_attention(m, xr, cr, branch_tokens, ip, lynx_blocks.get(block, 0), variant, scale)
                torch.testing.assert_close(outr, ref, atol=1e-5, rtol=1e-5)
                worst = max(worst, float((outr - ref).abs().max()))
                if block in lynx_blocks:
                    rows_checked["identity" if kind == 0 else "null"] += 1
                    # Not vacuous: the branch's tokens contribute, and the branches differ.
                    plain = lynx_cross_attention(m, xr, cr, branch_tokens, ip, lynx_blocks[block], variant, 0.0)
                    assert float((ref - plain).abs().max()) > 1e-3
                    other = identity_tokens if kind != 0 else null_tokens
                    wrong = lynx_cross_attention(m, xr, cr, other, ip, lynx_blocks[block], variant, WEIGHT)
                    assert float((ref - wrong).abs().max()) > 1e-3
    n = len(lynx_blocks)
    # per step: positive + negative with identity, negative with the null tokens; 2 steps
    assert rows_checked == {"identity": 2 * 2 * n, "null": 2 * n}
    print(f"Lynx {variant} three-pass: max |patched - reference| = {worst:.2e} (identity and null branches)")


def test_lynx_adapter_refuses_insightface_embeddings(pack, tmp_path):
    lynx = _module(pack, "iad.lynx")
    patching = _module(pack, "iad.patching")
    nodes = _module(pack, "nodes.iad_nodes")
    adapter = lynx.load_adapter_or_lynx(write_lynx(tmp_path / "lynx_lite", SPECS["lite"]))
    iad_model = patching.IaDModel.wrap(adapter, name="lynx_lite")
    antelope = _face_embeds(pack, F.normalize(torch.randn(512), dim=0), "insightface/antelopev2/glintr100")
    with pytest.raises(ValueError, match=r"facexlib/irse50.*insightface/antelopev2/glintr100"):
        nodes.IaDIdentity.execute(iad_model, antelope, "none", 1.0)
