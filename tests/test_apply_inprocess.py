"""IaD Apply in-process, on tiny generated models of every supported family, through ComfyUI's
own loader and sampler: bit-identity when inactive, no leaks, clones, chains, step gating,
cfg 1 / uncond handling, tokens once per run, model management of the adapter, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch

from harness import apply_fixtures as af

from harness.apply_fixtures import available_families

# LTX-2 exists only in ComfyUI v0.2x: on 0.3.75 its cases are not collected (a test there checks that
# the model class is absent, so this stays a fact about the version, not a silent skip).
SUPPORTED = available_families(["wan-t2v", "wan-i2v", "wan2.2-5b", "ltxv", "ltx2", "hunyuan-video", "hunyuan-video-1.5"])


@pytest.fixture(scope="module")
def fx(comfy, pack):
    return af


@pytest.fixture(scope="module")
def models(fx):
    cache = {}

    def get(name):
        if name not in cache:
            family = af.FAMILIES[name]
            cache[name] = (family, af.load_model(family), *af.iad_inputs(family))
        return cache[name]

    return get


# -- architecture detection and refusals -------------------------------------------------------------
_DETECTED = {"wan-t2v": ("wan", 2), "wan-i2v": ("wan", 2), "wan2.2-5b": ("wan", 2), "ltxv": ("ltxv", 2), "ltx2": ("ltx2", 2),
             "hunyuan-video": ("hunyuan_video", 4), "hunyuan-video-1.5": ("hunyuan_video15", 3)}


@pytest.mark.parametrize("name", SUPPORTED)
def test_architecture_is_detected_from_the_loaded_model(models, name):
    family, blocks = _DETECTED[name]
    _, model, _, _ = models(name)
    patching = af.module("iad.patching")
    arch = patching.architecture_of(model)
    assert (arch.family, arch.model_dim, arch.num_blocks) == (family, 128, blocks)
    # Without ComfyUI's config name (library use) the module alone decides the same.
    assert patching.detect_architecture(model.model.diffusion_model).family == family
    if family == "hunyuan_video":
        assert arch.double_blocks == 2 and arch.site(3) == "single_blocks.1"
    if family == "hunyuan_video15":
        assert arch.double_blocks == 3 and arch.site(2) == "double_blocks.2"
    if family == "ltx2":
        assert arch.site(1) == "transformer_blocks.1.attn2"
    if name == "wan2.2-5b":   # ComfyUI reads the tiny file as Wan 2.2 TI2V 5B: its 48-channel config (WAN22_T2V)
        assert type(model.model.model_config).__name__ == "WAN22_T2V" and "WAN22_T2V" in arch.variant
        assert model.model.latent_format.latent_channels == 48


def test_hunyuan_video_15_super_resolution_is_refused_by_name(models):
    """The 1080p super-resolution stage shares HunyuanVideo 1.5's class; it refines a finished video
    and is not patched, and the refusal names it and the supported list."""
    _, model, _, _ = models("hunyuan-video-1.5")
    with pytest.raises(ValueError) as err:
        af.module("iad.patching").detect_architecture(model.model.diffusion_model, "HunyuanVideo15_SR_Distilled")
    assert "IaD supports" in str(err.value) and "this is HunyuanVideo 1.5 super-resolution" in str(err.value)


def test_ltx2_exists_exactly_where_comfyui_has_it(fx):
    """LTX-2 (LTXAV) came with ComfyUI v0.2x: 0.3.75 cannot load it, so its cases run on v0.2x only."""
    import importlib.util

    from harness.paths import comfyui_version

    has_ltx2 = importlib.util.find_spec("comfy.ldm.lightricks.av_model") is not None
    expected = {"0.3.75": False, "0.28.2": True}.get(comfyui_version().lstrip("v"))
    assert expected is None or has_ltx2 == expected, comfyui_version()
    assert ("ltx2" in SUPPORTED) == has_ltx2


def test_unsupported_model_is_refused_by_name(fx):
    import comfy.model_patcher
    import comfy.supported_models

    unet = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
            "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "out_channels": 4,
            "model_channels": 32, "num_res_blocks": [1], "transformer_depth": [1], "channel_mult": [1],
            "transformer_depth_middle": 1, "use_linear_in_transformer": True, "context_dim": 64,
            "num_head_channels": 32, "transformer_depth_output": [1, 1], "use_temporal_attention": False,
            "use_temporal_resblock": False}
    sdxl = comfy.model_patcher.ModelPatcher(comfy.supported_models.SDXL(unet).get_model({}, ""), torch.device("cpu"), torch.device("cpu"))
    iad_model, identity = af.iad_inputs(af.FAMILIES["wan-t2v"])
    with pytest.raises(ValueError) as err:
        af.apply(sdxl, iad_model, identity)
    assert ("IaD supports Wan 2.1/2.2 (T2V, I2V, TI2V 5B, VACE, Fun Camera/Control, S2V, HuMo, Animate, SCAIL, Dancer, "
            "causal), LTX-Video, LTX-2, HunyuanVideo, HunyuanVideo 1.5 T2V/I2V; this is SDXL") in str(err.value)


def test_width_and_family_mismatches_are_refused(models):
    family, model, _, _ = models("wan-t2v")
    big = af.module("iad.patching").IaDModel.wrap(
        af.module("iad.adapter").IdentityAdapter.random(af.module("iad.adapter").AdapterConfig.tiny(model_dim=5120, blocks=[0])),
        "wan14b.safetensors")
    identity = af.module("nodes.iad_nodes").IaDIdentity.execute(big, af.face_embeds()).result[0]
    with pytest.raises(ValueError) as err:
        af.apply(model, big, identity)
    message = str(err.value)
    assert "width 5120 (Wan 2.1/2.2 14B)" in message and "width 128" in message and "wan14b.safetensors" in message
    ltx_model, ltx_identity = af.iad_inputs(af.FAMILIES["ltxv"])
    with pytest.raises(ValueError, match="made for LTX-Video, but the model is Wan 2.1 T2V"):
        af.apply(model, ltx_model, ltx_identity)
    other_model, _ = af.iad_inputs(family, adapter_seed=5)
    _, identity_of_other = af.iad_inputs(family, adapter_seed=6)
    with pytest.raises(ValueError, match="same IaD Model Loader output"):
        af.apply(model, other_model, identity_of_other)


# -- the must-hold properties, on every family ----------------------------------------------------
@pytest.mark.parametrize("name", SUPPORTED)
def test_inactive_is_bit_identical_active_changes_nothing_leaks_and_clones_reproduce(models, name):
    family, model, iad_model, identity = models(name)
    base = af.sample(model, family, steps=3)
    weights_before = {k: v.clone() for k, v in model.model.state_dict().items()}

    with af.CallRecorder() as rec:
        zero = af.apply(model, iad_model, identity, weight=0.0)
        assert torch.equal(af.sample(zero, family, steps=3), base)
        # A range inside the last 1 % of denoising: patched, but no sampled sigma ever falls in it.
        never = af.apply(model, iad_model, identity, start=0.99, end=1.0)
        assert never is not model, "a range that is valid but never reached must still patch (the gate decides)"
        assert torch.equal(af.sample(never, family, steps=3), base)
    assert rec.events == [], "an inactive identity must not run a single identity attention"

    with af.CallRecorder() as rec:
        patched = af.apply(model, iad_model, identity, start=0.0, end=1.0)
        out = af.sample(patched, family, steps=3)
    assert len(rec.events) == 3 * len(family.blocks), "one identity attention per patched block per step"
    assert (out - base).abs().max() > 1e-3, "the identity had no effect"

    assert torch.equal(af.sample(model, family, steps=3), base), "the unpatched model changed after a patched run"
    assert all(torch.equal(v, weights_before[k]) for k, v in model.model.state_dict().items())
    assert not model.object_patches and "patches_replace" not in model.model_options["transformer_options"]
    assert torch.equal(af.sample(patched.clone(), family, steps=3), out), "a clone of the patched model differs"


def test_step_range_gates_exactly_the_steps_inside_it(models):
    import comfy.samplers

    family, model, iad_model, identity = models("wan-t2v")
    steps = 6
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)[:-1].tolist()
    # The "simple" scheduler takes evenly spaced timesteps: step i starts at i/steps of the denoising,
    # so 0.5..1.0 is steps 3, 4, 5 - including step 3, which starts exactly at 50 % (float32 table vs
    # percent_to_sigma: the gate must not lose it to rounding).
    expected_active = sigmas[3:]

    def run(m):
        x0 = []
        out = af.sample(m, family, steps=steps, callback=lambda step, denoised, x, total: x0.append(denoised.clone()))
        return out, x0

    base, base_x0 = run(model)
    with af.CallRecorder() as rec:
        out, x0 = run(af.apply(model, iad_model, identity, start=0.5, end=1.0))
    assert rec.sigmas == pytest.approx(sorted(expected_active, reverse=True), abs=1e-5)
    first_active = sigmas.index(expected_active[0])
    for step in range(steps):
        same = torch.equal(x0[step], base_x0[step])
        assert same == (step < first_active), f"step {step} (sigma {sigmas[step]:.3f}): identical={same}"
    assert not torch.equal(out, base)


@pytest.mark.parametrize("shift", [None, 3.0], ids=["no-shift", "shift-3"])
@pytest.mark.parametrize("name", available_families(["wan-t2v", "ltxv", "ltx2", "hunyuan-video", "hunyuan-video-1.5"]))
def test_step_range_does_not_depend_on_node_order(models, name, shift):
    """ModelSamplingSD3 -> IaD Apply and IaD Apply -> ModelSamplingSD3 sample the same video: the
    percent range is resolved when sampling starts, against the sampled model's own model_sampling
    (as core resolves a conditioning's start/end percent), not when IaD Apply runs. The identity
    runs in exactly the steps that model_sampling selects."""
    import comfy.samplers
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    family, model, iad_model, identity = models(name)

    def shifted(m):
        return m if shift is None else ModelSamplingSD3().patch(m, shift)[0]

    steps = 8
    shift_first = af.apply(shifted(model), iad_model, identity, start=0.75, end=1.0)
    apply_first = shifted(af.apply(model, iad_model, identity, start=0.75, end=1.0))
    with af.CallRecorder() as first:
        a = af.sample(shift_first, family, steps=steps)
    with af.CallRecorder() as second:
        b = af.sample(apply_first, family, steps=steps)
    assert torch.equal(a, b), f"node order changed the video (max |diff| {float((a - b).abs().max()):.3g})"
    sampling = apply_first.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", steps)[:-1].tolist()
    expected = [s for s in sigmas if af.module("iad.patching").gate_for(sampling, 0.75, 1.0).active(s)]
    assert len(expected) == 2   # the last quarter of 8 steps
    assert first.sigmas == second.sigmas == pytest.approx(sorted(expected, reverse=True), abs=1e-5)
    assert not torch.equal(a, af.sample(shifted(model), family, steps=steps)), "the identity had no effect"


def test_default_range_is_the_last_quarter_of_the_steps(models):
    """PersonalVideo: identity only in the last quarter. With 8 steps only the last 2 run it."""
    import comfy.samplers

    family, model, iad_model, identity = models("wan-t2v")
    nodes = af.module("nodes.iad_nodes")
    inputs = {i.id: i for i in nodes.IaDApply.define_schema().inputs}
    assert (inputs["start_percent"].default, inputs["end_percent"].default) == (0.75, 1.0)
    assert inputs["uncond_identity"].default == "none"

    steps = 8
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)[:-1].tolist()
    base_x0, x0 = [], []
    af.sample(model, family, steps=steps, callback=lambda step, denoised, x, total: base_x0.append(denoised.clone()))
    with af.CallRecorder() as rec:
        default = nodes.IaDApply.execute(model, iad_model, identity).result[0]   # every range input left at its default
        af.sample(default, family, steps=steps, callback=lambda step, denoised, x, total: x0.append(denoised.clone()))
    assert rec.sigmas == pytest.approx(sigmas[6:], abs=1e-6), "the identity must run in exactly the last 2 of 8 steps"
    assert len(rec.events) == 2 * len(family.blocks)
    assert [torch.equal(a, b) for a, b in zip(x0, base_x0)] == [True] * 6 + [False] * 2

    # The same rule on longer schedules (the gate alone): 20 steps -> last 5, 40 -> last 10.
    gate = af.module("iad.patching").step_gate(model, 0.75, 1.0)
    for n in (20, 40):
        schedule = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", n)[:-1].tolist()
        assert [gate.active(s) for s in schedule] == [False] * (3 * n // 4) + [True] * (n // 4)


def test_two_applies_compose_like_their_summed_weight(models):
    family, model, iad_model, identity = models("wan-t2v")
    chained = af.apply(af.apply(model, iad_model, identity, weight=0.4), iad_model, identity, weight=0.8)
    with af.CallRecorder() as rec:
        a = af.sample(chained, family, steps=3)
    assert len({e["entry"] for e in rec.events}) == 2
    summed = af.sample(af.apply(model, iad_model, identity, weight=1.2), family, steps=3)
    single = af.sample(af.apply(model, iad_model, identity, weight=0.8), family, steps=3)
    # weight * attention is added before the output projection, so two entries add linearly.
    assert torch.allclose(a, summed, atol=1e-4, rtol=1e-4)
    assert (a - single).abs().max() > 1e-3
    assert len(chained.model_patches_models()) == 2


def test_hunyuan_chain_composes(models):
    family, model, iad_model, identity = models("hunyuan-video")
    other_model, other_identity = af.iad_inputs(family, adapter_seed=1, face_seed=1)
    chained = af.apply(af.apply(model, iad_model, identity, weight=0.5), other_model, other_identity, weight=0.5)
    with af.CallRecorder() as rec:
        a = af.sample(chained, family, steps=2)
    assert len({e["entry"] for e in rec.events}) == 2
    assert not torch.equal(a, af.sample(af.apply(model, iad_model, identity, weight=0.5), family, steps=2))
    dit = chained.model_options["transformer_options"]["patches_replace"]["dit"]
    assert set(dit) == {("double_block", 1), ("single_block", 0), ("single_block", 1)}


@pytest.mark.parametrize("name, patched_blocks", [
    ("hunyuan-video", {("double_block", 1), ("single_block", 0), ("single_block", 1)}),
    ("hunyuan-video-1.5", {("double_block", 0), ("double_block", 2)}),
], ids=["hunyuan-video", "hunyuan-video-1.5"])
def test_hunyuan_identity_touches_only_the_video_tokens_of_every_block(models, name, patched_blocks):
    """Every patched block, called on the same input with and without its identity: the text rows
    of its output are bit-identical and the video rows differ. ComfyUI v0.14+ orders the single
    blocks' joint sequence (text, video), 0.3.75 (video, text); the order is read here from the
    tensors themselves (the single blocks' input starts or ends with the last double block's text)."""
    family, model, iad_model, identity = models(name)
    patched = af.apply(model, iad_model, identity, weight=1.0)
    dit = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    records = []

    def recording(key, patch):
        def call(args, extra):
            block_input = args["img"].clone()
            # The same block on the same input without identity, on copies: blocks may add into
            # their inputs in place (0.3.75's single blocks, v0.2x's double blocks).
            copies = {"img": block_input.clone(), **({"txt": args["txt"].clone()} if "txt" in args else {})}
            reference = extra["original_block"]({**args, **copies})
            out = patch(args, extra)
            # Copies: the next block may add into this output in place.
            records.append((key, block_input, reference, {k: v.clone() for k, v in out.items()}))
            return out
        return call

    for key, patch in list(dit.items()):
        patched.set_model_patch_replace(recording(key, patch), "dit", *key)
    af.sample(patched, family, steps=1, cfg=1.0)

    doubles = [r for r in records if r[0][0] == "double_block"]
    singles = [r for r in records if r[0][0] == "single_block"]
    assert {r[0] for r in records} == patched_blocks
    for key, _, reference, out in doubles:
        assert torch.equal(out["txt"], reference["txt"]), f"{key}: identity changed the text tokens"
        assert not torch.equal(out["img"], reference["img"]), f"{key}: identity did not reach the video tokens"
    if not singles:   # HunyuanVideo 1.5: double blocks only
        return
    text_len = doubles[-1][3]["txt"].shape[1]
    last_text = doubles[-1][3]["txt"]
    first_single_in = next(r for r in singles if r[0] == ("single_block", 0))[1]
    seq_len = first_single_in.shape[1]
    if torch.equal(first_single_in[:, :text_len], last_text):
        text, video = slice(0, text_len), slice(text_len, seq_len)
    else:
        assert torch.equal(first_single_in[:, seq_len - text_len:], last_text), "text tokens not found in the sequence"
        text, video = slice(seq_len - text_len, seq_len), slice(0, seq_len - text_len)
    for key, _, reference, out in singles:
        assert torch.equal(out["img"][:, text], reference["img"][:, text]), f"{key}: identity changed the text rows"
        assert (out["img"][:, video] - reference["img"][:, video]).abs().max() > 0, f"{key}: video rows unchanged"


def test_cfg1_and_the_unconditional_toggle(models):
    family, model, iad_model, identity = models("wan-t2v")
    with af.CallRecorder() as rec:
        cfg1 = af.sample(af.apply(model, iad_model, identity), family, steps=2, cfg=1.0)
    assert rec.events and all(e["rows"] is None for e in rec.events)  # cond only: every row
    assert not torch.equal(cfg1, af.sample(model, family, steps=2, cfg=1.0))

    with af.CallRecorder() as cond_only:
        none = af.sample(af.apply(model, iad_model, identity, uncond_identity="none"), family, steps=2)
    with af.CallRecorder() as both:
        with_uncond = af.sample(af.apply(model, iad_model, identity, uncond_identity="same as cond"), family, steps=2)
    # ComfyUI batches [cond, uncond] or [uncond, cond]: one row of two gets the identity.
    assert all(e["rows"] is not None and len(e["rows"]) == 1 for e in cond_only.events)
    assert all(e["rows"] is None and e["tokens"] == "identity" for e in both.events)
    assert not torch.equal(with_uncond, none)
    # Python callers of the former boolean apply_to_uncond get the same two behaviours.
    assert torch.equal(af.sample(af.apply(model, iad_model, identity, uncond_identity=False), family, steps=2), none)
    assert torch.equal(af.sample(af.apply(model, iad_model, identity, uncond_identity=True), family, steps=2), with_uncond)
    with pytest.raises(ValueError, match="uncond_identity must be one of"):
        af.apply(model, iad_model, identity, uncond_identity="zero")


def _sdpa(q, k, v, heads):
    b, n, c = q.shape
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, c // heads).transpose(1, 2)  # noqa: E731
    w = torch.softmax(split(q) @ split(k).transpose(-2, -1) / (c // heads) ** 0.5, dim=-1)
    return (w @ split(v)).transpose(1, 2).reshape(b, n, c)


@pytest.mark.parametrize("name", ["wan-t2v", "hunyuan-video"])
def test_null_identity_on_the_uncond_rows(models, name):
    """uncond_identity 'null identity (Lynx)': cond rows get attn(q, K_id, V_id), uncond rows
    attn(q, K_null, V_null) from the adapter's null tokens (resampler of an all-zero embedding)."""
    family, model, iad_model, identity = models(name)
    adapter = iad_model.adapter
    with af.CallRecorder() as rec:
        null = af.sample(af.apply(model, iad_model, identity, uncond_identity="null identity (Lynx)"), family, steps=2)
    cond_events = [e for e in rec.events if e["tokens"] == "identity"]
    null_events = [e for e in rec.events if e["tokens"] == "null"]
    assert len(cond_events) == len(null_events) == 2 * len(family.blocks)
    for c, n in zip(cond_events, null_events):  # one row each, the two rows of the CFG batch
        assert len(c["rows"]) == len(n["rows"]) == 1 and set(c["rows"]) | set(n["rows"]) == {0, 1}
    none = af.sample(af.apply(model, iad_model, identity, uncond_identity="none"), family, steps=2)
    same = af.sample(af.apply(model, iad_model, identity, uncond_identity="same as cond"), family, steps=2)
    assert (null - none).abs().max() > 1e-3 and (null - same).abs().max() > 1e-3
    with af.CallRecorder() as cfg1:
        af.sample(af.apply(model, iad_model, identity, uncond_identity="null identity (Lynx)"), family, steps=2, cfg=1.0)
    assert cfg1.events and all(e["tokens"] == "identity" and e["rows"] is None for e in cfg1.events)
    if name != "wan-t2v":
        return

    # Numerically, per cross-attention call, against a direct computation from the adapter's tokens.
    patched = af.apply(model, iad_model, identity, weight=0.6, uncond_identity="null identity (Lynx)")
    blocks = model.model.diffusion_model.blocks
    calls = []
    handles = [blocks[b].cross_attn.register_forward_hook(
        lambda mod, args, kwargs, out, b=b: calls.append((b, args[0].clone(), args[1].clone(), out.clone(),
                                                          list(kwargs["transformer_options"]["cond_or_uncond"]))),
        with_kwargs=True) for b in family.blocks]
    kv_calls = []
    kv_hooks = [adapter.blocks[str(b)].to_k_ip.register_forward_hook(lambda *a: kv_calls.append(1)) for b in family.blocks]
    resampler_calls = []
    kv_hooks.append(adapter.resampler.register_forward_hook(lambda *a: resampler_calls.append(1)))
    try:
        af.sample(patched, family, steps=3)
    finally:
        for h in handles + kv_hooks:
            h.remove()
    assert len(kv_calls) == 2 * len(family.blocks), "identity and null K/V: each once per block, then cached"
    assert resampler_calls == [], "the null tokens are made by IaD Apply, never during sampling"
    with torch.no_grad():
        null_tokens = adapter.resampler(torch.zeros(1, adapter.config.embed_dim))
        assert torch.allclose(null_tokens, adapter.null_tokens())
        assert len(calls) == 3 * len(family.blocks)
        for b, x, context, out, cond_or_uncond in calls:
            m = blocks[b].cross_attn
            q = m.norm_q(m.q(x))
            text = _sdpa(q, m.norm_k(m.k(context)), m.v(context), m.num_heads)
            for row, kind in enumerate(cond_or_uncond):
                tokens = identity.tokens if kind == 0 else null_tokens
                k, v = adapter.block_kv(b, tokens)
                if adapter.config.identity_key_norm:
                    k = m.norm_k(k)
                expected = m.o(text[row:row + 1] + 0.6 * _sdpa(q[row:row + 1], k, v, m.num_heads))
                torch.testing.assert_close(out[row:row + 1], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", available_families(["wan-t2v", "ltx2", "hunyuan-video-1.5"]))
def test_tokens_once_per_run_kv_once_per_block_and_weights_managed(models, name):
    import comfy.model_management

    family, model, _, _ = models(name)
    iad_model, _ = af.iad_inputs(family, adapter_seed=3)
    adapter = iad_model.adapter
    calls = {"resampler": 0, "kv": 0}
    hooks = [adapter.resampler.register_forward_hook(lambda *a: calls.__setitem__("resampler", calls["resampler"] + 1))]
    hooks += [adapter.blocks[str(b)].to_k_ip.register_forward_hook(lambda *a: calls.__setitem__("kv", calls["kv"] + 1))
              for b in family.blocks]
    try:
        identity = af.module("nodes.iad_nodes").IaDIdentity.execute(iad_model, af.face_embeds()).result[0]
        assert calls["resampler"] == 1
        patched = af.apply(model, iad_model, identity)
        af.sample(patched, family, steps=4)
        af.sample(patched, family, steps=4)
    finally:
        for h in hooks:
            h.remove()
    assert calls["resampler"] == 1, "identity tokens must never be recomputed during sampling"
    assert calls["kv"] == len(family.blocks), "identity K/V are computed once per block, then cached"
    assert iad_model.patcher in patched.model_patches_models()   # the loader's own patcher, as core's model patches
    loaded = [m.model.model for m in comfy.model_management.current_loaded_models if m.model is not None]
    assert any(m is adapter for m in loaded), "model management did not load the adapter with the model"


def test_patch_objects_deepcopy_cheaply_and_keep_the_module_tree(models):
    family, model, iad_model, identity = models("hunyuan-video")
    patched = af.apply(model, iad_model, identity)
    clone = patched.clone()
    dit_a = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    dit_b = clone.model_options["transformer_options"]["patches_replace"]["dit"]
    assert all(dit_a[k] is dit_b[k] for k in dit_a)
    patch = next(iter(dit_a.values()))
    assert copy.deepcopy(patch) is patch and patch.to(torch.device("cpu")) is patch and patch.models() == []

    _, wan, wan_model, wan_identity = models("wan-t2v")
    wan_patched = af.apply(wan, wan_model, wan_identity)
    assert set(wan_patched.object_patches) == {f"diffusion_model.blocks.{b}.cross_attn.forward" for b in (0, 1)}
    # Only `forward` is replaced: LoRA keys / lowvram casting see the same modules.
    names = [n for n, _ in wan_patched.model.named_modules()]
    assert "diffusion_model.blocks.0.cross_attn.q" in names


@pytest.mark.parametrize("mode", ["NO_VRAM", "LOW_VRAM"])
def test_offloaded_partial_loading(models, monkeypatch, mode):
    """What --novram / --lowvram make ComfyUI do on a GPU (weights left on the offload device and
    cast per layer, LoRA applied at cast time), forced here on the CPU: ComfyUI itself never
    partially loads onto a CPU device, so its device test and free memory are patched for the test."""
    import comfy.model_management as mm
    import comfy.sd

    family, model, iad_model, identity = models("wan-t2v")
    lora = {f"diffusion_model.blocks.{b}.cross_attn.{m}.lora_{p}.weight": torch.randn(*((128, 4) if p == "up" else (4, 128)),
                                                                                     generator=torch.Generator().manual_seed(b)) * 0.5
            for b in (0, 1) for m in ("q", "o") for p in ("up", "down")}
    with_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)
    patched = af.apply(with_lora, iad_model, identity)
    full = af.sample(patched, family, steps=2)
    mm.unload_all_models()

    monkeypatch.setattr(mm, "vram_state", getattr(mm.VRAMState, mode))
    monkeypatch.setattr(mm, "is_device_cpu", lambda device: False)
    if mode == "LOW_VRAM":
        size = patched.model_size()
        fake = size // 2 + mm.minimum_inference_memory()

        def free_memory(dev=None, torch_free_too=False):
            return (fake, fake) if torch_free_too else fake

        monkeypatch.setattr(mm, "get_free_memory", free_memory)
    lowvram_seen = []
    with af.CallRecorder() as rec:
        out = af.sample(patched, family, steps=2,
                        callback=lambda *a: lowvram_seen.append(patched.model.model_lowvram))
    mm.unload_all_models()
    assert lowvram_seen and all(lowvram_seen), "the model was not partially loaded"
    assert rec.events, "the identity did not run under partial loading"
    assert torch.allclose(out, full, atol=1e-4, rtol=1e-4)
    assert (out - af.sample(with_lora, family, steps=2)).abs().max() > 1e-3


def test_identity_decoupling_choices_and_refusals(fx):
    nodes = af.module("nodes.iad_nodes")
    family = af.FAMILIES["wan-t2v"]
    wrap = af.module("iad.patching").IaDModel.wrap
    faces = af.face_embeds(count=4)

    def tokens(iad_model, decoupling, strength=1.0, embeds=faces):
        return nodes.IaDIdentity.execute(iad_model, embeds, decoupling, strength).result[0]

    trained = wrap(af.make_adapter(family, decoupler_kind="trained"), "trained.safetensors")
    plain = wrap(af.make_adapter(family), "plain.safetensors")
    auto = tokens(trained, "auto")
    assert auto.decoupling.startswith("trained") and torch.equal(auto.tokens, tokens(trained, "trained").tokens)
    assert tokens(plain, "auto").decoupling.startswith("training-free")
    none = tokens(plain, "none").tokens
    assert not torch.equal(tokens(plain, "training-free").tokens, none)
    assert not torch.equal(tokens(trained, "trained", 0.5).tokens, auto.tokens)
    assert auto.tokens.shape == (1, 4, 64) and auto.num_references == 4
    with pytest.raises(ValueError, match="needs an adapter with a trained decoupler"):
        tokens(plain, "trained")
    # Another pack folder with the same recognizer is fine; another recognizer is refused.
    renamed = type(faces)(faces.faces, embedder="insightface/my-antelope/glintr100")
    assert tokens(plain, "none", embeds=renamed).tokens.shape == none.shape
    with pytest.raises(ValueError, match="buffalo_l/w600k_r50"):
        tokens(plain, "none", embeds=type(faces)(faces.faces, embedder="insightface/buffalo_l/w600k_r50"))


def test_ltxv_patch_computes_the_modules_own_text_attention_gating_included(comfy):
    """The LTX-Video patch re-computes attn2's text attention to add the identity before the output
    projection. With a zero-weight identity it must return exactly what the module itself returns:
    same projections, norms and mask, and the per-head gating that ComfyUI v0.2x's CrossAttention
    has for gated-attention checkpoints. Calls that are not a text cross-attention (rotary
    embeddings, a guide mask object) run the module unchanged."""
    import inspect

    from comfy.ldm.lightricks.model import CrossAttention

    patching = af.module("iad.patching")
    iad_model, identity = af.iad_inputs(af.FAMILIES["ltxv"])
    entry = patching.IdentityEntry(iad_model.patcher, identity.tokens, 0.0, 0.0, 1.0,
                                   patching.StepGate(float("inf"), 0.0))
    gated_variants = [False] + ([True] if "apply_gated_attention" in inspect.signature(CrossAttention.__init__).parameters else [])
    for gated in gated_variants:
        torch.manual_seed(11)
        extra = {"apply_gated_attention": True} if gated else {}
        module = CrossAttention(query_dim=128, context_dim=96, heads=4, dim_head=32, operations=torch.nn, **extra).eval()
        if gated:
            torch.nn.init.normal_(module.to_gate_logits.weight, std=0.5)   # gates away from 1
        patch = patching.ltxv.LTXVCrossAttentionIdentity(module, module.forward, 0, (entry,))
        x, context = torch.randn(2, 10, 128), torch.randn(2, 7, 96)
        mask = torch.zeros(2, 1, 10, 7)
        mask[:, :, :, 5:] = -torch.inf
        with torch.no_grad():
            for m in (None, mask):
                assert torch.equal(patch(x, context=context, mask=m, transformer_options={}),
                                   module(x, context=context, mask=m, transformer_options={})), (gated, m is None)
            # not a text cross-attention: the module's own forward, untouched
            pe_calls = []
            passthrough = patching.ltxv.LTXVCrossAttentionIdentity(module, lambda *a, **k: pe_calls.append(k) or "inner", 0,
                                                                 (entry,))
            assert passthrough(x, context=context, pe=object(), transformer_options={}) == "inner"
            assert passthrough(x, context=context, mask=object(), transformer_options={}) == "inner"
            assert passthrough(x, context=context, k_pe=object(), transformer_options={}) == "inner"
            assert len(pe_calls) == 3


def test_a_low_rank_adapter_applies_like_its_dense_equivalent(models):
    """IaD Apply with kv_rank r gives exactly what a full-rank adapter with W = up @ down gives."""
    family, model, _, _ = models("wan-t2v")
    iad_model, identity = af.iad_inputs(family, kv_rank=8)
    adapter = iad_model.adapter
    dense_state = {}
    for name, tensor in adapter.state_dict().items():
        if ".down." in name:
            continue
        if ".up.weight" in name:
            down = adapter.state_dict()[name.replace(".up.", ".down.")]
            dense_state[name.replace(".up.", ".")] = tensor @ down
        else:
            dense_state[name.replace(".up.", ".")] = tensor
    config = af.module("iad.adapter").AdapterConfig.from_dict({**adapter.config.to_dict(), "kv_rank": 0})
    dense = af.module("iad.patching").IaDModel.wrap(af.module("iad.adapter").IdentityAdapter.from_state_dict(config, dense_state))
    dense_identity = af.module("nodes.iad_nodes").IaDIdentity.execute(dense, af.face_embeds(0)).result[0]
    low = af.sample(af.apply(model, iad_model, identity), family, steps=2)
    full = af.sample(af.apply(model, dense, dense_identity), family, steps=2)
    assert (low - af.sample(model, family, steps=2)).abs().max() > 1e-3
    torch.testing.assert_close(low, full, atol=1e-4, rtol=1e-4)
