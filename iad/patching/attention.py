"""Identity attention math shared by the patches (and usable by the trainer).

``attention_fn(q, k, v, heads)`` takes [B, L, heads*d] tensors and returns [B, L, heads*d];
ComfyUI's ``optimized_attention`` has that signature, and the default here is torch SDPA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

AttentionFn = Callable[..., torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, lq, c = q.shape
    d = c // heads

    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, lq, c)


def rows_for(batch: int, cond_or_uncond: Sequence[int] | None, apply_to_uncond: bool) -> list[int] | None:
    """Batch rows that get the identity. ``None`` means all rows. ComfyUI batches cond (0) and
    uncond (1) chunks of equal size; ``cond_or_uncond`` lists them in batch order."""
    if apply_to_uncond or not cond_or_uncond:
        return None
    chunk = batch // len(cond_or_uncond)
    rows = [i * chunk + j for i, kind in enumerate(cond_or_uncond) if kind == 0 for j in range(chunk)]
    return None if len(rows) == batch else rows


def uncond_rows(batch: int, cond_or_uncond: Sequence[int] | None) -> list[int]:
    """Batch rows of the unconditional (negative) chunks; empty when there are none (cfg 1, or
    no ``cond_or_uncond`` information)."""
    if not cond_or_uncond:
        return []
    chunk = batch // len(cond_or_uncond)
    return [i * chunk + j for i, kind in enumerate(cond_or_uncond) if kind != 0 for j in range(chunk)]


def _expand(t: torch.Tensor, n: int) -> torch.Tensor:
    return t if t.shape[0] == n else t[:1].expand(n, *t.shape[1:])


def identity_attention(q: torch.Tensor, k_id: torch.Tensor, v_id: torch.Tensor, heads: int,
                       attention_fn: AttentionFn = sdpa_attention) -> torch.Tensor:
    """attention(q, K_id, V_id); K/V with batch 1 are broadcast to q's batch."""
    n = q.shape[0]
    return attention_fn(q, _expand(k_id.to(q), n), _expand(v_id.to(q), n), heads)


def add_identity_attention(attn_out: torch.Tensor, q: torch.Tensor, k_id: torch.Tensor, v_id: torch.Tensor,
                           heads: int, weight: float, rows: list[int] | None,
                           attention_fn: AttentionFn = sdpa_attention) -> torch.Tensor:
    """``attn_out + weight * attention(q, K_id, V_id)`` on ``rows`` (all when None); use the result.
    Rows outside ``rows`` are untouched (bit-identical), and their queries are never computed.

    In place at inference (no extra memory). While autograd records (training) a new tensor: the
    text attention's output is saved for its backward by the fused GPU kernels (flash, efficient,
    cuDNN), and writing into it breaks that backward (seen on an H200; the CPU's math kernel saves
    no output, so the CPU tests could not show it)."""
    in_place = not torch.is_grad_enabled()
    if rows is None:
        extra = identity_attention(q, k_id, v_id, heads, attention_fn)
        return attn_out.add_(extra, alpha=weight) if in_place else attn_out.add(extra, alpha=weight)
    if not rows:
        return attn_out
    index = torch.tensor(rows, device=q.device)
    extra = identity_attention(q.index_select(0, index), k_id, v_id, heads, attention_fn).to(attn_out.dtype)
    return attn_out.index_add_(0, index, extra, alpha=weight) if in_place else attn_out.index_add(0, index, extra, alpha=weight)


def single_block_image_tokens(transformer_options: dict, seq_len: int) -> slice | None:
    """Where the video tokens sit in a HunyuanVideo single block's joint sequence.

    ComfyUI since v0.14 concatenates (text, video) and says so in ``transformer_options["img_slice"]``
    = [start, end]; older ComfyUI (0.3.75) concatenates (video, text) and says nothing, so the text
    length recorded after the last double block (``iad_txt_len``) marks where the video ends. Using
    the wrong one would read and write text tokens. ``None`` when neither is known (the whole sequence)."""
    img_slice = transformer_options.get("img_slice")
    if img_slice is not None:
        return slice(int(img_slice[0]), int(img_slice[1]))
    txt_len = transformer_options.get("iad_txt_len")
    if txt_len:
        return slice(0, seq_len - int(txt_len))
    return None


def residual_identity_attention(hidden: torch.Tensor, k_id: torch.Tensor, v_id: torch.Tensor, heads: int,
                                weight: float, rows: list[int] | None, token_slice: slice | None = None,
                                attention_fn: AttentionFn = sdpa_attention) -> torch.Tensor:
    """For blocks without text cross-attention (HunyuanVideo): ``h + weight * attn(rms(h), K, V)``
    with a parameter-free RMS-normalised query (the adapter's K/V projections carry all learned
    weights). ``token_slice`` limits it to the video tokens of a joint sequence. Returns a new tensor."""
    target = hidden if token_slice is None else hidden[:, token_slice]
    q = F.rms_norm(target, (target.shape[-1],), eps=1e-6)
    out = add_identity_attention(torch.zeros_like(target), q, k_id, v_id, heads, 1.0, rows, attention_fn)
    result = hidden.clone()
    if token_slice is None:
        return result.add_(out, alpha=weight)
    result[:, token_slice].add_(out, alpha=weight)
    return result
