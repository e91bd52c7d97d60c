"""Wan 2.1/2.2 and every Wan variant ComfyUI loads: identity in each listed block's text
cross-attention, on the video rows only.

An object patch on ``blocks.{i}.cross_attn.forward`` of a ModelPatcher clone. Patching the
``forward`` attribute (not the module) keeps the module tree unchanged, so LoRA keys, lowvram
casting and weight offloading see the same modules as in the unpatched model.

Variants (``wan_variants.py``) put reference, motion or pose tokens before or after the video in the
same sequence; the call-context wrapper (``call_context.py``) says per call which rows are the
video, and only those get the identity. The causal model's streaming blocks compute the text
cross-attention inline from a cache once it is filled; while the identity acts, its block patch
hands them no cache, so the cross-attention (and the identity) runs, and the cached text K/V stay
exactly what core computed.
"""

from __future__ import annotations

import torch

from . import call_context
from .block_patch import SitePatch, patch_sites
from .identity import active_passes


def video_row_range(options: dict, length: int) -> tuple[int, int] | None:
    """The video rows of a ``length``-token sequence, or None when every row is video."""
    rows = options.get(call_context.VIDEO_ROWS_KEY)
    if rows is None:
        return None
    start, stop = rows
    if not 0 <= start < stop <= length:
        raise RuntimeError(
            f"IaD: the video should be tokens {start}-{stop} of this Wan model's {length}-token sequence, which does not "
            "fit: this ComfyUI builds the sequence differently from the versions IaD was made for. Please report it "
            "with your ComfyUI version.")
    return None if (start, stop) == (0, length) else (start, stop)


class WanCrossAttentionIdentity(SitePatch):
    """Replaces ``blocks.{i}.cross_attn.forward``: the block's own text (and image) cross-attention
    plus ``weight * attention(q, K_id, V_id)`` on the video rows, before the output projection."""

    def __call__(self, x, context, *args, transformer_options={}, **kwargs):
        options = call_context.call_options(transformer_options)
        active = active_passes(self.entries, options, x.shape[0])
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
        rows = video_row_range(options, x.shape[1])
        if rows is None:
            out = self._add_identity(out, q, active, self.block_index, heads, options, m.norm_k)
        else:
            start, stop = rows
            video = out[:, start:stop]
            added = self._add_identity(video, q[:, start:stop], active, self.block_index, heads, options, m.norm_k)
            if added is not video:   # autograd records: a new tensor instead of the in-place add
                out = torch.cat((out[:, :start], added, out[:, stop:]), dim=1)
        return m.o(out)


class CausalBlockIdentity(SitePatch):
    """Replaces ``blocks.{i}.forward`` of the causal model (``CausalWanAttentionBlock``): while an
    identity acts in this call, the block gets no cross-attention cache, so it calls its
    ``cross_attn`` (patched above) instead of attending to the cached text K/V inline; it neither
    reads nor writes the cache then, so the cache holds exactly the text K/V core computed."""

    def __call__(self, x, e, freqs, context, context_img_len=257, kv_cache=None, crossattn_cache=None,
                 transformer_options={}):
        if crossattn_cache is not None and crossattn_cache.get("is_init") \
                and active_passes(self.entries, call_context.call_options(transformer_options), x.shape[0]):
            crossattn_cache = None
        return self.inner(x, e, freqs, context, context_img_len=context_img_len, kv_cache=kv_cache,
                          crossattn_cache=crossattn_cache, transformer_options=transformer_options)


def patch_blocks(patched, arch, adapter_blocks, entry) -> None:
    """Adds ``entry`` to the cross-attention of each of ``adapter_blocks``; the call-context wrappers
    tell the patches the video rows (and, where core drops them, the call's options)."""
    causal = arch.wan_variant is not None and arch.wan_variant.causal
    call_context.install(patched, causal)
    patch_sites(patched, adapter_blocks, entry, WanCrossAttentionIdentity, arch.site)
    if causal:
        patch_sites(patched, adapter_blocks, entry, CausalBlockIdentity, "blocks.{}".format)
