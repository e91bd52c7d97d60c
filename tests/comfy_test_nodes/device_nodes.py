"""Test-only stand-ins for a machine with several GPUs (never shipped).

- ``install_fake_devices()``: when the server's environment has ``IAD_TEST_DEVICES`` (e.g. ``cpu,cpu:0``),
  ComfyUI's device list says so. Core makes one model per device only when it lists several devices,
  and ``cpu`` and ``cpu:0`` compare unequal, so core's own multi-GPU path (fresh models from the loader,
  a thread per device, clones rebuilt at sampling) runs on a CPU-only machine. Only a test server that
  sets the variable is affected.
- ``IaDTestDeviceLog``: MODEL -> a clone that records, for every diffusion-model call while it samples,
  the device thread core ran it on, which model object ran, its cond/uncond rows, and any patched
  ``forward`` on that model that holds (``.module``) another model's module, into
  ``output/iad_probe/<name>.json``.
"""

from __future__ import annotations

import json
import os
import threading

import torch
from comfy_api.v0_0_2 import io

DEVICE_LOG_KEY = "iad_test_device_log"


def install_fake_devices() -> None:
    spec = os.environ.get("IAD_TEST_DEVICES")
    if not spec:
        return
    import comfy.model_management as mm

    devices = [torch.device(name.strip()) for name in spec.split(",") if name.strip()]
    mm.get_all_torch_devices = lambda exclude_current=False: list(devices)


def _foreign_site_patches(diffusion_model) -> list[str]:
    """Object patches installed on this model's modules that hold (``.module``) a module of another model."""
    out = []
    for name, module in diffusion_model.named_modules():
        patch = vars(module).get("forward")
        if patch is not None and hasattr(patch, "module") and patch.module is not module:
            out.append(name)
    return out


def _options(args, kwargs) -> dict:
    if isinstance(kwargs.get("transformer_options"), dict):
        return kwargs["transformer_options"]
    return next((a for a in args if isinstance(a, dict) and "cond_or_uncond" in a), {})


class _DeviceLog:
    def __init__(self, name: str):
        self.name, self.calls = name, []

    def model_call(self, executor, *args, **kwargs):
        options = _options(args, kwargs)
        device = options.get("multigpu_thread_device")
        self.calls.append({"device": None if device is None else str(device), "thread": threading.current_thread().name,
                           "model": id(executor.class_obj), "cond_or_uncond": list(options.get("cond_or_uncond") or []),
                           "foreign_site_patches": _foreign_site_patches(executor.class_obj)})
        return executor(*args, **kwargs)

    def outer_sample(self, executor, *args, **kwargs):
        import folder_paths

        self.calls = []
        try:
            return executor(*args, **kwargs)
        finally:
            folder = os.path.join(folder_paths.get_output_directory(), "iad_probe")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{self.name}.json"), "w", encoding="utf-8") as f:
                json.dump(self.calls, f)


class IaDTestDeviceLog(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDTestDeviceLog",
            display_name="IaD Test: Device Log (test-only)",
            category="IaD/testing",
            description="TEST ONLY: records which device thread and which model object ran each diffusion-model call.",
            inputs=[io.Model.Input("model", tooltip="The model to watch while it samples."),
                    io.String.Input("name", default="devices", tooltip="File name under output/iad_probe/.")],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, name: str) -> io.NodeOutput:
        import comfy.patcher_extension as pe

        log = _DeviceLog(name)
        patched = model.clone()
        patched.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, DEVICE_LOG_KEY, log.model_call)
        patched.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, DEVICE_LOG_KEY, log.outer_sample)
        return io.NodeOutput(patched)


NODES = [IaDTestDeviceLog]
