"""Wan 2.1/2.2 (T2V, I2V, TI2V 5B): identity in each listed block's text cross-attention.

An object patch on ``blocks.{i}.cross_attn.forward`` of a ModelPatcher clone. Patching the
``forward`` attribute (not the module) keeps the module tree unchanged, so LoRA keys, lowvram
casting and weight offloading see the same modules as in the unpatched model.
"""

from __future__ import annotations

from .block_patch import BlockPatch, patch_cross_attention
from .identity import active_passes


class WanCrossAttentionIdentity(BlockPatch):
    """Replaces ``blocks.{i}.cross_attn.forward``: the block's own text (and I2V image)
    cross-attention plus ``weight * attention(q, K_id, V_id)``, before the output projection."""

    def __init__(self, module, inner, block_index: int, entries: tuple):
        self.module, self.inner, self.block_index, self.entries = module, inner, block_index, tuple(entries)

    def __call__(self, x, context, *args, transformer_options={}, **kwargs):
        active = active_passes(self.entries, transformer_options, x.shape[0])
        if not active:
            return self.inner(x, context, *args, transformer_options=transformer_options, **kwargs)
        import comfy.ldm.modules.attention as comfy_attention

        m = self.module
        heads = m.num_heads
        q = m.norm_q(m.q(x))
        img_out = None
        if hasattr(m, "k_img"):  # WanI2VCrossAttention: CLIP-vision tokens come first in context
            context_img_len = kwargs.get("context_img_len", args[0] if args else None)
            context_img = context[:, :context_img_len]
            context = context[:, context_img_len:]
            k_img = m.norm_k_img(m.k_img(context_img))
            img_out = comfy_attention.optimized_attention(q, k_img, m.v_img(context_img), heads=heads,
                                                          transformer_options=transformer_options)
        k = m.norm_k(m.k(context))
        out = comfy_attention.optimized_attention(q, k, m.v(context), heads=heads, transformer_options=transformer_options)
        if img_out is not None:
            out = out + img_out
        out = self._add_identity(out, q, active, self.block_index, heads, transformer_options, m.norm_k)
        return m.o(out)


def patch_blocks(patched, arch, adapter_blocks, entry) -> None:
    """Adds ``entry`` to the cross-attention of each of ``adapter_blocks``."""
    patch_cross_attention(patched, arch, adapter_blocks, entry, WanCrossAttentionIdentity)
