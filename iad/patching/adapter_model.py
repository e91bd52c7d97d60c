"""The adapter under ComfyUI's model management: what the ``IAD_MODEL`` socket carries.

The adapter module sits inside its own ModelPatcher, so model management loads, offloads and frees
it with the base model. A patched MODEL owns that patcher the way core's model patches own theirs
(``comfy_extras/nodes_model_patch.py``): an ``AdapterOwner`` in the clone's
``transformer_options["patches"]`` whose ``models()`` returns it, always that one patcher
(``set_additional_models`` would hand model management a new copy with every clone of the MODEL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:   # ComfyUI is imported only where a patcher is made
    import comfy.model_patcher

ADAPTER_PATCH_KEY = "iad_adapters"   # transformer_options["patches"] list that owns the adapters


@dataclass(eq=False)
class IaDModel:
    """What ``IAD_MODEL`` carries: the adapter (``iad.adapter.IdentityAdapter``) inside a
    ModelPatcher so ComfyUI's model management moves it with the base model."""

    patcher: "comfy.model_patcher.ModelPatcher"
    name: str = ""

    @classmethod
    def wrap(cls, adapter: torch.nn.Module, name: str = "") -> "IaDModel":
        import comfy.model_management
        import comfy.model_patcher

        patcher = comfy.model_patcher.ModelPatcher(
            adapter, load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device(),
        )
        return cls(patcher, name or getattr(adapter.config, "name", "") or "IaD adapter")

    @property
    def adapter(self):
        return self.patcher.model

    @property
    def config(self):
        return self.adapter.config


class AdapterOwner:
    """Owns an adapter's ModelPatcher for model management, as core's model patches do: listed in
    ``transformer_options["patches"][ADAPTER_PATCH_KEY]`` (no model calls that list), its ``models()``
    is what ``load_models_gpu`` loads with the MODEL."""

    def __init__(self, patcher):
        self.patcher = patcher

    def __deepcopy__(self, memo):
        return self

    def to(self, device_or_dtype):
        return self   # the patcher is moved by model management itself

    def models(self):
        return [self.patcher]
