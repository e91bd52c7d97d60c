"""An in-process, CPU stand-in of ComfyUI-MultiGPU's DisTorch2 allocation (pollockjj/ComfyUI-MultiGPU,
``distorch_2.py``, read at a38cbda, v2.6.3), written here from what that code does, not copied.

What DisTorch2 does, and what this reproduces (the file:line are in ComfyUI-MultiGPU):

- Its loader nodes make ``mm.get_torch_device()`` return the chosen compute device while the wrapped
  loader runs, then restore it (``wrappers.py:87-128``, ``__init__.py:280-289``), and tag the loaded
  BaseModel with ``_distorch_v2_meta = {"full_allocation": "<expert>#<compute>"}`` (``wrappers.py:118-120``).
  ``load_as_distorch`` does the same around ComfyUI's own loader.
- ``mm.load_models_gpu`` is replaced (``distorch_2.py:39-207``). For what IaD relies on it does what
  core does: it loads each model plus ``model_patches_models()`` (and whatever ``model_patches_to`` would
  return, which for core's ModelPatcher is nothing), each as its own ``LoadedModel`` on its own
  ``load_device``, through ``LoadedModel.model_load``. Only the eviction and memory arithmetic differ,
  and on the CPU both do nothing, so core's function stands in for it.
- ``ModelPatcher.partially_load`` is replaced (``distorch_2.py:211-327``); an untagged model (IaD's
  adapter, Lynx's ref layers) goes to core's own. For a tagged one: unpatch if the weight patches
  changed, ``patch_model(load_weights=False)`` (object patches applied, no weights loaded), then the
  block assignment (``analyze_safetensor_loading``, ``:355-576``): modules of ``_load_list()`` that have a
  ``bias`` attribute and hold at least 0.01 % of the model are given, from the tail of the model, to
  the first device (in sorted order, cpu last) whose quota still fits them; the rest go to the compute
  device. Then per module, largest first: ``.to(compute)``, LoRA patches applied there, and if its
  device is not the compute device ``.to(that device)`` and ``comfy_cast_weights = True``; always
  ``comfy_patched_weights = True``. A module already patched is only moved where it belongs. ``model.device = compute``.

The allocation here is DisTorch's ratio expert string ("dev,N%;dev,M%", ``:656-702``): each device gets
that share of the model's bytes (DisTorch turns it into a fraction of each device's memory and back,
rounded to 4 decimals; the round trip is left out). Weight wrapper patches (extended into the module's
``weight_function`` by DisTorch) are refused: nothing in these tests makes them.

The machine has only a CPU, so devices are labels with a placement: the compute device is
``torch.device("cpu", 0)`` (a different ``torch.device`` from the ``"cpu"`` that IaD's adapter is
loaded on, as on a GPU machine the adapter stays on the default GPU while DisTorch computes on
another); the donor ``"cpu"`` stores its modules' weights in float64, a format the model never computes
in. A donor weight that were used without ComfyUI's cast to the input would raise a dtype mismatch in
a matmul (or turn an elementwise result into float64 and change its bits), as a weight left on another
GPU raises a device mismatch. Cast to the compute dtype, float32 -> float64 -> float32 is exact.
"""

from __future__ import annotations

import torch

META = "_distorch_v2_meta"
COMPUTE = "cpu:0"
DONOR = "cpu"
PLACEMENT = {COMPUTE: (torch.device("cpu", 0), None), DONOR: (torch.device("cpu"), torch.float64)}


def allocation(donor_percent: int) -> str:
    """DisTorch2's ``full_allocation`` for ``donor_percent`` % of the model on the donor, the rest computing."""
    return f"{COMPUTE},{100 - donor_percent}%;{DONOR},{donor_percent}%#{COMPUTE}"


def load_as_distorch(load, full_allocation: str):
    """``load()`` (a ComfyUI loader call) as a DisTorch2 loader node runs it: the model's load device
    is the compute device, and its BaseModel carries the allocation."""
    import comfy.model_management as mm

    original = mm.get_torch_device
    mm.get_torch_device = lambda: PLACEMENT[COMPUTE][0]
    try:
        model = load()
    finally:
        mm.get_torch_device = original
    setattr(model.model, META, {"full_allocation": full_allocation})
    return model


