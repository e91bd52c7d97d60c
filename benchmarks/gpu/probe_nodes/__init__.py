"""The GPU check's measuring node (a custom-node folder the check links into its own server only;
never shipped, never registered by the pack).

``IaDGpuCheckProbe``: MODEL -> a clone that, while it samples, times every step's noise prediction
(all its model calls; the device synchronised before and after), counts the diffusion-model calls of
each step (one per context window) and reads three kinds of memory, written to
``output/iad_gpu_probe/<name>.json``:

- ``torch.cuda.max_memory_allocated`` from the first step to the end of sampling (the peak statistics
  reset when the first step starts): torch's caching allocator only. Under ComfyUI v0.28.2's dynamic
  VRAM (comfy-aimdo) the diffusion model's weights live in aimdo's own device memory, which torch's
  allocator never sees: this peak is activations, cast buffers and what loads as a plain ModelPatcher
  (the IaD and Lynx adapters);
- the device's used memory (``torch.cuda.mem_get_info``: total - free, all allocators) after every
  step, its largest value: weights included, whichever allocator holds them;
- the models ComfyUI holds on the device when the first step starts (``current_loaded_models``, each
  with its ``model_loaded_memory``), and whether dynamic VRAM is on.
"""

from __future__ import annotations

import json
import os
import time

import torch
from comfy_api.v0_0_2 import ComfyExtension, io

PROBE_KEY = "iad_gpu_check_probe"


def _sync() -> None:
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)


def _dynamic_vram() -> bool:
    import comfy.memory_management

    return bool(getattr(comfy.memory_management, "aimdo_enabled", False))


def _resident_models() -> list[dict]:
    """The models ComfyUI holds on a device: class, device, bytes loaded there (any allocator)."""
    import comfy.model_management as mm

    out = []
    for loaded in list(mm.current_loaded_models):
        patcher = loaded.model
        if patcher is None:
            continue
        out.append({"model": type(getattr(patcher, "model", patcher)).__name__, "device": str(loaded.device),
                    "loaded_bytes": int(loaded.model_loaded_memory())})
    return out


class _Probe:
    def __init__(self, name: str):
        self.name = name
        self.reset()

    def reset(self):
        self.steps, self.calls, self.allocated_at_first_step = [], [], None
        self.device_used_peak, self.resident_at_first_step = None, None

    def predict_noise(self, executor, *args, **kwargs):
        cuda = torch.cuda.is_available()
        if not self.steps:
            self.resident_at_first_step = _resident_models()
            if cuda:
                _sync()
                self.allocated_at_first_step = sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count()))
                for index in range(torch.cuda.device_count()):
                    torch.cuda.reset_peak_memory_stats(index)
        self.calls.append(0)
        _sync()
        start = time.perf_counter()
        out = executor(*args, **kwargs)
        _sync()
        self.steps.append(time.perf_counter() - start)
        if cuda:   # after the timing: mem_get_info asks the driver
            used = [total - free for free, total in (torch.cuda.mem_get_info(i) for i in range(torch.cuda.device_count()))]
            self.device_used_peak = used if self.device_used_peak is None else list(map(max, self.device_used_peak, used))
        return out

    def model_call(self, executor, *args, **kwargs):
        if self.calls:
            self.calls[-1] += 1
        return executor(*args, **kwargs)

    def outer_sample(self, executor, *args, **kwargs):
        import folder_paths

        self.reset()
        try:
            return executor(*args, **kwargs)
        finally:
            peak = None
            if torch.cuda.is_available():
                peak = [torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())]
            folder = os.path.join(folder_paths.get_output_directory(), "iad_gpu_probe")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{self.name}.json"), "w", encoding="utf-8") as f:
                json.dump({"steps_s": self.steps, "model_calls_per_step": self.calls, "peak_bytes_per_device": peak,
                           "allocated_at_first_step": self.allocated_at_first_step,
                           "device_used_peak_bytes_per_device": self.device_used_peak,
                           "resident_at_first_step": self.resident_at_first_step, "dynamic_vram": _dynamic_vram()}, f)


class IaDGpuCheckProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDGpuCheckProbe",
            display_name="IaD GPU check: probe (measurement only)",
            category="IaD/testing",
            description="MEASUREMENT ONLY: times each sampling step, counts model calls, reads peak CUDA memory.",
            inputs=[io.Model.Input("model", tooltip="The model to measure while it samples."),
                    io.String.Input("name", default="probe", tooltip="File name under output/iad_gpu_probe/.")],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, name: str) -> io.NodeOutput:
        import comfy.patcher_extension as pe

        probe = _Probe(name)
        patched = model.clone()
        patched.add_wrapper_with_key(pe.WrappersMP.PREDICT_NOISE, PROBE_KEY, probe.predict_noise)
        patched.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, PROBE_KEY, probe.model_call)
        patched.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, PROBE_KEY, probe.outer_sample)
        return io.NodeOutput(patched)


class GpuCheckNodes(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [IaDGpuCheckProbe]


async def comfy_entrypoint() -> GpuCheckNodes:
    return GpuCheckNodes()
