"""Lynx full's reference adapter on native Wan: IaD Lynx Ref Adapter computes exactly Lynx's equations.

A tiny 4-block, 2-head Wan (ComfyUI's loader), a tiny Wan VAE, a generated insightface pack and
random-weight ``ref_layers.safetensors``; the real nodes (IaD Apply with a Lynx ID adapter, IaD Lynx
Ref Adapter, IaD Lynx Guider) and ComfyUI's own samplers. Every self-attention call is captured and
compared with the reference written here from Lynx's equations (bytedance/lynx ``WanRefAttnProcessor``,
``encode_reference_images``), from the file tensors:

    reference pass (the unpatched model, timestep 0, the VAE latent of the 256 px crop or of the
    zero image, the reference text):  f_i = the input of block i's self-attention
    K_i = norm_k(f_i W_k_ref^T + b_k_ref),  V_i = f_i W_v_ref^T + b_v_ref
    self-attention out = W_o (a_self + ref_scale * softmax(norm_q(W_q x + b_q) K_i^T / sqrt(d)) V_i) + b_o
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import insightface_pack as ip
from harness import tiny_models as tiny
from harness.lynx_files import LynxSpec, attention_heads, rms_norm, ref_tensors, write_lynx, write_ref_layers
from test_lynx_nodes import analyzer  # noqa: F401  (fixture: the generated antelopev2 pack)

WAN = tiny.WanSpec("iad-tiny-wan-lynx-4x256.safetensors", dim=256, ffn_dim=512, num_layers=4, seed=9)
HEADS = 2
REF_SCALE = 0.8
ID_SPECS = {
    "full": LynxSpec("full", output=256, model_dim=256, entries=4, registers=3, seed=11),
    "lite": LynxSpec("lite", output=128, model_dim=256, entries=2, registers=0, seed=12),
}
REF_DIR = "iad-test-lynx-full"


def _module(pack, name):
    return importlib.import_module(f"{pack.__name__}.{name}")




@pytest.fixture(scope="module")
def wan_model(pack):
    import comfy.sd

    model = comfy.sd.load_diffusion_model(str(tiny.ensure(WAN)))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():   # distinct norm scales, so using the wrong norm shows
        for block in model.model.diffusion_model.blocks:
            for attn in (block.self_attn, block.cross_attn):
                for norm in (attn.norm_q, attn.norm_k):
                    norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def vae(pack):
    import comfy.sd
    import comfy.utils

    sd, metadata = comfy.utils.load_torch_file(str(tiny.ensure(tiny.WAN21_VAE)), return_metadata=True)
    return comfy.sd.VAE(sd=sd, metadata=metadata)


@pytest.fixture(scope="module")
def ref_file(pack):
    import folder_paths

    folder = Path(folder_paths.get_folder_paths("iad")[0]) / REF_DIR
    write_ref_layers(folder, blocks=WAN.num_layers, dim=WAN.dim)
    write_lynx(folder, ID_SPECS["full"])   # a whole lynx_full folder, as released
    yield f"{REF_DIR}/ref_layers.safetensors"
    shutil.rmtree(folder, ignore_errors=True)


def _photo():
    return torch.from_numpy(ip.face_image(320, 64, person=1)).float().div(255)[None]


REF_TEXT = [[torch.randn(1, 6, 4096, generator=torch.Generator().manual_seed(7)), {}]]
POSITIVE = [[torch.randn(1, 12, 4096, generator=torch.Generator().manual_seed(1)), {}]]
NEGATIVE = [[torch.randn(1, 12, 4096, generator=torch.Generator().manual_seed(2)), {}]]


def _apply_ref(pack, model, ref_file, vae, analyzer, image=None, **kw):
    nodes = _module(pack, "nodes.lynx_nodes")
    args = dict(ref_scale=REF_SCALE, start_percent=0.0, end_percent=1.0, dtype="fp32")
    args.update(kw)
    out = nodes.IaDLynxRefAdapter.execute(model, ref_file, vae, analyzer, _photo() if image is None else image,
                                          REF_TEXT, **args)
    return out.result


def _apply_id(pack, model, tmp_path, variant):
    lynx = _module(pack, "iad.lynx")
    patching = _module(pack, "iad.patching")
    nodes = _module(pack, "nodes.iad_nodes")
    ft = _module(pack, "iad.face_types")
    adapter = lynx.load_adapter_or_lynx(write_lynx(tmp_path / f"lynx_{variant}", ID_SPECS[variant]))
    iad_model = patching.IaDModel.wrap(adapter, name=f"lynx_{variant}")
    z = F.normalize(torch.randn(512, generator=torch.Generator().manual_seed(4)), dim=0)
    face = ft.DetectedFace(0, np.zeros(4, np.float32), np.zeros((5, 2), np.float32), 0.99, z)
    identity = nodes.IaDIdentity.execute(iad_model, ft.FaceEmbeds([face], embedder="facexlib/irse50"), "none", 1.0).result[0]
    return nodes.IaDApply.execute(model, iad_model, identity, 0.7, 0.0, 1.0, "null identity (Lynx)").result[0]


def _sample(pack, model, three_pass=False, steps=2, cfg=4.0):
    import comfy.sample
    import comfy.samplers

    noise = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    if three_pass:
        guider = _module(pack, "nodes.lynx_nodes").IaDLynxGuider.execute(model, POSITIVE, NEGATIVE, 5.0, 2.0).result[0]
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)
        return guider.sample(noise, torch.zeros_like(noise), comfy.samplers.sampler_object("euler"), sigmas,
                             disable_pbar=True, seed=0)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", POSITIVE, NEGATIVE, torch.zeros_like(noise),
                               seed=0, disable_pbar=True)


def _record_self_attention(model, calls):
    def record(i):
        def hook(mod, args, kwargs, out):
            opts = kwargs["transformer_options"]
            calls.append((i, args[0].detach().clone(), args[1], out.detach().clone(),
                          list(opts.get("cond_or_uncond") or [0]), opts.get("iad_ref_capture") is not None))
        return hook

    return [block.self_attn.register_forward_hook(record(i), with_kwargs=True)
            for i, block in enumerate(model.model.diffusion_model.blocks)]


def lynx_reference_features(model, latents: torch.Tensor, context: torch.Tensor) -> dict[int, torch.Tensor]:
    """Lynx's extraction pass: the UNPATCHED model at timestep 0, recording each block's self-attention input."""
    import comfy.model_management

    comfy.model_management.unload_all_models()   # a sampled clone's object patches stay on the model while loaded
    dm = model.model.diffusion_model
    for attn in (dm.blocks[0].self_attn, dm.blocks[0].cross_attn):   # restored: the module's own bound method
        assert getattr(attn.forward, "__func__", None) is type(attn).forward
    feats = {}
    hooks = [block.self_attn.register_forward_pre_hook(lambda mod, args, i=i: feats.__setitem__(i, args[0].clone()))
             for i, block in enumerate(dm.blocks)]
    try:
        with torch.no_grad():
            dm(latents, torch.zeros(latents.shape[0]), context.expand(latents.shape[0], -1, -1))
    finally:
        for h in hooks:
            h.remove()
    return feats


def lynx_self_attention(m, x, freqs, k_ref, v_ref, ref_scale):
    """W_o (a_self + ref_scale * attn(norm_q(q(x)), K_ref, V_ref)) + b_o, with a_self the block's own
    (RoPE) self-attention: written as o(a_self) + ref_scale * W_o attn_ref (o is affine)."""
    plain = type(m).forward(m, x, freqs, transformer_options={})
    q = rms_norm(x @ m.q.weight.T + m.q.bias, m.norm_q.weight)
    ref = attention_heads(q, k_ref.expand(x.shape[0], -1, -1), v_ref.expand(x.shape[0], -1, -1), HEADS)
    return plain + ref_scale * ref @ m.o.weight.T, plain


@pytest.mark.parametrize("case", ["full ID + ref, cfg", "ref + lite ID, three-pass"])
def test_ref_adapter_equals_lynx_equations_in_every_block_and_pass(pack, wan_model, vae, analyzer, ref_file, tmp_path, case):
    three_pass = "three-pass" in case
    variant = "lite" if "lite" in case else "full"
    if case.startswith("ref"):   # either order of the two nodes
        patched, crop = _apply_ref(pack, wan_model, ref_file, vae, analyzer)
        patched = _apply_id(pack, patched, tmp_path, variant)
    else:
        patched = _apply_id(pack, wan_model, tmp_path, variant)
        patched, crop = _apply_ref(pack, patched, ref_file, vae, analyzer)
    assert tuple(crop.shape) == (1, 256, 256, 3)

    calls = []
    handles = _record_self_attention(wan_model, calls)
    try:
        _sample(pack, patched, three_pass=three_pass)
    finally:
        for h in handles:
            h.remove()

    # Lynx's reference pass, written independently: VAE latent of the crop and of the zero image.
    lat = {kind: wan_model.model.process_latent_in(vae.encode(px)).float()
           for kind, px in (("image", crop), ("zero", torch.full_like(crop, 0.5)))}
    assert tuple(lat["image"].shape) == (1, 16, 1, 32, 32)
    context = REF_TEXT[0][0]
    ref = ref_tensors(WAN.num_layers, WAN.dim)
    blocks = wan_model.model.diffusion_model.blocks
    kv = {}
    for kind in ("image", "zero"):
        feats = lynx_reference_features(wan_model, lat[kind], context)
        for i, f in feats.items():
            m = blocks[i].self_attn
            k = rms_norm(f @ ref[f"{i}.to_k_ref.weight"].T + ref[f"{i}.to_k_ref.bias"], m.norm_k.weight)
            kv[kind, i] = (k, f @ ref[f"{i}.to_v_ref.weight"].T + ref[f"{i}.to_v_ref.bias"])
        # The node's own reference pass saw exactly these inputs (identity off, timestep 0, the reference text).
        captured = [c for c in calls if c[5] and c[1].shape[0] == 2]
        assert captured, "one batched reference pass (image and zero image) per run"
        row = 0 if kind == "image" else 1
        for i, x, *_ in captured:
            torch.testing.assert_close(x[row:row + 1], feats[i], atol=1e-5, rtol=1e-5)

    denoise = [c for c in calls if not c[5]]
    per_step = 2 if three_pass else 1   # three-pass: [positive, negative] + [negative]; cfg: [positive, negative]
    assert len(denoise) == 2 * per_step * WAN.num_layers
    assert sum(1 for c in calls if c[5]) == WAN.num_layers   # the reference pass ran once per run
    worst, rows = 0.0, {"image": 0, "zero": 0}
    with torch.no_grad():
        for i, x, freqs, out, cond_or_uncond, _ in denoise:
            m = blocks[i].self_attn
            for r, c in enumerate(cond_or_uncond):
                kind = "image" if c == 0 else "zero"
                expected, plain = lynx_self_attention(m, x[r:r + 1], freqs, *kv[kind, i], REF_SCALE)
                torch.testing.assert_close(out[r:r + 1], expected, atol=1e-4, rtol=1e-4)
                worst = max(worst, float((out[r:r + 1] - expected).abs().max()))
                assert float((expected - plain).abs().max()) > 1e-3   # the reference really contributes
                other = kv["zero" if kind == "image" else "image", i]
                wrong, _ = lynx_self_attention(m, x[r:r + 1], freqs, *other, REF_SCALE)
                assert float((expected - wrong).abs().max()) > 1e-4   # and the two kinds differ
                rows[kind] += 1
    # cfg: per step a positive (face) and a negative (zero image) row; three-pass: positive and
    # identity-negative (face), unconditional (zero image)
    assert rows == ({"image": 2 * 2 * 4, "zero": 2 * 4} if three_pass else {"image": 2 * 4, "zero": 2 * 4})
    print(f"Lynx ref ({case}): max |patched - reference| = {worst:.2e} over {len(denoise)} self-attention calls")


def test_reference_template_is_lynx_extended_crop_at_256(pack):
    """get_arcface_dst(extend_face_crop=True, 0.8) then estimate_norm(256): y + 10, shrink by 0.8 about
    the 112 px centre, scale by 256/128 = 2 and shift x by 16 (256 is a multiple of 128, not of 112)."""
    lynx_ref = _module(pack, "iad.lynx_ref")
    base = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]])
    expected = ((base + [0, 10]) - 56) * 0.8 + 56
    expected = expected * 2 + [16, 0]
    np.testing.assert_allclose(lynx_ref.reference_template(256), expected, atol=1e-4)
    # The crop warps those keypoints onto the template.
    kps = np.array([[100, 120], [160, 118], [130, 150], [105, 185], [155, 183]], np.float32)
    rgb = np.zeros((320, 320, 3), np.uint8)
    for n, (x, y) in enumerate(kps):
        rgb[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 50 * (n + 1)
    crop = lynx_ref.reference_crop(rgb, kps)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    for n in range(5):
        yx = np.argwhere(np.abs(crop[..., 0].astype(int) - 50 * (n + 1)) < 3)
        assert len(yx), f"keypoint {n} is inside the crop"


def test_ref_adapter_outside_its_range_or_at_scale_zero_is_bit_identical(pack, wan_model, vae, analyzer, ref_file):
    base = _sample(pack, wan_model)
    before = {k: v.clone() for k, v in wan_model.model.diffusion_model.state_dict().items()}
    off, _ = _apply_ref(pack, wan_model, ref_file, vae, analyzer, ref_scale=0.0)
    assert off is wan_model
    late, _ = _apply_ref(pack, wan_model, ref_file, vae, analyzer, start_percent=0.99, end_percent=1.0)
    calls = []
    handles = _record_self_attention(wan_model, calls)
    try:
        assert torch.equal(_sample(pack, late), base)
    finally:
        for h in handles:
            h.remove()
    assert not any(c[5] for c in calls), "no reference pass when the range is never reached"
    on, _ = _apply_ref(pack, wan_model, ref_file, vae, analyzer)
    assert not torch.equal(_sample(pack, on), base)
    # the base model is left as it was, and an unpatched run afterwards is unchanged
    after = wan_model.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(_sample(pack, wan_model), base)


def test_ref_adapter_bf16_weights_against_fp32(pack, wan_model, vae, analyzer, ref_file):
    """The default (bf16, Lynx's precision) against fp32 weights: the sampled latent differs by rounding only."""
    base = _sample(pack, wan_model)
    out = {dt: _sample(pack, _apply_ref(pack, wan_model, ref_file, vae, analyzer, dtype=dt)[0]) for dt in ("bf16", "fp32")}
    effect = float((out["fp32"] - base).abs().max())
    diff = float((out["bf16"] - out["fp32"]).abs().max())
    print(f"ref adapter bf16 vs fp32: max |diff| {diff:.2e}, effect of the adapter {effect:.2e}, ratio {diff / effect:.3%}")
    assert effect > 1e-2 and diff < 0.02 * effect


def test_ref_adapter_refusals_name_the_problem(pack, wan_model, vae, analyzer, ref_file, tmp_path):
    import folder_paths

    nodes = _module(pack, "nodes.lynx_nodes")
    lynx_ref = _module(pack, "iad.lynx_ref")
    iad_folder = Path(folder_paths.get_folder_paths("iad")[0])
    # a ref file of the wrong width
    narrow = write_ref_layers(iad_folder / "iad-test-lynx-narrow", blocks=4, dim=128)
    try:
        with pytest.raises(ValueError, match=r"4 blocks of width 128, but the model has 4 blocks of width 256"):
            _apply_ref(pack, wan_model, "iad-test-lynx-narrow/ref_layers.safetensors", vae, analyzer)
    finally:
        shutil.rmtree(narrow.parent)
    # ip_layers passed as ref_layers
    ip_dir = write_lynx(tmp_path / "lynx_full", ID_SPECS["full"])
    with pytest.raises(lynx_ref.LynxFormatError, match=r"identity layers .*ip_layers.safetensors"):
        lynx_ref.inspect_ref_file(ip_dir / "ip_layers.safetensors")
    # an incomplete file
    tensors = ref_tensors(4, 256)
    del tensors["2.to_v_ref.bias"]
    broken = write_ref_layers(tmp_path / "broken", 4, 256, tensors=tensors)
    with pytest.raises(lynx_ref.LynxFormatError, match=r"'2.to_v_ref.bias' is missing"):
        lynx_ref.inspect_ref_file(broken)
    # no VAE
    with pytest.raises(ValueError, match=r"connect a VAE"):
        nodes.IaDLynxRefAdapter.execute(wan_model, ref_file, None, analyzer, _photo(), REF_TEXT)
    # no face in the photo
    with pytest.raises(ValueError, match=r"IaD Lynx Ref Adapter: No face found in"):
        _apply_ref(pack, wan_model, ref_file, vae, analyzer, image=torch.full((1, 320, 320, 3), 0.35))
    # two photos
    with pytest.raises(ValueError, match=r"ONE reference photo; it has 2"):
        _apply_ref(pack, wan_model, ref_file, vae, analyzer, image=torch.cat([_photo(), _photo()]))
    # bad numbers and a missing file, before anything runs
    assert "NaN" in nodes.IaDLynxRefAdapter.validate_inputs(ref_file, float("nan"), 0.0, 1.0)
    assert "after end_percent" in nodes.IaDLynxRefAdapter.validate_inputs(ref_file, 1.0, 0.8, 0.2)
    assert "lynx_full/" in nodes.IaDLynxRefAdapter.validate_inputs("nowhere/ref_layers.safetensors", 1.0, 0.0, 1.0)
    assert nodes.IaDLynxRefAdapter.validate_inputs(ref_file, 1.0, 0.0, 1.0) is True


def test_ref_adapter_refuses_image_to_video_wan(pack, vae, analyzer, ref_file):
    import comfy.sd

    nodes = _module(pack, "nodes.lynx_nodes")
    i2v = comfy.sd.load_diffusion_model(str(tiny.ensure(tiny.WAN21_I2V)))
    with pytest.raises(ValueError, match=r"Wan text-to-video models"):
        nodes.IaDLynxRefAdapter.execute(i2v, ref_file, vae, analyzer, _photo(), REF_TEXT)
    assert os.path.basename(ref_file) == "ref_layers.safetensors"


def test_model_loader_keeps_lynx_in_bf16_by_default_and_fp32_differs_by_rounding(pack, wan_model, ref_file):
    """IaD Model Loader's dtype: auto = bf16 for Lynx files (Lynx's precision). The sampled latent with
    bf16 weights against fp32 weights, relative to what the adapter changes."""
    nodes = _module(pack, "nodes.iad_nodes")
    ft = _module(pack, "iad.face_types")
    base = _sample(pack, wan_model)
    z = F.normalize(torch.randn(512, generator=torch.Generator().manual_seed(4)), dim=0)
    faces = ft.FaceEmbeds([ft.DetectedFace(0, np.zeros(4, np.float32), np.zeros((5, 2), np.float32), 0.99, z)],
                          embedder="facexlib/irse50")
    out = {}
    for choice, expected in (("auto", torch.bfloat16), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
        iad_model = nodes.IaDModelLoader.execute(f"{REF_DIR}/ip_layers.safetensors", choice).result[0]
        assert {p.dtype for p in iad_model.adapter.parameters()} == {expected}
        identity = nodes.IaDIdentity.execute(iad_model, faces, "none", 1.0).result[0]
        patched = nodes.IaDApply.execute(wan_model, iad_model, identity, 1.0, 0.0, 1.0, "null identity (Lynx)").result[0]
        out[choice] = _sample(pack, patched)
    assert torch.equal(out["auto"], out["bf16"])
    effect = float((out["fp32"] - base).abs().max())
    diff = float((out["bf16"] - out["fp32"]).abs().max())
    print(f"Lynx full ID adapter bf16 vs fp32: max |diff| {diff:.2e}, effect {effect:.2e}, ratio {diff / effect:.3%}")
    assert effect > 1e-2 and diff < 0.02 * effect
    # an IaD checkpoint keeps its stored precision under auto; ref_layers is pointed to its own node
    assert nodes.loader_dtype("/nowhere/adapter.safetensors", "auto") is None
    with pytest.raises(ValueError, match=r"ref-adapter, not an identity adapter. Load it with IaD Lynx Ref Adapter"):
        nodes.IaDModelLoader.execute(ref_file, "auto")
    assert "Load it with IaD Lynx Ref Adapter" in nodes.IaDModelLoader.validate_inputs(ref_file, "auto")
    assert "not one of the choices" in nodes.IaDModelLoader.validate_inputs(f"{REF_DIR}/ip_layers.safetensors", "fp64")


WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"


@pytest.mark.parametrize("name, variant, ref, frames, fps", [
    ("wan2.1_t2v_14B_lynx_full_id_ref", "lynx_full", True, 81, 16.0),
    ("wan2.1_t2v_14B_lynx_lite", "lynx_lite", False, 121, 24.0),
    ("wan2.1_t2v_14B_lynx_lite_full_ref", "lynx_lite", True, 121, 24.0),
])
def test_shipped_lynx_workflows_use_each_variants_own_defaults(name, variant, ref, frames, fps):
    """bytedance/lynx infer.py (full): 81 frames, 16 fps, guidance_scale 5 + guidance_scale_i 2;
    infer_lite.py (lite): 121 frames, 24 fps, plain CFG 5; both 50 UniPC (bh2) steps at 832x480, bf16,
    ip_scale / ref_scale 1, identity at every step with the null identity in the negative pass."""
    import json

    nodes = json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())["nodes"]
    by_type = {}
    for node in nodes:
        by_type.setdefault(node["type"], []).append(node["widgets_values"] if "widgets_values" in node else [])
    assert by_type["IaDModelLoader"] == [[f"{variant}/resampler.safetensors", "auto"]]   # auto = bf16 for Lynx
    assert by_type["IaDIdentity"] == [["none", 1.0]]
    assert by_type["IaDApply"] == [[1.0, 0.0, 1.0, "null identity (Lynx)"]]
    assert by_type["EmptyHunyuanLatentVideo"] == [[832, 480, frames, 1]]
    assert by_type["SaveAnimatedWEBP"][0][1] == fps
    if ref:
        assert by_type["IaDLynxRefAdapter"] == [["lynx_full/ref_layers.safetensors", 1.0, 0.0, 1.0, "bf16"]]
        assert ["image of a face"] in by_type["CLIPTextEncode"]
    else:
        assert "IaDLynxRefAdapter" not in by_type
    # Lynx's 50 UniPC steps (diffusers' default solver bh2) on its sigmas: BasicScheduler, never KSampler,
    # whose uni_pc drops the penultimate sigma (docs/lynx.md, rows 3 and 5)
    assert by_type["KSamplerSelect"] == [["uni_pc_bh2"]] and by_type["BasicScheduler"] == [["simple", 50, 1.0]]
    assert len(by_type["SamplerCustomAdvanced"]) == 1 and "KSampler" not in by_type
    if variant == "lynx_full":   # three-pass guidance
        assert by_type["IaDLynxGuider"] == [[5.0, 2.0]] and "CFGGuider" not in by_type
    else:                        # plain CFG 5
        assert by_type["CFGGuider"] == [[5.0]] and "IaDLynxGuider" not in by_type


def test_adapters_run_at_the_compute_dtype_of_an_fp8_loaded_model(pack, vae, analyzer, ref_file, tmp_path):
    """Load Diffusion Model with weight_dtype fp8_e4m3fn: ComfyUI keeps the weights in fp8 and casts
    them per layer (manual cast). The ID adapter (bf16) and the ref-adapter (bf16) are cast the same
    way: the run is finite, both adapters act, and their weights stay as loaded."""
    import comfy.sd

    fp8 = comfy.sd.load_diffusion_model(str(tiny.ensure(WAN)), model_options={"dtype": torch.float8_e4m3fn})
    dm = fp8.model.diffusion_model
    assert dm.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    compute = fp8.model.manual_cast_dtype
    assert compute is not None and compute != torch.float8_e4m3fn
    base = _sample(pack, fp8)
    ref_model, _ = _apply_ref(pack, fp8, ref_file, vae, analyzer, dtype="bf16")
    with_ref = _sample(pack, ref_model)
    both = _sample(pack, _apply_id(pack, ref_model, tmp_path, "lite"))
    for out in (with_ref, both):
        assert torch.isfinite(out).all()
    assert float((with_ref - base).abs().max()) > 1e-3 and float((both - with_ref).abs().max()) > 1e-3
    layers = next(iter(ref_model.model_options["transformer_options"]["patches"]["iad_adapters"])).patcher.model
    assert {p.dtype for p in layers.parameters()} == {torch.bfloat16}
    assert dm.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn   # the base model is left as loaded


def _write_scaled_fp8(tmp_path):
    """The tiny Wan as ComfyUI's "fp8_scaled" diffusion-model files are written (the format of
    Comfy-Org's repackaged ``wan2.1_t2v_14B_fp8_scaled.safetensors``): every Linear weight in
    float8_e4m3fn with a per-tensor ``scale_weight``, and the ``scaled_fp8`` marker. ComfyUI 0.3.75
    loads it with its scaled-fp8 layers; v0.28.2 converts it to its own quantized tensors (a tensor
    subclass dequantized per call, the mechanism GGUF loaders use too). Also written: the same model
    with those weights dequantized in fp32, which must give the same output."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny.ensure(WAN)))
    scaled, dequantized = {}, {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 2:      # every Linear (0.3.75 makes all of them fp8)
            scale = (value.abs().max() / 448.0).float()
            weight = (value / scale).to(torch.float8_e4m3fn)
            scaled[key], scaled[key[:-len("weight")] + "scale_weight"] = weight, scale.reshape(())
            dequantized[key] = weight.float() * scale
        else:
            scaled[key] = dequantized[key] = value
    scaled["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    paths = tmp_path / "wan_fp8_scaled.safetensors", tmp_path / "wan_dequantized.safetensors"
    save_file(scaled, str(paths[0]))
    save_file(dequantized, str(paths[1]))
    return paths


def _both_adapters_act_as_on(pack, model, reference, vae, analyzer, ref_file, tmp_path, tolerance):
    """Ref-adapter + Lynx full ID adapter on ``model`` (a quantized base) and on ``reference`` (the same
    model dequantized in fp32): the base outputs agree, and so does the adapters' effect, to
    ``tolerance`` of their largest values; the adapters act; the base's first projection is left as
    loaded."""
    q = model.model.diffusion_model.blocks[0].self_attn.q
    loaded, stored = q.weight, q.weight.detach().clone()
    outputs = {}
    for name, m in (("quantized", model), ("reference", reference)):
        ref_model, _ = _apply_ref(pack, m, ref_file, vae, analyzer)
        outputs[name] = (_sample(pack, m), _sample(pack, _apply_id(pack, ref_model, tmp_path, "full")))
    (base, both), (base_ref, both_ref) = outputs["quantized"], outputs["reference"]
    effect, effect_ref = both - base, both_ref - base_ref
    print(f"\nbase {float((base - base_ref).abs().max()):.2e} of {float(base_ref.abs().max()):.2e}; adapters' effect "
          f"{float((effect - effect_ref).abs().max()):.2e} of {float(effect_ref.abs().max()):.2e}")
    assert torch.isfinite(both).all() and float(effect.abs().max()) > 1e-3
    assert float((base - base_ref).abs().max()) <= tolerance * float(base_ref.abs().max())
    assert float((effect - effect_ref).abs().max()) <= tolerance * float(effect_ref.abs().max())
    assert type(q.weight) is type(loaded) and torch.equal(q.weight.detach().float(), stored.float())


def test_both_adapters_on_an_fp8_scaled_base_equal_the_dequantized_base(pack, vae, analyzer, ref_file, tmp_path):
    """A base loaded from an fp8_scaled file (Load Diffusion Model, default weight_dtype): the ref-
    adapter's reference pass and both adapters' terms call the base's own (quantized) layers, never
    read their weights, so the output equals the same model dequantized in fp32, both adapters
    act, and the base's fp8 weights are left as loaded. Measured: v0.28.2 2e-5 of outputs up to 24;
    0.3.75 4e-2 (its scaled-fp8 layers scale the activations instead of the weights in some layers)."""
    import comfy.sd

    scaled_path, dequantized_path = _write_scaled_fp8(tmp_path)
    _both_adapters_act_as_on(pack, comfy.sd.load_diffusion_model(str(scaled_path)),
                             comfy.sd.load_diffusion_model(str(dequantized_path)), vae, analyzer, ref_file, tmp_path, 1e-2)


def test_both_adapters_on_a_base_with_custom_dequantizing_operations(pack, vae, analyzer, ref_file, tmp_path):
    """A base loaded the way GGUF loaders load theirs: load_diffusion_model_state_dict with
    ``custom_operations`` whose Linear layers keep quantized weights (int8 rows here; GGUF's block
    formats there) and dequantize per call (harness/quantized_ops.py). The adapters give the same
    output as on the dequantized fp32 model, to float rounding."""
    import comfy.sd
    from safetensors.torch import load_file

    from harness.quantized_ops import dequantizing_ops, quantize_state_dict

    quantized, dequantized = quantize_state_dict(load_file(str(tiny.ensure(WAN))))
    model = comfy.sd.load_diffusion_model_state_dict(quantized, model_options={"custom_operations": dequantizing_ops()})
    assert model.model.diffusion_model.blocks[0].self_attn.q.weight.dtype == torch.int8
    _both_adapters_act_as_on(pack, model, comfy.sd.load_diffusion_model_state_dict(dequantized), vae, analyzer, ref_file,
                             tmp_path, 1e-4)


@pytest.mark.parametrize("mode", ["NO_VRAM", "LOW_VRAM"])
def test_ref_adapter_under_partial_loading_with_a_lora(pack, wan_model, vae, analyzer, ref_file, tmp_path, monkeypatch, mode):
    """What --novram / --lowvram make ComfyUI do on a GPU (weights on the offload device, cast per
    layer, a LoRA applied at cast time), forced on the CPU as test_apply_inprocess does: the reference
    pass and the reference term run on the partially loaded model, the ref layers and the ID adapter
    are loaded with it, and the output equals the fully loaded one."""
    import comfy.model_management as mm
    import comfy.sd

    g = torch.Generator().manual_seed(5)
    lora = {f"diffusion_model.blocks.{b}.self_attn.{m}.lora_{p}.weight":
            torch.randn(*((WAN.dim, 4) if p == "up" else (4, WAN.dim)), generator=g) * 0.2
            for b in range(WAN.num_layers) for m in ("q", "o") for p in ("up", "down")}
    with_lora, _ = comfy.sd.load_lora_for_models(wan_model, None, lora, 1.0, 0.0)
    ref_model, _ = _apply_ref(pack, with_lora, ref_file, vae, analyzer)
    patched = _apply_id(pack, ref_model, tmp_path, "full")
    full = _sample(pack, patched)
    mm.unload_all_models()

    monkeypatch.setattr(mm, "vram_state", getattr(mm.VRAMState, mode))
    monkeypatch.setattr(mm, "is_device_cpu", lambda device: False)
    if mode == "LOW_VRAM":
        fake = patched.model_size() // 2 + mm.minimum_inference_memory()
        monkeypatch.setattr(mm, "get_free_memory", lambda dev=None, torch_free_too=False: (fake, fake) if torch_free_too else fake)
    calls, seen = [], []
    handles = _record_self_attention(wan_model, calls)
    try:
        import comfy.sample

        noise = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(0))
        out = comfy.sample.sample(patched, noise, 2, 4.0, "euler", "simple", POSITIVE, NEGATIVE, torch.zeros_like(noise),
                                  seed=0, disable_pbar=True, callback=lambda *a: seen.append(patched.model.model_lowvram))
    finally:
        for h in handles:
            h.remove()
        mm.unload_all_models()
    assert seen and all(seen), "the model was not partially loaded"
    assert any(c[5] for c in calls), "the reference pass ran under partial loading"
    assert torch.allclose(out, full, atol=1e-4, rtol=1e-4)
    assert (out - _sample(pack, with_lora)).abs().max() > 1e-3


def _graphs(workflow: dict):
    """The top-level graph and every subgraph definition of a UI workflow, as (nodes by id, links by id)."""
    for graph in [workflow, *workflow.get("definitions", {}).get("subgraphs", [])]:
        links = {}
        for link in graph.get("links", []):
            if isinstance(link, list):   # [id, origin_id, origin_slot, target_id, target_slot, type]
                links[link[0]] = link[1]
            else:
                links[link["id"]] = link["origin_id"]
        yield {node["id"]: node for node in graph.get("nodes", [])}, links


def _source(nodes: dict, links: dict, node: dict, input_name: str) -> dict | None:
    """The node feeding ``input_name`` of ``node``, through Reroutes."""
    while True:
        link = next((i.get("link") for i in node.get("inputs", []) if i["name"] == input_name), None)
        source = nodes.get(links.get(link))
        if source is None or source["type"] != "Reroute":
            return source
        node, input_name = source, source["inputs"][0]["name"]


def test_every_shipped_lynx_ref_adapter_gets_lynxs_reference_text():
    """bytedance/lynx runs its reference pass with the text "image of a face": every IaD Lynx Ref Adapter in
    every shipped workflow (top level or inside a subgraph) must get exactly that text, encoded by a
    CLIPTextEncode from the same text encoder as the prompt."""
    import json

    seen = []
    for path in sorted(WORKFLOWS_DIR.glob("*.json")):
        for nodes, links in _graphs(json.loads(path.read_text())):
            for node in nodes.values():
                if node["type"] != "IaDLynxRefAdapter":
                    continue
                text = _source(nodes, links, node, "ref_text")
                assert text is not None and text["type"] == "CLIPTextEncode", (path.name, text)
                assert text["widgets_values"] == ["image of a face"], (path.name, text["widgets_values"])
                prompts = [n for n in nodes.values() if n["type"] == "CLIPTextEncode" and n is not text]
                encoder = _source(nodes, links, text, "clip")
                assert encoder is not None and all(_source(nodes, links, p, "clip") is encoder for p in prompts), path.name
                seen.append(path.name)
    assert sorted(seen) == ["wan2.1_t2v_14B_lynx_full_id_ref.json", "wan2.1_t2v_14B_lynx_lite_full_ref.json"], seen
