"""Random-weight files in Lynx's released format (bytedance/lynx), built from the documented layout.

The names and shapes are written out here from docs/lynx.md (not taken from iad.lynx, which is
what the tests check):

resampler.safetensors (IP-Adapter Perceiver ``Resampler``)::

    latents [1, Q, D]            proj_in.weight [D, 512]    proj_in.bias [D]
    proj_out.weight [O, D]       proj_out.bias [O]          norm_out.weight/bias [O]
    layers.{l}.0.norm1.weight/bias [D]     layers.{l}.0.norm2.weight/bias [D]
    layers.{l}.0.to_q.weight [H*64, D]     layers.{l}.0.to_kv.weight [2*H*64, D]
    layers.{l}.0.to_out.weight [D, H*64]
    layers.{l}.1.0.weight/bias [D]         layers.{l}.1.1.weight [4D, D]    layers.{l}.1.3.weight [D, 4D]

ip_layers.safetensors (``nn.ModuleList`` of processors, entry j):

    full: {j}.to_k_ip.weight [M, O] {j}.to_k_ip.bias [M] {j}.to_v_ip.* likewise, {j}.registers [1, R, O]
    lite: {j}.to_k_ip.weight [M, O] {j}.to_v_ip.weight [M, O]          (entry j patches block 2j)

Released: D=1280, H=20, Q=16, depth 4, M=5120; full O=5120, 40 entries, R=16; lite O=2048, 20 entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import math

import torch
import torch.nn.functional as F
from safetensors.torch import save_file


@dataclass(frozen=True)
class LynxSpec:
    variant: str = "full"     # "full" | "lite"
    dim: int = 128            # resampler width D
    heads: int = 2            # resampler heads (64 wide)
    depth: int = 2
    queries: int = 4
    embed: int = 512
    output: int = 128         # token width O
    model_dim: int = 128      # base-model width M
    entries: int = 2          # processors in ip_layers
    registers: int = 4        # full only
    seed: int = 0


RELEASED_FULL = LynxSpec("full", dim=1280, heads=20, depth=4, queries=16, output=5120, model_dim=5120, entries=40, registers=16)
RELEASED_LITE = LynxSpec("lite", dim=1280, heads=20, depth=4, queries=16, output=2048, model_dim=5120, entries=20, registers=0)


def resampler_shapes(s: LynxSpec) -> dict[str, tuple[int, ...]]:
    inner = s.heads * 64
    shapes = {
        "latents": (1, s.queries, s.dim),
        "proj_in.weight": (s.dim, s.embed), "proj_in.bias": (s.dim,),
        "proj_out.weight": (s.output, s.dim), "proj_out.bias": (s.output,),
        "norm_out.weight": (s.output,), "norm_out.bias": (s.output,),
    }
    for layer in range(s.depth):
        p = f"layers.{layer}."
        shapes[p + "0.norm1.weight"] = shapes[p + "0.norm1.bias"] = (s.dim,)
        shapes[p + "0.norm2.weight"] = shapes[p + "0.norm2.bias"] = (s.dim,)
        shapes[p + "0.to_q.weight"] = (inner, s.dim)
        shapes[p + "0.to_kv.weight"] = (2 * inner, s.dim)
        shapes[p + "0.to_out.weight"] = (s.dim, inner)
        shapes[p + "1.0.weight"] = shapes[p + "1.0.bias"] = (s.dim,)
        shapes[p + "1.1.weight"] = (4 * s.dim, s.dim)
        shapes[p + "1.3.weight"] = (s.dim, 4 * s.dim)
    return shapes


def ip_layer_shapes(s: LynxSpec) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for j in range(s.entries):
        for proj in ("to_k_ip", "to_v_ip"):
            shapes[f"{j}.{proj}.weight"] = (s.model_dim, s.output)
            if s.variant == "full":
                shapes[f"{j}.{proj}.bias"] = (s.model_dim,)
        if s.variant == "full":
            shapes[f"{j}.registers"] = (1, s.registers, s.output)
    return shapes


def _random(shapes: dict[str, tuple[int, ...]], generator: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for name, shape in shapes.items():
        if name.endswith("bias"):
            t = 0.05 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:  # LayerNorm scales
            t = 1.0 + 0.05 * torch.randn(shape, generator=generator)
        elif name == "latents" or name.endswith("registers"):
            t = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
        else:
            t = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
        out[name] = t.contiguous()
    return out


def lynx_tensors(spec: LynxSpec) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(spec.seed)
    return _random(resampler_shapes(spec), g), _random(ip_layer_shapes(spec), g)


def write_lynx(folder: Path, spec: LynxSpec, dtype: torch.dtype = torch.float32) -> Path:
    """``folder/resampler.safetensors`` + ``folder/ip_layers.safetensors`` with seeded random weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    resampler, ip_layers = lynx_tensors(spec)
    save_file({k: v.to(dtype) for k, v in resampler.items()}, str(folder / "resampler.safetensors"))
    save_file({k: v.to(dtype) for k, v in ip_layers.items()}, str(folder / "ip_layers.safetensors"))
    return folder


