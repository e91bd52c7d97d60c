"""Patching a loaded ComfyUI video model with an IaD identity adapter.

The interface (what IaD Apply and the trainer use):
- ``apply_identity(model, iad_model, identity, weight, start_percent, end_percent, uncond_identity)``:
  a patched ModelPatcher clone (``apply.py``);
- ``IaDModel`` / ``IaDIdentity``: what the ``IAD_MODEL`` / ``IAD_IDENTITY`` sockets carry
  (``adapter_model.py``, ``identity.py``); ``UNCOND_CHOICES``: what the negative rows get;
- the identity-attention math shared with the trainer (``attention.py``) and the architecture
  detection (``arch.py``).

One file per concern:

| file | concern |
|---|---|
| ``arch.py`` | which family a loaded model is, its patch sites, adapter/model fit |
| ``attention.py`` | identity attention math, batch rows, HunyuanVideo token range |
| ``step_range.py`` | the step range: percents -> sigmas when sampling starts |
| ``identity.py`` | one applied identity: tokens, weight, uncond rows, cached K/V |
| ``adapter_model.py`` | the adapter under ComfyUI's model management |
| ``block_patch.py`` | what every block patch shares |
| ``wan.py`` / ``ltxv.py`` / ``hunyuan.py`` | each family's patch (``ltxv.py`` also LTX-2's video stream, ``hunyuan.py`` also HunyuanVideo 1.5) |
| ``apply.py`` | IaD Apply: a patched clone |
| ``wan_ref.py`` | Lynx full's ref-adapter on Wan: the one-time reference pass and the self-attention term |

No ComfyUI module is imported when the library is: the ComfyUI-facing parts import it where they
run (inside ComfyUI, or the trainer's ComfyUI).
"""

from .adapter_model import ADAPTER_PATCH_KEY, AdapterOwner, IaDModel
from .apply import FAMILY_PATCHES, apply_identity, architecture_of
from .arch import ArchInfo, UnsupportedModelError, check_adapter_fits, describe_width, detect_architecture
from .attention import (add_identity_attention, identity_attention, residual_identity_attention, rows_for,
                        single_block_image_tokens, uncond_rows)
from .identity import (IDENTITY_CALL_OBSERVERS, UNCOND_CHOICES, UNCOND_NONE, UNCOND_NULL, UNCOND_SAME, IaDIdentity,
                       IdentityEntry, uncond_mode)
from .step_range import StepGate, StepRangeResolver, gate_for, step_gate

__all__ = [
    "apply_identity", "architecture_of", "FAMILY_PATCHES", "IaDModel", "AdapterOwner", "ADAPTER_PATCH_KEY",
    "IaDIdentity", "IdentityEntry", "IDENTITY_CALL_OBSERVERS", "UNCOND_CHOICES", "UNCOND_NONE", "UNCOND_SAME",
    "UNCOND_NULL", "uncond_mode", "StepGate", "StepRangeResolver", "gate_for", "step_gate",
    "ArchInfo", "UnsupportedModelError", "check_adapter_fits", "describe_width", "detect_architecture",
    "add_identity_attention", "identity_attention", "residual_identity_attention", "rows_for",
    "single_block_image_tokens", "uncond_rows",
]
