"""IaD under multi-GPU engines, in-process on tiny models (docs/patching.md, "Multi-GPU engines").

ComfyUI core's multi-GPU (v0.28.2): core makes one model per device only when it lists several
devices, so these tests give it two CPU devices (``cpu`` and ``cpu:0``, which compare unequal) by
replacing ``get_all_torch_devices`` for the test; everything else is core's own path: fresh models from
the loader, the work split over a thread per device, the clones rebuilt at sampling. raylight is refused
by name. On 0.3.75, which has no multi-GPU, the tests check that absence.
"""

from __future__ import annotations

import threading
import types
from collections import defaultdict

import pytest
import torch

from harness import apply_fixtures as af

FAMILY = af.FAMILIES["wan-t2v"]
SECOND = torch.device("cpu", 0)


def _has_multigpu() -> bool:
    import comfy.patcher_extension

    return hasattr(comfy.patcher_extension.CallbacksMP, "ON_DEEPCLONE_MULTIGPU")


@pytest.fixture(scope="module")
def fx(comfy, pack):
    return af


@pytest.fixture(scope="module")
def base(fx):
    return af.load_model(FAMILY), *af.iad_inputs(FAMILY)


@pytest.fixture
def two_devices(monkeypatch, fx):
    if not _has_multigpu():
        pytest.fail("only for a ComfyUI with multi-GPU")   # callers check the lane first
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "get_all_torch_devices", lambda exclude_current=False: [torch.device("cpu"), SECOND])
    yield
    mm.unload_all_models()


def _work_units(model, max_gpus: int = 2):
    """ComfyUI's MultiGPU CFG Split node, as a graph runs it."""
    import comfy_extras.nodes_multigpu as nodes_multigpu

    return nodes_multigpu.MultiGPUCFGSplitNode.execute(model, max_gpus).result[0]


class ThreadLog:
    """Which threads call the text cross-attention query of which model (the main one, or a device clone)."""

    def __init__(self, models: dict):
        self.calls = defaultdict(set)
        self.handles = []
        for name, diffusion_model in models.items():
            for block in FAMILY.blocks:
                self.handles.append(diffusion_model.blocks[block].cross_attn.q.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, args, out):
            self.calls[name].add(threading.current_thread().name)
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("order", ["iad_then_split", "split_then_iad"])
def test_each_device_computes_the_identity_with_its_own_model_and_matches_one_device(fx, base, request, order):
    if not _has_multigpu():
        _check_no_multigpu_in_this_comfyui()
        return
    request.getfixturevalue("two_devices")
    model, iad_model, identity = base
    single = af.sample(af.apply(model, iad_model, identity), FAMILY, steps=2, cfg=3.0)
    without = af.sample(_work_units(model), FAMILY, steps=2, cfg=3.0)
    if order == "iad_then_split":
        split = _work_units(af.apply(model, iad_model, identity))
    else:
        split = af.apply(_work_units(model), iad_model, identity)
    clones = split.get_additional_models_with_key("multigpu")
    assert [c.load_device for c in clones] == [SECOND] and clones[0].model is not split.model
    log = ThreadLog({"main": split.model.diffusion_model, "clone": clones[0].model.diffusion_model})
    entry = split.object_patches[f"diffusion_model.blocks.{FAMILY.blocks[0]}.cross_attn.forward"].entries[0]
    try:
        out = af.sample(split, FAMILY, steps=2, cfg=3.0)
    finally:
        log.close()
    # Both devices ran, and neither computed with the other's weights.
    assert log.calls["main"] and log.calls["clone"], dict(log.calls)
    assert not log.calls["main"] & log.calls["clone"], f"a thread used both models' modules: {dict(log.calls)}"
    # One adapter; K/V are cached per (block, device of the call, dtype). CPU tensors carry no device index,
    # so both fake devices share one entry per block here; on GPUs each device gets its own.
    assert set(entry._kv) == {("identity", b, torch.device("cpu"), torch.float32) for b in FAMILY.blocks}
    # Same video as one device (cond and uncond go through the model separately here, hence not bit for
    # bit), and the identity acts.
    assert torch.allclose(out, single, atol=1e-4, rtol=1e-4), (out - single).abs().max()
    assert (out - without).abs().max() > 1e-2
    assert torch.equal(af.sample(split, FAMILY, steps=2, cfg=3.0), out), "a second run gives the same video"


