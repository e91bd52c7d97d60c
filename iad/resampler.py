"""Perceiver identity-token resampler: one identity vector -> N tokens of the video model's width.

Learned queries ("latents") cross-attend to the projected identity embedding (and to themselves),
followed by a feed-forward layer, ``depth`` times; a final projection and LayerNorm give tokens of
width ``output_dim``. The parameter names and shapes are the IP-Adapter/Lynx resampler layout
(``latents``, ``proj_in``, ``proj_out``, ``norm_out``, ``layers.{i}.0.{norm1,norm2,to_q,to_kv,to_out}``,
``layers.{i}.1.{0,1,3}``) so a Lynx ``resampler.safetensors`` loads by prefixing ``resampler.``
(docs/design.md, "Lynx as a special case").

``operations`` names the layer classes (``Linear``, ``LayerNorm``): ``torch.nn`` by default; inside
ComfyUI the loader passes ``comfy.ops.manual_cast``, whose layers cast their weights to the input's
dtype and device per call, as ComfyUI's own models do (docs/architecture.md, "Adapter layers").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerceiverAttention(nn.Module):
    """Queries attend to [inputs ; queries]: the queries can also exchange information."""

    def __init__(self, dim: int, dim_head: int, heads: int, operations=nn) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm1 = operations.LayerNorm(dim)   # normalises the inputs
        self.norm2 = operations.LayerNorm(dim)   # normalises the queries
        self.to_q = operations.Linear(dim, inner, bias=False)
        self.to_kv = operations.Linear(dim, 2 * inner, bias=False)
        self.to_out = operations.Linear(inner, dim, bias=False)

    def forward(self, inputs: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        inputs, queries = self.norm1(inputs), self.norm2(queries)
        b, n_q, _ = queries.shape
        q = self.to_q(queries)
        k, v = self.to_kv(torch.cat([inputs, queries], dim=1)).chunk(2, dim=-1)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        # softmax in float32: the resampler often runs in fp16/bf16 next to the video model.
        out = F.scaled_dot_product_attention(heads(q).float(), heads(k).float(), heads(v).float())
        out = out.to(q.dtype).transpose(1, 2).reshape(b, n_q, -1)
        return self.to_out(out)


def _feed_forward(dim: int, mult: float, operations=nn) -> nn.Sequential:
    inner = int(dim * mult)
    # Indices 0, 1, 3 carry weights: the layout Lynx/IP-Adapter checkpoints use.
    return nn.Sequential(operations.LayerNorm(dim), operations.Linear(dim, inner, bias=False), nn.GELU(),
                         operations.Linear(inner, dim, bias=False))


class Resampler(nn.Module):
    """``forward(x[B, L, embedding_dim]) -> [B, num_queries, output_dim]`` (L = 1 for one identity vector)."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        dim_head: int,
        heads: int,
        num_queries: int,
        embedding_dim: int,
        output_dim: int,
        ff_mult: float = 4,
        operations=nn,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.output_dim = output_dim
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = operations.Linear(embedding_dim, dim)
        self.proj_out = operations.Linear(dim, output_dim)
        self.norm_out = operations.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads, operations), _feed_forward(dim, ff_mult, operations)])
            for _ in range(depth)
        )

    @property
    def num_queries(self) -> int:
        return int(self.latents.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[-1] != self.embedding_dim:
            raise ValueError(
                f"the resampler expects identity embeddings of shape [B, {self.embedding_dim}] or "
                f"[B, L, {self.embedding_dim}], got {tuple(x.shape)}"
            )
        x = self.proj_in(x.to(self.proj_in.weight.dtype))
        latents = self.latents.expand(x.shape[0], -1, -1)
        for attention, feed_forward in self.layers:
            latents = latents + attention(x, latents)
            latents = latents + feed_forward(latents)
        return self.norm_out(self.proj_out(latents))
