"""The identity adapter: resampler + per-block identity K/V (+ registers, + optional decoupler).

This is the object the ``IAD_MODEL`` socket carries and the contract the attention patch relies on
(docs/architecture.md, "Contract between the adapter and the patch"; docs/design.md, section 4):

    tokens = adapter.identity_tokens(z_id)            # [B, num_tokens, token_dim]
    k, v   = adapter.block_kv(block_index, tokens)    # each [B, num_tokens + num_registers, model_dim]

and in every listed block the patch adds ``weight * attn(q, k, v)`` to the block's own text
cross-attention before its output projection, reusing the block's ``q``/``norm_q`` (and ``norm_k``
on ``k`` when ``config.identity_key_norm``).

State-dict layout (what a checkpoint holds; docs/design.md, "Checkpoint format"):

    resampler.latents [1, num_tokens, resampler_dim]     resampler.proj_in / proj_out / norm_out / layers.*
    blocks.{b}.to_k_ip.weight [model_dim, token_dim]     blocks.{b}.to_k_ip.bias [model_dim]  (kv_bias)
    blocks.{b}.to_v_ip.weight [model_dim, token_dim]     blocks.{b}.to_v_ip.bias [model_dim]  (kv_bias)
    blocks.{b}.registers [1, num_registers, token_dim]   (num_registers > 0)
    decoupler.*                                          (decoupler_kind != "none")

With ``kv_rank = r > 0`` each identity projection is factorised (LoRA-style, ``r * (token_dim +
model_dim)`` weights instead of ``token_dim * model_dim``)::

    blocks.{b}.to_k_ip.down.weight [r, token_dim]        blocks.{b}.to_k_ip.up.weight [model_dim, r]
    blocks.{b}.to_k_ip.up.bias [model_dim]  (kv_bias)    blocks.{b}.to_v_ip.* likewise

``b`` is the index of the base model's transformer block, not a position in a list.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from .decoupling import Decoupler, TrainingFreeDecoupler
from .resampler import Resampler

FORMAT_VERSION = 1
DECOUPLER_KINDS = ("none", "trained", "training_free")
KNOWN_FAMILIES = ("wan2.1", "wan2.2", "ltxv", "ltx2", "hunyuan_video", "hunyuan_video15")
# Lynx-lite normalises identity keys with a parameter-free RMS norm over the full width (eps 1e-5).
KEY_RMS_EPS = 1e-5


@dataclass
class AdapterConfig:
    """Everything needed to rebuild an :class:`IdentityAdapter` and to check it fits a base model."""

    family: str                         # base-model family: one of KNOWN_FAMILIES
    model_dim: int                      # hidden width of the patched attention (Wan 14B: 5120, 1.3B: 1536)
    token_dim: int                      # width of identity tokens = resampler output
    blocks: list[int]                   # indices of the transformer blocks that carry identity K/V
    num_tokens: int = 16                # resampler queries
    num_registers: int = 0              # learned tokens appended per block before the K/V projections
    kv_bias: bool = True                # to_k_ip / to_v_ip carry a bias
    kv_rank: int = 0                    # 0: full-rank identity K/V projections; r > 0: factorised through rank r
    embed_dim: int = 512                # face-embedding width (ArcFace)
    embedder: str = "insightface/antelopev2/glintr100"   # which recognizer produced the training embeddings
    decoupler_kind: str = "none"        # "none" | "trained" | "training_free"
    identity_key_norm: bool = True      # the patch applies the block's own norm_k to identity keys
    key_rms_norm: bool = False          # block_kv applies a parameter-free RMS norm to keys (Lynx lite)
    resampler_dim: int = 1280           # inner width of the resampler
    resampler_depth: int = 4
    resampler_heads: int = 20
    resampler_dim_head: int = 64
    resampler_ff_mult: float = 4.0
    decoupler_act_dim: int = 64         # width of z_act (trained decoupler)
    decoupler_hidden: int = 1024        # hidden width of the trained decoupler's MLPs
    decoupler_rank: int = 0             # rows of the training-free basis stored in the checkpoint
    format_version: int = FORMAT_VERSION
    name: str = ""                      # free text: where the weights came from
    extra: dict[str, Any] = field(default_factory=dict)   # free-form, JSON-serialisable notes

    def __post_init__(self) -> None:
        self.blocks = [int(b) for b in self.blocks]
        self.validate()

    def validate(self) -> None:
        problems = []
        if not isinstance(self.family, str) or not self.family:
            problems.append("family must be a non-empty string such as 'wan2.1'")
        for name in ("model_dim", "token_dim", "num_tokens", "embed_dim", "resampler_dim", "resampler_depth",
                     "resampler_heads", "resampler_dim_head", "decoupler_act_dim", "decoupler_hidden"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("num_registers", "decoupler_rank", "kv_rank"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.blocks:
            problems.append("blocks is empty: an adapter must patch at least one block")
        elif any(b < 0 for b in self.blocks) or len(set(self.blocks)) != len(self.blocks):
            problems.append(f"blocks must be distinct non-negative indices, got {self.blocks}")
        if self.decoupler_kind not in DECOUPLER_KINDS:
            problems.append(f"decoupler_kind must be one of {DECOUPLER_KINDS}, got {self.decoupler_kind!r}")
        if self.kv_rank and self.kv_rank >= min(self.token_dim, self.model_dim):
            problems.append(f"kv_rank {self.kv_rank} must be below min(token_dim, model_dim) = "
                            f"{min(self.token_dim, self.model_dim)} (0 means full rank)")
        if self.decoupler_rank > self.embed_dim:
            problems.append(f"decoupler_rank {self.decoupler_rank} exceeds embed_dim {self.embed_dim}")
        if problems:
            raise ValueError("invalid adapter configuration: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AdapterConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown adapter configuration fields {unknown} (written by a newer ComfyUI-IaD?)")
        missing = [f.name for f in fields(cls) if f.name in ("family", "model_dim", "token_dim", "blocks") and f.name not in data]
        if missing:
            raise ValueError(f"adapter configuration lacks required fields {missing}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "AdapterConfig":
        return cls.from_dict(json.loads(text))

    # Reference layouts of existing checkpoints (docs/design.md, "Lynx as a special case").
    @classmethod
    def lynx_full(cls, **overrides: Any) -> "AdapterConfig":
        base = dict(family="wan2.1", model_dim=5120, token_dim=5120, blocks=list(range(40)), num_tokens=16,
                    num_registers=16, kv_bias=True, embedder="facexlib/irse50", identity_key_norm=True,
                    key_rms_norm=False, name="Lynx full (bytedance/lynx)")
        return cls(**{**base, **overrides})

    @classmethod
    def lynx_lite(cls, **overrides: Any) -> "AdapterConfig":
        base = dict(family="wan2.1", model_dim=5120, token_dim=2048, blocks=list(range(0, 40, 2)), num_tokens=16,
                    num_registers=0, kv_bias=False, embedder="facexlib/irse50", identity_key_norm=False,
                    key_rms_norm=True, name="Lynx lite (bytedance/lynx)")
        return cls(**{**base, **overrides})


    @classmethod
    def tiny(cls, **overrides: Any) -> "AdapterConfig":
        """A small configuration for tests and generated tiny checkpoints (CPU, milliseconds)."""
        base = dict(family="wan2.1", model_dim=128, token_dim=64, blocks=[0, 1], num_tokens=4, num_registers=2,
                    resampler_dim=32, resampler_depth=2, resampler_heads=2, resampler_dim_head=16,
                    decoupler_act_dim=16, decoupler_hidden=64, name="tiny test adapter")
        return cls(**{**base, **overrides})


class LowRankLinear(nn.Module):
    """``up(down(x))``: a Linear(in, out) factorised through ``rank`` (``down`` has no bias), so it
    holds ``rank * (in + out)`` weights instead of ``in * out``."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool, operations=nn) -> None:
        super().__init__()
        self.down = operations.Linear(in_features, rank, bias=False)
        self.up = operations.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def output_linear(projection: nn.Module) -> nn.Module:
    """The Linear whose weight and bias make a projection's output (``up`` of a low-rank one): zeroing
    it makes the projection output zero."""
    return projection.up if isinstance(projection, LowRankLinear) else projection