def test_weight_zero_under_the_split_is_bit_identical_to_no_identity(fx, base, request):
    if not _has_multigpu():
        _check_no_multigpu_in_this_comfyui()
        return
    request.getfixturevalue("two_devices")
    model, iad_model, identity = base
    split = _work_units(model)
    assert af.apply(split, iad_model, identity, weight=0.0) is split
    plain = af.sample(split, FAMILY, steps=2, cfg=3.0)
    assert torch.equal(af.sample(_work_units(af.apply(model, iad_model, identity, weight=0.0)), FAMILY, steps=2, cfg=3.0),
                       plain)


def test_a_forward_replaced_before_iad_that_cannot_follow_the_clone_is_refused_by_name(fx, base, request):
    if not _has_multigpu():
        _check_no_multigpu_in_this_comfyui()
        return
    request.getfixturevalue("two_devices")
    model, iad_model, identity = base
    key = f"diffusion_model.blocks.{FAMILY.blocks[0]}.cross_attn.forward"
    other = model.clone()
    original = other.get_model_object(key)
    other.add_object_patch(key, lambda *a, **k: original(*a, **k))   # another pack's patch, bound to this model
    patched = af.apply(other, iad_model, identity)
    errors = af.module("iad.patching").UnsupportedModelError
    with pytest.raises(errors, match=r"cannot follow the model onto cpu:0: `diffusion_model\.blocks\.0\.cross_attn\.forward`"):
        _work_units(patched)


def _check_no_multigpu_in_this_comfyui():
    """0.3.75: no multi-GPU callbacks, no MultiGPU node, and IaD registers nothing for them."""
    import importlib.util

    import comfy.patcher_extension

    assert not hasattr(comfy.patcher_extension.CallbacksMP, "ON_MATCH_MULTIGPU_CLONES")
    assert importlib.util.find_spec("comfy_extras.nodes_multigpu") is None
    model, iad_model, identity = af.load_model(FAMILY), *af.iad_inputs(FAMILY)
    patched = af.apply(model, iad_model, identity)
    follow = af.module("iad.patching.engines").rebind_site_patches
    assert all(follow not in callbacks for group in patched.callbacks.values() for callbacks in group.values())


# -- raylight: refused by name --------------------------------------------------------------------------
def _raylight_stand_ins(model):
    """A patcher class as raylight's FSDP/USP workers make it, and raylight's injected ``forward_orig``
    (USP), each defined in a module named like raylight's."""
    patcher_cls = types.new_class("FSDPModelPatcher", (type(model),))
    patcher_cls.__module__ = "raylight.comfy_dist.model_patcher"

    def usp_dit_forward(self, *args, **kwargs):
        raise AssertionError("never called: refused before sampling")
    usp_dit_forward.__module__ = "raylight.diffusion_models.wan.xdit_context_parallel"
    return patcher_cls, usp_dit_forward


def test_a_model_run_by_raylight_is_refused_by_name_in_iad_apply_and_lynx(fx, base, monkeypatch):
    model, iad_model, identity = base
    patcher_cls, usp_forward = _raylight_stand_ins(model)
    ray_model = model.clone()
    ray_model.__class__ = patcher_cls
    apply_node = af.module("nodes.iad_nodes").IaDApply
    lynx = af.module("nodes.lynx_nodes")
    with pytest.raises(ValueError, match=r"^IaD Apply: this model is run by raylight \(FSDPModelPatcher\)"):
        apply_node.execute(ray_model, iad_model, identity, 1.0, 0.0, 1.0, "none")
    with pytest.raises(ValueError, match=r"^IaD Lynx Ref Adapter: this model is run by raylight"):
        lynx.IaDLynxRefAdapter._wan_t2v(ray_model)
    # USP injects its forward into the diffusion model instance (the patcher stays core's class).
    diffusion_model = model.model.diffusion_model
    monkeypatch.setattr(diffusion_model, "forward_orig", types.MethodType(usp_forward, diffusion_model), raising=False)
    with pytest.raises(ValueError, match=r"^IaD Apply: this model is run by raylight \(ModelPatcher"):
        apply_node.execute(model, iad_model, identity, 1.0, 0.0, 1.0, "none")
    monkeypatch.undo()
    assert af.apply(model, iad_model, identity) is not model   # the same model without raylight's marks is accepted
