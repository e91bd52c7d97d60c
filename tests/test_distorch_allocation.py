"""IaD under ComfyUI-MultiGPU's DisTorch2 (issue 33): its allocation, reproduced in-process on the CPU by
``harness.distorch_standin`` (what DisTorch does to each module, written from its code), applied to a
tiny Wan model loaded as its loader nodes load one, then patched by IaD Apply and by Lynx's ref adapter.

What holds, with every module IaD's patch calls on the donor (100 %), or split (80 %: DisTorch fills
the compute device's share from the model's tail, so block 1 computes there and block 0's cross-attention
projections sit on the donor):
- the identity acts, and the output is bit-identical to the same IaD on the normally loaded model (also
  with a LoRA, which DisTorch patches at the compute device before moving the module, and with Lynx's
  ref adapter): the donor's weights reach every call through ComfyUI's cast, exactly (float32 -> float64
  -> float32), so every operation computes on the same numbers as with normal loading;
- weight 0 (IaD Apply returns its MODEL unpatched) is bit-identical to no IaD under the allocation, as
  long as no IaD-patched clone of the same model ran before it: DisTorch leaves the last clone's object
  patches on the model, and IaD's identity patch left behind still acts
  (``test_a_model_sampled_after_an_iad_run`` pins that);
- the adapter is not allocated: model management loads it (via ``model_patches_models``) with core's
  own partial loading on its own load device, which is not DisTorch's compute device, and IaD's K/V are
  cached on the compute device in the compute dtype.
Real devices are not involved (CPU only): how the donor stands in for one is in the harness docstring.
"""

from __future__ import annotations

import pytest
import torch

from harness import apply_fixtures as af
from harness import distorch_standin as dt

FAMILY = af.FAMILIES["wan-t2v"]
STEPS = 2
# What IaD's Wan patch calls on the block's own cross-attention (wan.py: q, k, v, o, norm_q, norm_k).
IAD_SITE_MODULES = ("q", "k", "v", "o", "norm_q", "norm_k")
LORA_MODULES = ("q", "o")


@pytest.fixture(scope="module")
def fx(comfy, pack):
    return af


def _lora(model):
    import comfy.sd

    lora = {f"diffusion_model.blocks.{b}.cross_attn.{m}.lora_{p}.weight":
            torch.randn(*((128, 4) if p == "up" else (4, 128)), generator=torch.Generator().manual_seed(b)) * 0.5
            for b in FAMILY.blocks for m in LORA_MODULES for p in ("up", "down")}
    return comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)[0]


