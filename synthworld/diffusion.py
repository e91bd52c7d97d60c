"""The world's tiny Wan T2V model (ComfyUI's own ``WanModel``) and an Euler sampler with optional
identity injection (the experiment's generator), that matches ComfyUI's (KSampler, ``euler``,
``simple`` schedule, flow shift ``SHIFT`` set by ModelSamplingSD3). The model is trained by the
pack's trainer, ``iad.train`` with ``mode: base`` (``build.train_wan_with_iad_train``).

ComfyUI's conventions for Wan (``model_base.WAN21``: ``ModelType.FLOW``, ``CONST`` sampling):
``x_sigma = (1 - sigma) x0 + sigma * noise``, the network gets ``timestep = 1000 * sigma`` and
predicts ``v = noise - x0``; ``denoised = x - sigma * v``; sigmas are ``shift*t / (1 + (shift-1) t)``
(ModelSamplingDiscreteFlow).
``iad.train`` trains with exactly these (through ComfyUI's own ``apply_model``), so the model samples
correctly in ComfyUI's KSampler (synthworld/nodes.py, the demo).

Identity injection (:class:`IdentityInjection`) replaces ``blocks[b].cross_attn.forward`` on the
experiment's own copy of the model with ``o(attn(q, k_txt, v_txt) + w * attn(q, norm_k(k_id), v_id))``
-- the same equation as the IaD Apply patch (iad/patching) and as ``iad.train``,
which trains the world's adapters -- so the experiment's videos are what the real nodes make.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from . import text as world_text
from ._iad import library

sdpa_attention = library("patching.attention").sdpa_attention

# The flow shift the world's model is trained and sampled with. ComfyUI's Wan default is 8 (made for
# 480p+ latents); an 8x8 latent needs far less noise emphasis, so the world uses 3 and its workflow
# sets it with ComfyUI's own ModelSamplingSD3 node (as users do for other resolutions).
SHIFT = 3.0


@dataclass(frozen=True)
class WanWorldSpec:
    dim: int = 128
    ffn_dim: int = 384
    num_layers: int = 3
    in_dim: int = 16
    out_dim: int = 16


def build_wan(spec: WanWorldSpec, seed: int):
    """A ComfyUI ``WanModel`` (T2V) with seeded PyTorch-default initialisation (float32, CPU)."""
    import_comfy = library("comfy_runtime").import_comfy

    import_comfy(cpu=True)
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WanModel(model_type="t2v", in_dim=spec.in_dim, dim=spec.dim, ffn_dim=spec.ffn_dim, out_dim=spec.out_dim,
                         num_heads=spec.dim // 128, num_layers=spec.num_layers, operations=comfy.ops.manual_cast)
        for name, p in model.named_parameters():
            if "modulation" in name:
                torch.nn.init.normal_(p, 0.0, 0.02)
            elif p.dim() >= 2:
                torch.nn.init.xavier_uniform_(p.view(p.shape[0], -1))
            elif "norm" in name and "weight" in name:
                torch.nn.init.ones_(p)
            else:
                torch.nn.init.zeros_(p)
        # zero-initialised output head and modulations: the untrained model predicts 0
        torch.nn.init.zeros_(model.head.head.weight)
    return model


def spec_dict(spec: WanWorldSpec) -> dict:
    return asdict(spec)


def shifted(t: torch.Tensor, shift: float = SHIFT) -> torch.Tensor:
    """The sampler's sigmas at flow times ``t``: iad.train's (ComfyUI's ``time_snr_shift``), the world's shift."""
    return library("train.batches").shifted_sigma(t, shift)


class IdentityInjection:
    """Context manager: while active, every adapter block's cross-attention adds
    ``weight * mask[b] * attn(q, norm_k(K_id[b]), V_id[b])`` (``mask`` 0 rows get no identity), on the
    token rows ``tokens_rows`` of the sequence (None: every token)."""

    def __init__(self, model, adapter, tokens: torch.Tensor, weight: float = 1.0, mask: torch.Tensor | None = None,
                 token_rows: slice | None = None):
        self.model, self.adapter, self.tokens, self.weight = model, adapter, tokens, float(weight)
        self.mask = mask
        self.token_rows = token_rows
        self._saved: list = []

    def __enter__(self):
        for b in self.adapter.config.blocks:
            attn = self.model.blocks[b].cross_attn
            self._saved.append((attn, attn.__dict__.get("forward")))
            attn.forward = self._forward_for(attn, b)
        return self

    def __exit__(self, *exc):
        for attn, previous in self._saved:
            if previous is None:
                del attn.forward
            else:
                attn.forward = previous
        self._saved.clear()
        return False

    def _forward_for(self, m, block_index: int):
        def forward(x, context, transformer_options={}, **kwargs):
            heads = m.num_heads
            q = m.norm_q(m.q(x))
            k = m.norm_k(m.k(context))
            out = sdpa_attention(q, k, m.v(context), heads)
            k_id, v_id = self.adapter.block_kv(block_index, self.tokens)
            if self.adapter.config.identity_key_norm:
                k_id = m.norm_k(k_id)
            extra = sdpa_attention(q, k_id.expand(q.shape[0], -1, -1), v_id.expand(q.shape[0], -1, -1), heads)
            w = self.weight if self.mask is None else self.weight * self.mask.view(-1, 1, 1).to(extra.dtype)
            if self.token_rows is not None:   # only these rows of the sequence get the identity
                keep = torch.zeros(1, q.shape[1], 1, dtype=extra.dtype, device=extra.device)
                keep[:, self.token_rows] = 1
                w = w * keep
            return m.o(out + w * extra)

        return forward


@torch.no_grad()
def sample(model, contexts: torch.Tensor, noise: torch.Tensor, steps: int = 12, cfg: float = 3.0,
           adapter=None, tokens: torch.Tensor | None = None, weight: float = 1.0,
           time_dim_concat: torch.Tensor | None = None, token_rows: slice | None = None) -> torch.Tensor:
    """Euler sampling (ComfyUI's ``euler`` + ``simple`` schedule with Wan's shift). With an adapter,
    the identity is applied to the conditional branch only (IaD Apply's default
    ``apply_to_uncond = False``); the unconditional branch gets the empty caption.
    ``time_dim_concat``: latent frames appended after the video in both branches, as Wan's
    ``time_dim_concat`` conditioning (Phantom's reference images) appends them; ``token_rows``: which
    rows of the token sequence get the identity (None: all). Runs on ``noise``'s device (the model,
    ``contexts`` and ``tokens`` must be there too)."""
    b, device = noise.shape[0], noise.device
    sigmas = shifted(torch.linspace(1, 0, steps + 1))
    empty = world_text.encode([""]).to(device).expand(b, -1, -1)
    x = noise.clone()
    ctx = torch.cat([contexts, empty])
    mask = torch.cat([torch.ones(b), torch.zeros(b)]).to(device)
    for i in range(steps):
        s = sigmas[i]
        t = torch.full((2 * b,), float(s) * 1000, device=device)
        xx = torch.cat([x, x])
        extra = {} if time_dim_concat is None else {"time_dim_concat": torch.cat([time_dim_concat, time_dim_concat])}
        if adapter is not None:
            toks = torch.cat([tokens, tokens])
            with IdentityInjection(model, adapter, toks, weight, mask, token_rows):
                v = model(xx, t, ctx, **extra)
        else:
            v = model(xx, t, ctx, **extra)
        v_c, v_u = v[:b], v[b:]
        v = v_u + cfg * (v_c - v_u)
        x = x + (sigmas[i + 1] - s) * v
    return x