class BlockKV(nn.Module):
    """Identity key/value projections of one block, plus its optional register tokens."""

    def __init__(self, token_dim: int, model_dim: int, bias: bool, num_registers: int, operations=nn,
                 rank: int = 0) -> None:
        super().__init__()
        if rank:
            self.to_k_ip = LowRankLinear(token_dim, model_dim, rank, bias, operations)
            self.to_v_ip = LowRankLinear(token_dim, model_dim, rank, bias, operations)
        else:
            self.to_k_ip = operations.Linear(token_dim, model_dim, bias=bias)
            self.to_v_ip = operations.Linear(token_dim, model_dim, bias=bias)
        if num_registers > 0:
            self.registers = nn.Parameter(torch.randn(1, num_registers, token_dim) / model_dim**0.5)
        else:
            self.registers = None

    @property
    def weight_param(self) -> torch.Tensor:
        """A weight of this block's projections: where (device) and how (dtype) its K/V are computed."""
        return next(self.to_k_ip.parameters())


class IdentityAdapter(nn.Module):
    """``operations``: the layer classes (``Linear``, ``LayerNorm``); ``torch.nn`` by default. The
    IaD Model Loader passes ``comfy.ops.manual_cast``: its layers cast their weights to the input's
    dtype and device per call, as ComfyUI's own models do, so model management can keep a part of
    the adapter offloaded (lowvram). The parameter names and the arithmetic are the same."""

    def __init__(self, config: AdapterConfig, operations=nn) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.resampler = Resampler(
            dim=config.resampler_dim, depth=config.resampler_depth, dim_head=config.resampler_dim_head,
            heads=config.resampler_heads, num_queries=config.num_tokens, embedding_dim=config.embed_dim,
            output_dim=config.token_dim, ff_mult=config.resampler_ff_mult, operations=operations,
        )
        self.blocks = nn.ModuleDict(
            {str(b): BlockKV(config.token_dim, config.model_dim, config.kv_bias, config.num_registers, operations,
                             config.kv_rank) for b in config.blocks}
        )
        self.decoupler: Decoupler | TrainingFreeDecoupler | None
        if config.decoupler_kind == "trained":
            self.decoupler = Decoupler(config.embed_dim, config.decoupler_act_dim, config.decoupler_hidden, operations)
        elif config.decoupler_kind == "training_free":
            self.decoupler = TrainingFreeDecoupler(torch.zeros(config.decoupler_rank, config.embed_dim))
        else:
            self.decoupler = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def random(cls, config: AdapterConfig, seed: int = 0) -> "IdentityAdapter":
        """Deterministic random weights (tests, benchmarks, tiny generated checkpoints).

        The global RNG is left untouched. K/V weights are non-zero so identity attention has an effect.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            adapter = cls(config)
            for module in adapter.modules():
                if isinstance(module, nn.LayerNorm):
                    nn.init.normal_(module.weight, 1.0, 0.02)
                    nn.init.normal_(module.bias, 0.0, 0.02)
            if isinstance(adapter.decoupler, Decoupler):
                adapter.decoupler.reset_parameters(zero_residual=False)
            elif isinstance(adapter.decoupler, TrainingFreeDecoupler) and config.decoupler_rank:
                adapter.decoupler.set_basis(torch.randn(config.decoupler_rank, config.embed_dim))
        return adapter.eval()

    @classmethod
    def from_state_dict(cls, config: AdapterConfig, state: dict[str, torch.Tensor], operations=nn) -> "IdentityAdapter":
        """Build an adapter around ``state``'s tensors (kept in their dtype, never copied into a
        randomly initialised model first); names or shapes that do not match raise ``ValueError``."""
        with torch.device("meta"):
            adapter = cls(config, operations)
        problems = describe_state_mismatch(adapter.state_dict(), state)
        if problems:
            raise ValueError(problems)
        adapter.load_state_dict(state, strict=True, assign=True)
        if isinstance(adapter.decoupler, TrainingFreeDecoupler):
            adapter.decoupler.set_basis(adapter.decoupler.basis)   # re-orthonormalise what was stored
        return adapter.eval()

    # -- the contract ---------------------------------------------------------------------------
    def identity_tokens(self, z_id: torch.Tensor) -> torch.Tensor:
        """``z_id[B, embed_dim]`` (or ``[embed_dim]``) -> ``[B, num_tokens, token_dim]``."""
        if z_id.dim() == 1:
            z_id = z_id.unsqueeze(0)
        if z_id.dim() != 2 or z_id.shape[-1] != self.config.embed_dim:
            raise ValueError(
                f"identity_tokens expects identity embeddings [B, {self.config.embed_dim}], got {tuple(z_id.shape)}: "
                f"this adapter was trained on {self.config.embed_dim}-d embeddings from {self.config.embedder}"
            )
        return self.resampler(z_id)

    def zero_identity_values(self) -> "IdentityAdapter":
        """Identity values V = 0 in every block (the value projection's output layer zeroed: ``up`` of a
        low-rank one), so an untrained adapter leaves the base model's output unchanged."""
        with torch.no_grad():
            for kv in self.blocks.values():
                values = output_linear(kv.to_v_ip)
                values.weight.zero_()
                if values.bias is not None:
                    values.bias.zero_()
        return self

    def null_tokens(self, batch: int = 1) -> torch.Tensor:
        """Tokens of an all-zero identity: what Lynx feeds its unconditional (CFG) branch."""
        weight = self.resampler.proj_in.weight
        return self.resampler(torch.zeros(batch, self.config.embed_dim, device=weight.device, dtype=weight.dtype))

    def block_kv(self, block_index: int, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity keys and values for one block, each ``[B, num_tokens + num_registers, model_dim]``.

        Registers (when present) are appended after the identity tokens, then both are projected.
        With ``config.key_rms_norm`` the keys are RMS-normalised here; the block's own ``norm_k``
        (``config.identity_key_norm``) is the patch's job because it lives in the base model.
        """
        kv = self.blocks[str(int(block_index))] if str(int(block_index)) in self.blocks else None
        if kv is None:
            raise KeyError(f"block {block_index} carries no identity K/V; this adapter patches blocks {self.config.blocks}")
        if tokens.dim() != 3 or tokens.shape[-1] != self.config.token_dim:
            raise ValueError(f"block_kv expects tokens [B, N, {self.config.token_dim}], got {tuple(tokens.shape)}")
        x = tokens.to(kv.weight_param.dtype)
        if kv.registers is not None:
            x = torch.cat([x, kv.registers.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        k, v = kv.to_k_ip(x), kv.to_v_ip(x)
        if self.config.key_rms_norm:
            k = k * torch.rsqrt(k.float().pow(2).mean(-1, keepdim=True) + KEY_RMS_EPS).to(k.dtype)
        return k, v

    def identity_embedding(self, embeddings: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Face embeddings ``[N, embed_dim]`` of one person -> one ``z_id[1, embed_dim]``.

        Uses the adapter's decoupler when it has one (fusion in the decoupled space), otherwise the
        re-normalised mean, scaled to the references' mean norm.
        """
        if self.decoupler is not None:
            return self.decoupler.fuse(embeddings, strength=strength).unsqueeze(0)
        mean = embeddings.mean(0)
        return (mean / mean.norm().clamp_min(1e-8) * embeddings.norm(dim=-1).mean()).unsqueeze(0)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        c = self.config
        return (f"family={c.family}, model_dim={c.model_dim}, token_dim={c.token_dim}, blocks={len(c.blocks)}, "
                f"tokens={c.num_tokens}+{c.num_registers} registers, decoupler={c.decoupler_kind}")


def describe_state_mismatch(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> str:
    """Human-readable list of missing / unexpected / mis-shaped tensors ('' when they match)."""
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    shapes = [f"{k}: expected {list(expected[k].shape)}, found {list(actual[k].shape)}"
              for k in sorted(set(expected) & set(actual)) if tuple(expected[k].shape) != tuple(actual[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing tensors {_abbrev(missing)}")
    if unexpected:
        parts.append(f"unexpected tensors {_abbrev(unexpected)}")
    if shapes:
        parts.append("wrong shapes: " + "; ".join(shapes[:6]) + (f" (+{len(shapes) - 6} more)" if len(shapes) > 6 else ""))
    return "; ".join(parts)


def _abbrev(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{f', ... (+{len(names) - limit} more)' if len(names) > limit else ''}]"
