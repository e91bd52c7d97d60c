"""A stand-in for what GGUF loaders (city96's ComfyUI-GGUF) hand ComfyUI: ``custom_operations``
whose Linear layers keep their weights quantized and dequantize them on every call, loaded through
``comfy.sd.load_diffusion_model_state_dict(sd, model_options={"custom_operations": ops})``.

GGUF stores block formats (Q8_0, Q4_K, ...) in a tensor subclass; this stand-in stores int8 rows
with one fp32 scale per row (``<layer>.int8_scale``), which is enough for what a patch on top of
such a base depends on: the base's weights are not floating-point tensors of the compute dtype, so
anything that reads them instead of calling the layer breaks, and anything that writes them would
show. The GGUF node pack itself cannot be installed here (it is not on the package index).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCALE_SUFFIX = "int8_scale"


def quantize_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(quantized, dequantized): every 2-D ``.weight`` (the Linear layers) as int8 rows with a per-row
    scale; the dequantized copy is the same model in fp32, for comparison."""
    quantized, dequantized = {}, {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 2:
            scale = (value.abs().amax(dim=1).clamp_min(1e-12) / 127.0).float()
            rows = torch.round(value / scale[:, None]).clamp(-127, 127).to(torch.int8)
            quantized[key], quantized[key[:-len("weight")] + SCALE_SUFFIX] = rows, scale
            dequantized[key] = rows.float() * scale[:, None]
        else:
            quantized[key] = dequantized[key] = value
    return quantized, dequantized


def dequantizing_ops():
    """The ops class (imports comfy, so call it after ComfyUI is importable)."""
    import comfy.ops

    class DequantizingOps(comfy.ops.manual_cast):
        class Linear(comfy.ops.manual_cast.Linear):
            def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
                torch.nn.Module.__init__(self)      # no float weights are allocated: they arrive quantized
                self.in_features, self.out_features = in_features, out_features
                self.weight = self.bias = self.int8_scale = None

            def reset_parameters(self):
                return None

            def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs):
                for name in ("weight", "bias", SCALE_SUFFIX):
                    value = state_dict.get(prefix + name)
                    if value is not None:
                        setattr(self, name, torch.nn.Parameter(value, requires_grad=False))
                    elif name != "bias":
                        missing_keys.append(prefix + name)

            def forward_comfy_cast_weights(self, input):
                weight = self.weight.to(input.device, input.dtype) * self.int8_scale.to(input.device, input.dtype)[:, None]
                bias = None if self.bias is None else self.bias.to(input.device, input.dtype)
                return F.linear(input, weight, bias)

            def forward(self, input, *args, **kwargs):
                return self.forward_comfy_cast_weights(input)

    return DequantizingOps
