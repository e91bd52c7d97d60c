"""LTX-Video and LTX-2: identity in each listed block's text cross-attention.

An object patch on ``transformer_blocks.{i}.attn2.forward`` of a ModelPatcher clone (the module
tree stays unchanged, as for Wan). In LTX-2 (``LTXAVModel``) ``attn2`` is the video stream's text
cross-attention, the same module class; the audio stream's ``audio_attn2`` and the audio<->video
attentions are never patched, so only video tokens receive the identity.
"""

from __future__ import annotations

import torch

from .block_patch import SitePatch, patch_sites
from .identity import active_passes


class LTXVCrossAttentionIdentity(SitePatch):
    """Replaces ``transformer_blocks.{i}.attn2.forward`` (LTX-Video text cross-attention)."""

    def __call__(self, x, context=None, mask=None, pe=None, transformer_options={}, **kwargs):
        active = active_passes(self.entries, transformer_options, x.shape[0])
        # attn2 never gets rotary embeddings (pe, and k_pe since v0.2x) nor a guide mask (an object, not a
        # tensor): a call with any of them is not the text cross-attention, so it runs unchanged
        if not active or pe is not None or kwargs.get("k_pe") is not None or not (mask is None or torch.is_tensor(mask)):
            return self.inner(x, context=context, mask=mask, pe=pe, transformer_options=transformer_options, **kwargs)
        import comfy.ldm.modules.attention as comfy_attention

        m = self.module
        context = x if context is None else context
        q = m.q_norm(m.to_q(x))
        k = m.k_norm(m.to_k(context))
        v = m.to_v(context)
        if mask is None:
            out = comfy_attention.optimized_attention(q, k, v, m.heads, attn_precision=m.attn_precision,
                                                      transformer_options=transformer_options)
        else:
            out = comfy_attention.optimized_attention_masked(q, k, v, m.heads, mask, attn_precision=m.attn_precision,
                                                             transformer_options=transformer_options)
        out = self._add_identity(out, q, active, self.block_index, m.heads, transformer_options, m.k_norm)
        gate_logits = getattr(m, "to_gate_logits", None)
        if gate_logits is not None:   # per-head gating (ComfyUI v0.2x, gated-attention checkpoints), as the module does
            b, t, _ = out.shape
            gates = 2.0 * torch.sigmoid(gate_logits(x))
            out = (out.view(b, t, m.heads, -1) * gates.unsqueeze(-1)).view(b, t, -1)
        return m.to_out(out)


def patch_blocks(patched, arch, adapter_blocks, entry) -> None:
    """Adds ``entry`` to the cross-attention of each of ``adapter_blocks``."""
    patch_sites(patched, adapter_blocks, entry, LTXVCrossAttentionIdentity, arch.site)