def _ref_entry(model, tmp_path):
    """Lynx's ref adapter as IaD Lynx Ref Adapter builds it (random ref layers, ComfyUI's casting layers,
    their own ModelPatcher on the default device); the reference latents and text are seeded tensors."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops

    from harness.lynx_files import write_ref_layers

    wan_ref = af.module("iad.patching.wan_ref")
    dm = model.model.diffusion_model
    path = write_ref_layers(tmp_path, blocks=len(dm.blocks), dim=dm.dim)
    layers = af.module("iad.lynx_ref").load_ref_layers(path, operations=comfy.ops.manual_cast)
    patcher = comfy.model_patcher.ModelPatcher(layers, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    g = torch.Generator().manual_seed(5)
    latents = {kind: torch.randn(1, 16, 1, 4, 4, generator=g) for kind in (wan_ref.IMAGE, wan_ref.ZERO)}
    gate = af.module("iad.patching").step_gate(model, 0.0, 1.0)
    return wan_ref.ReferenceEntry(patcher, latents, af.text_tensor("image of a face"), 1.0, 0.0, 1.0, gate)


def _variants(model, iad_model, identity, ref_entry):
    """What is compared between normal loading and the allocation, sampled in this order."""
    apply_reference = af.module("iad.patching.wan_ref").apply_reference
    lora = _lora(model)
    # No IaD first: DisTorch leaves the last clone's object patches on the model (see
    # test_a_model_sampled_after_an_iad_run), so a model without IaD is compared before any IaD run.
    return {
        "no IaD": model,
        "IaD weight 0": af.apply(model, iad_model, identity, weight=0.0),
        "IaD": af.apply(model, iad_model, identity),
        "LoRA + IaD": af.apply(lora, iad_model, identity),
        "Lynx ref + IaD": af.apply(apply_reference(model, ref_entry, len(FAMILY.blocks)), iad_model, identity),
    }


@pytest.fixture(scope="module")
def normal(fx, tmp_path_factory):
    """Every variant on the normally loaded model: the reference outputs."""
    import comfy.model_management as mm

    model = af.load_model(FAMILY)
    iad_model, identity = af.iad_inputs(FAMILY)
    ref_entry = _ref_entry(model, tmp_path_factory.mktemp("ref"))
    outputs = {name: af.sample(m, FAMILY, steps=STEPS) for name, m in _variants(model, iad_model, identity, ref_entry).items()}
    outputs["no IaD, after the IaD runs"] = af.sample(model, FAMILY, steps=STEPS)
    mm.unload_all_models()
    return iad_model, identity, ref_entry, outputs


@pytest.fixture
def standin(fx, monkeypatch):
    import comfy.model_management as mm

    yield dt.DisTorchStandIn(monkeypatch)
    mm.unload_all_models()   # while the stand-in is still installed: it unloads what it loaded


def _site(model, block: int, name: str):
    return getattr(model.model.diffusion_model.blocks[block].cross_attn, name)


@pytest.mark.parametrize("donor_percent", [100, 80])
def test_identity_survives_the_allocation_bit_identical_to_normal_loading(normal, standin, donor_percent):
    iad_model, identity, ref_entry, expected = normal
    model = dt.load_as_distorch(lambda: af.load_model(FAMILY), dt.allocation(donor_percent))
    assert model.load_device == torch.device("cpu", 0) != iad_model.patcher.load_device
    variants = _variants(model, iad_model, identity, ref_entry)
    assert variants["IaD weight 0"] is model
    outputs = {}
    for name, variant in variants.items():
        with af.CallRecorder() as rec:
            outputs[name] = af.sample(variant, FAMILY, steps=STEPS)
        distorch = [c for c in standin.calls if c[1] == "distorch"]
        assert distorch and distorch[-1][0] is variant and distorch[-1][2] == model.load_device, name
        if name in ("IaD", "LoRA + IaD"):
            assert len(rec.events) == STEPS * len(FAMILY.blocks), f"{name}: the identity did not run in every step"

    # Where the modules IaD calls were put, and what DisTorch did to them.
    placed = {}
    for block in FAMILY.blocks:
        for name in IAD_SITE_MODULES:
            module = _site(model, block, name)
            label = standin.assigned[f"diffusion_model.blocks.{block}.cross_attn.{name}"]
            assert dt.placement_of(module) == label, (block, name)
            assert getattr(module, "comfy_cast_weights", False) == (label == dt.DONOR), (block, name)
            assert module.comfy_patched_weights is True
            placed[(block, name)] = label
    on_donor = {k for k, label in placed.items() if label == dt.DONOR}
    assert on_donor == set(placed) if donor_percent == 100 else set() < on_donor < set(placed), placed
    assert _site(model, 0, "q").weight.dtype == torch.float64

    for name, out in outputs.items():
        assert torch.equal(out, expected[name]), \
            f"{name}: differs from normal loading by {float((out - expected[name]).abs().max()):.3g}"
    assert torch.equal(outputs["IaD weight 0"], outputs["no IaD"])
    for name in ("IaD", "LoRA + IaD", "Lynx ref + IaD"):
        assert (outputs[name] - outputs["no IaD"]).abs().max() > 1e-3, f"{name}: no effect under the allocation"
    assert (outputs["Lynx ref + IaD"] - outputs["IaD"]).abs().max() > 1e-3, "the ref adapter had no effect"


def test_adapter_keeps_its_own_device_and_kv_are_cached_on_the_compute_device(fx, standin):
    import comfy.model_management as mm

    model = dt.load_as_distorch(lambda: af.load_model(FAMILY), dt.allocation(100))
    adapter = af.make_adapter(FAMILY).to(torch.bfloat16)   # stored in bf16, as Lynx's adapters load by default
    iad_model = af.module("iad.patching").IaDModel.wrap(adapter, "bf16")
    identity = af.module("nodes.iad_nodes").IaDIdentity.execute(iad_model, af.face_embeds()).result[0]
    patched = af.apply(model, iad_model, identity)
    assert iad_model.patcher in patched.model_patches_models()
    af.sample(patched, FAMILY, steps=STEPS)

    # Model management loaded the adapter as a model of its own, on the device it was created for, with
    # core's partial loading (it carries no allocation), and DisTorch's stand-in loaded the model.
    loaded = {id(lm.model): lm for lm in mm.current_loaded_models if lm.model is not None}
    assert loaded[id(iad_model.patcher)].device == iad_model.patcher.load_device == torch.device("cpu")
    assert loaded[id(patched)].device == model.load_device == torch.device("cpu", 0)
    routes = {(id(p), route, device) for p, route, device in standin.calls}
    assert (id(iad_model.patcher), "core", torch.device("cpu")) in routes
    assert (id(patched), "distorch", torch.device("cpu", 0)) in routes
    assert not any(id(p) == id(iad_model.patcher) and route == "distorch" for p, route, _ in standin.calls)
    assert all(p.dtype == torch.bfloat16 and not getattr(m, "comfy_cast_weights", False)
               for m in adapter.modules() for p in m.parameters(recurse=False)), "the adapter was allocated"

    # K/V: computed where the adapter sits, cached once per block where the block's query is
    # (the compute device, float32), while the block's own weights stay on the donor.
    entry = patched.object_patches["diffusion_model.blocks.0.cross_attn.forward"].entries[0]
    assert sorted(key[1] for key in entry._kv) == list(FAMILY.blocks)
    for (tokens, block, device, dtype), (k, v) in entry._kv.items():
        assert (tokens, device, dtype) == ("identity", torch.device("cpu"), torch.float32)
        assert k.device == v.device == device and k.dtype == v.dtype == torch.float32
        assert _site(model, block, "k").weight.dtype == torch.float64


def test_a_model_sampled_after_an_iad_run_gives_its_own_output(normal, standin):
    """DisTorch's ``partially_load`` calls ``unpatch_model`` only when the weight patches changed
    (``distorch_2.py:233-239``); core's calls it every time, and it restores the object patches that all
    clones share the backup of. So after a clone with object patches ran, the next clone of the same model
    runs with those patches still on the shared modules. Core restores them (the normal-loading run).

    The patches left behind must do nothing: Lynx's ref-adapter patch finds no features (they live in the
    store its own run creates), and IaD's identity patch acts only for a model that owns its adapter
    (``identity.active_passes``). So the model sampled after the IaD run gives its own output bit for bit."""
    iad_model, identity, ref_entry, expected = normal
    assert torch.equal(expected["no IaD, after the IaD runs"], expected["no IaD"]), "core must restore the patches"
    wan_patching = af.module("iad.patching.wan")
    model = dt.load_as_distorch(lambda: af.load_model(FAMILY), dt.allocation(100))
    block = model.model.diffusion_model.blocks[0]
    base = af.sample(model, FAMILY, steps=STEPS)
    af.sample(af.module("iad.patching.wan_ref").apply_reference(model, ref_entry, len(FAMILY.blocks)), FAMILY, steps=STEPS)
    after_ref = af.sample(model, FAMILY, steps=STEPS)
    assert type(block.self_attn.forward).__name__ == "WanSelfAttentionReference", "the stale patch is gone"
    assert torch.equal(after_ref, base)

    with_iad = af.sample(af.apply(model, iad_model, identity), FAMILY, steps=STEPS)
    after_iad = af.sample(model, FAMILY, steps=STEPS)
    assert isinstance(block.cross_attn.forward, wan_patching.WanCrossAttentionIdentity), "the stale patch is gone"
    assert (with_iad - base).abs().max() > 1e-3
    assert torch.equal(after_iad, base), "the identity leaked into a model sampled without IaD"


def test_what_the_stand_in_needs_is_in_this_comfyui(fx):
    """The core API the stand-in (and DisTorch2) uses exists in both lanes. ComfyUI-MultiGPU >= 2.6.0
    imports ``comfy.memory_management`` when it loads (its ``__init__.py:12``), which 0.3.75 lacks, so
    there it is 2.5.x, whose DisTorch2 allocation is the same code. On v0.2x, ``ModelPatcherDynamic``
    (DynamicVRAM) has its own ``partially_load``, which DisTorch's replacement on ``ModelPatcher`` does
    not reach: a model loaded as dynamic is loaded by core."""
    import importlib.util
    import inspect

    import comfy.model_patcher
    import comfy.ops

    from harness.paths import comfyui_version

    mp = comfy.model_patcher.ModelPatcher
    assert list(inspect.signature(mp.partially_load).parameters)[:4] == ["self", "device_to", "extra_memory",
                                                                        "force_patch_weights"]
    assert "load_weights" in inspect.signature(mp.patch_model).parameters
    assert all(hasattr(mp, name) for name in ("_load_list", "patch_weight_to_device", "model_patches_models",
                                                 "model_patches_to", "unpatch_model"))
    assert comfy.ops.CastWeightBiasOp.comfy_cast_weights is False
    model = mp(torch.nn.Sequential(comfy.ops.manual_cast.Linear(4, 4)), torch.device("cpu"), torch.device("cpu"))
    assert [len(item) for item in model._load_list()] == [5]

    version = comfyui_version().lstrip("v")
    has_memory_management = importlib.util.find_spec("comfy.memory_management") is not None
    dynamic = getattr(comfy.model_patcher, "ModelPatcherDynamic", None)
    expected = {"0.3.75": (False, False), "0.28.2": (True, True)}.get(version)
    assert expected is None or (has_memory_management, dynamic is not None) == expected, version
    if dynamic is not None:
        assert dynamic.partially_load is not mp.partially_load
