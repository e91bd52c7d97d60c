"""Architecture detection and identity-attention math for patching a loaded video model.

ComfyUI-free: the node glue (``nodes/_patching.py``) and the trainer share this math, so a
trained adapter sees exactly the computation it was trained with.
"""

from .arch import ArchInfo, UnsupportedModelError, check_adapter_fits, describe_width, detect_architecture
from .attention import (add_identity_attention, identity_attention, residual_identity_attention, rows_for,
                        single_block_image_tokens, uncond_rows)
from .gating import StepGate

__all__ = [
    "ArchInfo", "UnsupportedModelError", "check_adapter_fits", "describe_width", "detect_architecture",
    "add_identity_attention", "identity_attention", "residual_identity_attention", "rows_for",
    "single_block_image_tokens", "uncond_rows", "StepGate",
]