def _modules(patcher):
    """``(bytes, name, module)`` of each ``_load_list()`` entry (core's 5-tuples in both lanes)."""
    return [(item[-4], item[-3], item[-2]) for item in patcher._load_list()]


def assign_blocks(patcher, full_allocation: str) -> dict[str, str]:
    """Device label of every module of ``_load_list()``, as ``analyze_safetensor_loading`` decides it."""
    expert, compute = full_allocation.split("#", 1)
    shares = {}
    for part in expert.split(";"):
        label, percent = part.split(",")
        shares[label] = float(percent.rstrip("%"))
    modules = _modules(patcher)
    total = sum(size for size, _, _ in modules)
    quotas = {label: share / sum(shares.values()) * total for label, share in shares.items()}
    order = sorted(quotas, key=lambda label: (label == "cpu", label))
    assigned = {name: compute for _, name, _ in modules}
    for size, name, module in reversed(modules):
        if size < total * 1e-4 or not hasattr(module, "bias"):
            continue
        label = next((d for d in order if quotas[d] >= size), compute)
        quotas[label] -= size if label in quotas else 0
        assigned[name] = label
    return assigned


class DisTorchStandIn:
    """Replaces ``ModelPatcher.partially_load`` for the test (``monkeypatch``) and records each call:
    ``calls`` holds ``(patcher, "distorch" | "core", device_to)``, ``assigned`` the last assignment."""

    def __init__(self, monkeypatch):
        import comfy.model_patcher

        self.calls: list = []
        self.assigned: dict[str, str] = {}
        self._analysed: dict[int, dict[str, str]] = {}
        self.original = comfy.model_patcher.ModelPatcher.partially_load
        stand_in = self

        def partially_load(patcher, device_to, extra_memory=0, full_load=False, force_patch_weights=False, **kwargs):
            return stand_in.partially_load(patcher, device_to, extra_memory, force_patch_weights)

        monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "partially_load", partially_load)

    def partially_load(self, patcher, device_to, extra_memory, force_patch_weights):
        meta = getattr(patcher.model, META, None)
        if meta is None:
            self.calls.append((patcher, "core", device_to))
            return self.original(patcher, device_to, extra_memory, force_patch_weights)
        self.calls.append((patcher, "distorch", device_to))
        assert not patcher.weight_wrapper_patches, "the stand-in does not reproduce weight wrapper patches"
        model = patcher.model
        uuid = getattr(model, "current_weight_patches_uuid", None)
        changed = uuid is not None and (uuid != patcher.patches_uuid or force_patch_weights)
        if changed:
            patcher.unpatch_model(patcher.offload_device, unpatch_weights=True)
        patcher.patch_model(load_weights=False)
        full_allocation = meta["full_allocation"]
        compute = full_allocation.split("#", 1)[1]
        # DisTorch analyses again for each new patcher, on the same module sizes, so with the same result.
        # The donor's float64 storage here doubles its modules' sizes: the first analysis of a model is kept.
        if id(model) not in self._analysed:
            self._analysed[id(model)] = assign_blocks(patcher, full_allocation)
        self.assigned = self._analysed[id(model)]
        for size, name, module in sorted(_modules(patcher), key=lambda m: (m[0], m[1]), reverse=True):
            label = self.assigned.get(name, compute)
            if not changed and getattr(module, "comfy_patched_weights", False) is True:
                # DisTorch moves such a module to its device (:264-278); one allocation per model here,
                # so it is already there.
                assert placement_of(module) == label, name
                continue
            module.to(device_to)
            for suffix in ("weight", "bias"):
                if f"{name}.{suffix}" in patcher.patches:
                    patcher.patch_weight_to_device(f"{name}.{suffix}", device_to=device_to)
            if label != compute:
                module.to(*PLACEMENT[label])
                module.comfy_cast_weights = True
            module.comfy_patched_weights = True
        model.current_weight_patches_uuid = patcher.patches_uuid
        model.device = device_to
        return 0


def placement_of(module) -> str:
    """The label a module's own weights are stored at (float64: the donor)."""
    params = list(module.parameters(recurse=False))
    return DONOR if params and params[0].dtype == torch.float64 else COMPUTE