def reference_resampler(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, depth: int) -> torch.Tensor:
    """Lynx's Resampler written out from its equations (IP-Adapter Perceiver)."""
    ln = lambda t, p: F.layer_norm(t, t.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-5)  # noqa: E731
    x = x @ sd["proj_in.weight"].T + sd["proj_in.bias"]                     # [B, 1, D]
    lat = sd["latents"].expand(x.shape[0], -1, -1)
    for l in range(depth):
        p = f"layers.{l}."
        xi, li = ln(x, p + "0.norm1"), ln(lat, p + "0.norm2")
        q = li @ sd[p + "0.to_q.weight"].T
        k, v = (torch.cat([xi, li], 1) @ sd[p + "0.to_kv.weight"].T).chunk(2, -1)
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        scale = 1 / math.sqrt(math.sqrt(q.shape[-1]))
        w = torch.softmax((q * scale) @ (k * scale).transpose(-2, -1), -1)
        o = (w @ v).transpose(1, 2).reshape(lat.shape[0], lat.shape[1], -1)
        lat = lat + o @ sd[p + "0.to_out.weight"].T
        h = ln(lat, p + "1.0") @ sd[p + "1.1.weight"].T
        lat = lat + F.gelu(h) @ sd[p + "1.3.weight"].T
    out = lat @ sd["proj_out.weight"].T + sd["proj_out.bias"]
    return ln(out, "norm_out")


def random_irse50_state(expected_keys: dict[str, tuple[int, ...]], seed: int = 1) -> dict[str, torch.Tensor]:
    """Seeded random weights under IR-SE50's (facexlib) key names, fp16 like the release; BatchNorm
    statistics kept plausible so activations stay finite. ``expected_keys`` comes from
    ``iad.recognizers.irse50.expected_keys()`` (passed in: callers import iad in their own way)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in sorted(expected_keys.items()):
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
        elif name.endswith("running_var"):
            state[name] = (0.5 + torch.rand(shape, generator=g)).half()
        elif len(shape) == 1:
            state[name] = (0.1 * torch.randn(shape, generator=g) + (0.0 if "bias" in name or "mean" in name else 1.0)).half()
        else:
            state[name] = (torch.randn(shape, generator=g) / math.prod(shape[1:]) ** 0.5).half()
    return state


def ref_layer_shapes(blocks: int, dim: int) -> dict[str, tuple[int, ...]]:
    """``ref_layers.safetensors`` (Lynx full, ``WanRefAttnProcessor`` per block i)::

        {i}.to_k_ref.weight [D, D]  {i}.to_k_ref.bias [D]  {i}.to_v_ref.weight [D, D]  {i}.to_v_ref.bias [D]

    Released: D = 5120, 40 blocks."""
    shapes = {}
    for i in range(blocks):
        for proj in ("to_k_ref", "to_v_ref"):
            shapes[f"{i}.{proj}.weight"] = (dim, dim)
            shapes[f"{i}.{proj}.bias"] = (dim,)
    return shapes


def ref_tensors(blocks: int, dim: int, seed: int = 21) -> dict[str, torch.Tensor]:
    return _random(ref_layer_shapes(blocks, dim), torch.Generator().manual_seed(seed))


def write_ref_layers(folder: Path, blocks: int, dim: int, seed: int = 21, dtype: torch.dtype = torch.float32,
                     tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """``folder/ref_layers.safetensors`` with seeded random weights (or ``tensors``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = ref_tensors(blocks, dim, seed) if tensors is None else tensors
    path = folder / "ref_layers.safetensors"
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(path))
    return path


def rms_norm(t: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm written out (the blocks' norm_q / norm_k with a weight; Lynx lite's key norm without)."""
    t = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps)
    return t if weight is None else t * weight


def attention_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head, on [B, L, heads * d] tensors, written out."""
    b, n, c = q.shape
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, c // heads).transpose(1, 2)  # noqa: E731
    w = torch.softmax(split(q) @ split(k).transpose(-2, -1) / (c // heads) ** 0.5, dim=-1)
    return (w @ split(v)).transpose(1, 2).reshape(b, n, c)
