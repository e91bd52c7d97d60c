"""HunyuanVideo and HunyuanVideo 1.5: no text cross-attention, so the identity is a residual
attention on the video tokens after each listed double and single block (1.5 has double blocks only).

``patches_replace["dit"]`` block replacements on a ModelPatcher clone (core's own mechanism for
DiT blocks). Adapter block ``i`` is double block ``i`` for ``i < depth``, else single block
``i - depth``. Single blocks see text and video as one sequence; where the video tokens sit is read
from ComfyUI (``img_slice``, v0.14+) or, on older ComfyUI, from the text length the last double
block recorded (``attention.single_block_image_tokens``).
"""

from __future__ import annotations

from .attention import residual_identity_attention, single_block_image_tokens
from .block_patch import BlockPatch, comfy_attention
from .identity import IDENTITY_CALL_OBSERVERS, active_passes


class HunyuanBlockIdentity(BlockPatch):
    """A ``patches_replace["dit"]`` entry for a HunyuanVideo double or single block: the original
    block, then ``img + weight * attention(rms(img), K_id, V_id)`` on the video tokens."""

    def __init__(self, kind: str, block_index: int, heads: int, entries: tuple, inner=None):
        self.kind, self.block_index, self.heads, self.entries, self.inner = kind, block_index, heads, tuple(entries), inner

    def __call__(self, args, extra):
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        transformer_options = args["transformer_options"]
        if self.kind == "double":
            # Single blocks see video+text as one sequence; on ComfyUI without img_slice (0.3.75) the
            # text length recorded here says where the video tokens end.
            transformer_options["iad_txt_len"] = int(out["txt"].shape[1])
        img = out["img"]
        active = active_passes(self.entries, transformer_options, img.shape[0])
        if not active:
            return out
        token_slice = single_block_image_tokens(transformer_options, img.shape[1]) if self.kind == "single" else None
        for entry, tokens, rows in active:
            k_id, v_id = entry.kv(self.block_index, img.device, img.dtype, tokens)
            img = residual_identity_attention(img, k_id, v_id, self.heads, entry.weight, rows, token_slice, comfy_attention)
            if IDENTITY_CALL_OBSERVERS:
                entry.notify(self.block_index, transformer_options, rows, tokens)
        out = dict(out)
        out["img"] = img
        return out


def patch_blocks(patched, arch, adapter_blocks, entry) -> None:
    """Adds ``entry`` to the dit replacements of ``adapter_blocks`` (composing with an earlier IaD
    Apply's). The last double block is always wrapped: it records where the text starts."""
    blocks = set(adapter_blocks)
    if any(b >= arch.double_blocks for b in blocks):
        blocks.add(arch.double_blocks - 1)
    dit = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    for block in sorted(blocks):
        kind, index = ("double", block) if block < arch.double_blocks else ("single", block - arch.double_blocks)
        name = f"{kind}_block"
        current = dit.get((name, index))
        entries = (entry,) if block in adapter_blocks else ()
        if isinstance(current, HunyuanBlockIdentity):
            patch = HunyuanBlockIdentity(kind, block, arch.num_heads, current.entries + entries, current.inner)
        else:
            patch = HunyuanBlockIdentity(kind, block, arch.num_heads, entries, current)
        patched.set_model_patch_replace(patch, "dit", name, index)
