"""Import Lynx (bytedance/lynx, Apache-2.0) identity adapters as IaD ``IdentityAdapter`` objects.

Lynx ships two files per variant, as users download them from the ByteDance release:

- ``resampler.safetensors``: an IP-Adapter Perceiver resampler (depth 4, width 1280, 20 heads of
  64, 16 queries, 512-d ArcFace input; output 5120 for *full*, 2048 for *lite*).
- ``ip_layers.safetensors``: an ``nn.ModuleList`` of per-block processors, keyed ``{j}.<name>``:
  *full* has 40 entries (block j) with ``to_k_ip``/``to_v_ip`` Linear(5120->5120, bias) and
  ``registers`` [1, 16, 5120]; *lite* has 20 entries (block 2j) with Linear(2048->5120, no bias)
  and no registers.

The two variants also differ in how the identity keys are normalised (verified in the reference
processors, see docs/lynx.md): full applies the block's own cross-attention ``norm_k``; lite
applies a parameter-free RMSNorm (eps 1e-5) over the whole width instead. Both reuse the block's
query (``norm_q(q(x))``) and add ``ip_scale * attention(q, K_id, V_id)`` to the text attention
before the output projection, which is exactly the IaD patch contract.

The importer reads only safetensors (never pickle), validates every key and shape against these
rules before loading a byte of tensor data, tells full from lite by keys and shapes, and refuses
malformed, truncated, swapped or mixed files with a message naming the file.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

LYNX_EMBEDDER = "facexlib/irse50"
RESAMPLER_FILE = "resampler.safetensors"
IP_LAYERS_FILE = "ip_layers.safetensors"
REF_LAYERS_FILE = "ref_layers.safetensors"
# Lynx's Perceiver heads are 64 wide; the head count follows from the width (1280 / 64 = 20).
RESAMPLER_DIM_HEAD = 64
# Lite registers its processors on every second block (register_ip_adapter_wan(layers=2)).
LITE_BLOCK_INTERVAL = 2
# Lite's identity-key norm: diffusers RMSNorm(hidden, eps=1e-5, elementwise_affine=False).
LITE_KEY_NORM_EPS = 1e-5

# The released Wan2.1-T2V-14B numbers, for the shape report (the importer accepts any consistent
# width so that tests can use tiny files with the same layout).
WAN14B_DIM = 5120
WAN14B_BLOCKS = 40

_SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1,
}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_IP_KEY = re.compile(r"^(\d+)\.(to_k_ip\.weight|to_k_ip\.bias|to_v_ip\.weight|to_v_ip\.bias|registers)$")


class LynxFormatError(ValueError):
    """A Lynx file that does not follow the released layout (the message names the file and the fix)."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ResamplerShape:
    dim: int            # Perceiver width (1280)
    depth: int          # number of (attention, feed-forward) layers (4)
    heads: int          # attention heads (20 of 64)
    num_queries: int    # identity tokens (16)
    embed_dim: int      # input embedding width (512)
    output_dim: int     # token width (full 5120, lite 2048)
    ff_dim: int         # feed-forward hidden width (4 * dim)


@dataclass(frozen=True)
class LynxLayout:
    variant: str                    # "full" or "lite"
    resampler: ResamplerShape
    model_dim: int                  # width of the base model's attention (5120 for Wan 14B)
    token_dim: int                  # identity-token width fed to to_k_ip / to_v_ip
    blocks: tuple[int, ...]         # base-model block indices that carry identity K/V
    num_registers: int              # learned register tokens appended per block (full: 16)
    kv_bias: bool
    key_norm: str                   # "block" (the block's norm_k) or "rms" (parameter-free RMSNorm)
    dtype: str = "F32"              # storage dtype of the ip layers
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        return (
            f"Lynx {self.variant}: {len(self.blocks)} blocks ({self._block_span()}), width {self.model_dim}, "
            f"{self.resampler.num_queries} identity tokens of {self.token_dim}"
            + (f" + {self.num_registers} registers" if self.num_registers else "")
            + (", K/V with bias" if self.kv_bias else ", K/V without bias")
        )

    def _block_span(self) -> str:
        b = self.blocks
        if len(b) > 1 and all(y - x == b[1] - b[0] for x, y in zip(b, b[1:])):
            step = b[1] - b[0]
            return f"{b[0]}..{b[-1]}" + (f" step {step}" if step != 1 else "")
        return ",".join(map(str, b))

    def matches_released_wan14b(self) -> bool:
        """True when the shapes are exactly those of the released Wan2.1-T2V-14B checkpoints."""
        r = self.resampler
        common = (
            r.dim == 1280 and r.depth == 4 and r.heads == 20 and r.num_queries == 16
            and r.embed_dim == 512 and r.ff_dim == 4 * 1280 and self.model_dim == WAN14B_DIM
        )
        if self.variant == "full":
            return common and r.output_dim == 5120 and self.blocks == tuple(range(WAN14B_BLOCKS)) \
                and self.num_registers == 16 and self.kv_bias
        return common and r.output_dim == 2048 and self.blocks == tuple(range(0, WAN14B_BLOCKS, 2)) \
            and self.num_registers == 0 and not self.kv_bias


# --------------------------------------------------------------------------- reading headers


def read_safetensors_header(path: str | Path) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of a safetensors file, read from its header only (no tensor data).

    Also checks that the file is long enough for every tensor the header promises, so a truncated
    download is reported as such rather than as a cryptic error halfway through loading.
    """
    path = Path(path)
    if not path.is_file():
        raise LynxFormatError(f"{path} does not exist.")
    size = path.stat().st_size
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise LynxFormatError(f"{path} is empty or truncated ({size} bytes): not a safetensors file.")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len <= 0 or header_len > min(size - 8, 100_000_000):
            raise LynxFormatError(
                f"{path} is not a safetensors file (header length {header_len} does not fit its {size} bytes). "
                "Lynx weights must be the released .safetensors files; re-download it."
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LynxFormatError(f"{path} has a corrupt safetensors header ({exc}); re-download it.") from exc
    if not isinstance(header, dict):
        raise LynxFormatError(f"{path} has a corrupt safetensors header (not a JSON object); re-download it.")
    data_len = size - 8 - header_len
    out: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], tuple(int(s) for s in entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise LynxFormatError(f"{path}: header entry for '{name}' is malformed ({exc}); re-download it.") from exc
        numel = 1
        for s in shape:
            numel *= s
        if dtype in _SAFETENSORS_DTYPE_BYTES and end - start != numel * _SAFETENSORS_DTYPE_BYTES[dtype]:
            raise LynxFormatError(f"{path}: tensor '{name}' {dtype}{list(shape)} has an inconsistent byte range; re-download it.")
        if end > data_len:
            raise LynxFormatError(
                f"{path} is truncated: tensor '{name}' needs bytes up to {end} of the data section but the file "
                f"holds only {data_len}. The download was interrupted; re-download it."
            )
        out[name] = TensorInfo(dtype, shape)
    if not out:
        raise LynxFormatError(f"{path} contains no tensors.")
    return out


# --------------------------------------------------------------------------- layout rules


def resampler_keys(shape: ResamplerShape) -> dict[str, tuple[int, ...]]:
    """Every key of a Lynx resampler state dict with its shape (IP-Adapter ``Resampler`` naming)."""
    d, inner, o, ff = shape.dim, shape.heads * RESAMPLER_DIM_HEAD, shape.output_dim, shape.ff_dim
    keys: dict[str, tuple[int, ...]] = {
        "latents": (1, shape.num_queries, d),
        "proj_in.weight": (d, shape.embed_dim),
        "proj_in.bias": (d,),
        "proj_out.weight": (o, d),
        "proj_out.bias": (o,),
        "norm_out.weight": (o,),
        "norm_out.bias": (o,),
    }
    for layer in range(shape.depth):
        p = f"layers.{layer}."
        keys.update({
            p + "0.norm1.weight": (d,), p + "0.norm1.bias": (d,),
            p + "0.norm2.weight": (d,), p + "0.norm2.bias": (d,),
            p + "0.to_q.weight": (inner, d),
            p + "0.to_kv.weight": (2 * inner, d),
            p + "0.to_out.weight": (d, inner),
            p + "1.0.weight": (d,), p + "1.0.bias": (d,),      # feed-forward LayerNorm
            p + "1.1.weight": (ff, d),                          # Linear(d, ff, bias=False)
            p + "1.3.weight": (d, ff),                          # Linear(ff, d, bias=False)
        })
    return keys


def ip_layer_keys(layout: LynxLayout) -> dict[str, tuple[int, ...]]:
    """Every key of a Lynx ``ip_layers`` state dict with its shape."""
    keys: dict[str, tuple[int, ...]] = {}
    for j in range(len(layout.blocks)):
        for proj in ("to_k_ip", "to_v_ip"):
            keys[f"{j}.{proj}.weight"] = (layout.model_dim, layout.token_dim)
            if layout.kv_bias:
                keys[f"{j}.{proj}.bias"] = (layout.model_dim,)
        if layout.num_registers:
            keys[f"{j}.registers"] = (1, layout.num_registers, layout.token_dim)
    return keys


def _check_float(infos: dict[str, TensorInfo], path) -> None:
    bad = sorted(n for n, i in infos.items() if i.dtype not in _FLOAT_DTYPES)
    if bad:
        raise LynxFormatError(f"{path}: tensors {bad[:3]} have non-float dtype {infos[bad[0]].dtype}; this is not a Lynx checkpoint.")


def inspect_resampler(infos: dict[str, TensorInfo], path="resampler.safetensors") -> ResamplerShape:
    if any(_IP_KEY.match(n) for n in infos):
        raise LynxFormatError(
            f"{path} holds ip-layer weights (keys like '0.to_k_ip.weight'), not the resampler: "
            f"the two Lynx files look swapped. Pass {RESAMPLER_FILE} and {IP_LAYERS_FILE} from the same variant folder."
        )
    for required in ("latents", "proj_in.weight", "proj_out.weight", "layers.0.0.to_q.weight", "layers.0.1.1.weight"):
        if required not in infos:
            raise LynxFormatError(
                f"{path} is not a Lynx resampler: key '{required}' is missing. Expected the IP-Adapter Perceiver "
                f"layout (latents, proj_in, layers.N.0.to_q/to_kv/to_out, layers.N.1.*, proj_out, norm_out)."
            )
    _check_float(infos, path)
    latents, proj_in, proj_out = infos["latents"].shape, infos["proj_in.weight"].shape, infos["proj_out.weight"].shape
    to_q, ff_in = infos["layers.0.0.to_q.weight"].shape, infos["layers.0.1.1.weight"].shape
    if len(latents) != 3 or latents[0] != 1 or len(proj_in) != 2 or len(proj_out) != 2 or len(to_q) != 2 or len(ff_in) != 2:
        raise LynxFormatError(f"{path}: latents/proj_in/proj_out/to_q have the wrong rank for a Lynx resampler.")
    if to_q[0] % RESAMPLER_DIM_HEAD:
        raise LynxFormatError(f"{path}: attention width {to_q[0]} is not a multiple of Lynx's 64-wide heads.")
    depth = 0
    while f"layers.{depth}.0.to_q.weight" in infos:
        depth += 1
    shape = ResamplerShape(
        dim=latents[2], depth=depth, heads=to_q[0] // RESAMPLER_DIM_HEAD, num_queries=latents[1],
        embed_dim=proj_in[1], output_dim=proj_out[0], ff_dim=ff_in[0],
    )
    _compare(infos, resampler_keys(shape), path, "resampler")
    return shape


def inspect_ip_layers(infos: dict[str, TensorInfo], path="ip_layers.safetensors") -> LynxLayout:
    """Detect full vs lite from the keys and shapes of ``ip_layers.safetensors`` (resampler not yet checked)."""
    if "latents" in infos or "proj_in.weight" in infos:
        raise LynxFormatError(
            f"{path} holds resampler weights, not ip layers: the two Lynx files look swapped. "
            f"Pass {RESAMPLER_FILE} and {IP_LAYERS_FILE} from the same variant folder."
        )
    foreign = sorted(n for n in infos if not _IP_KEY.match(n))
    if foreign:
        hint = ""
        if any("to_k_ref" in n or "to_v_ref" in n for n in foreign):
            hint = f" These are ref-adapter weights ({REF_LAYERS_FILE}), which IaD does not load as ip layers."
        raise LynxFormatError(
            f"{path} is not a Lynx ip_layers file: unexpected keys such as {foreign[:3]}. Expected only "
            f"'<j>.to_k_ip.weight', '<j>.to_v_ip.weight' (+ '.bias'), '<j>.registers' as released by ByteDance.{hint}"
            " Repackaged single-file variants from other node packs are not supported: use the original files."
        )
    _check_float(infos, path)
    entries = sorted({int(_IP_KEY.match(n).group(1)) for n in infos})
    if entries != list(range(len(entries))):
        missing = sorted(set(range(max(entries) + 1)) - set(entries))
        raise LynxFormatError(f"{path}: processor entries {missing[:5]} are missing (entries must be 0..{max(entries)}); the file is incomplete.")
    first_k = infos.get("0.to_k_ip.weight")
    if first_k is None or len(first_k.shape) != 2:
        raise LynxFormatError(f"{path}: '0.to_k_ip.weight' is missing or not a matrix.")
    model_dim, token_dim = first_k.shape
    has_registers = "0.registers" in infos
    has_bias = "0.to_k_ip.bias" in infos
    if has_registers and has_bias:
        variant, blocks = "full", tuple(range(len(entries)))
        reg = infos["0.registers"].shape
        if len(reg) != 3 or reg[0] != 1 or reg[2] != token_dim:
            raise LynxFormatError(f"{path}: '0.registers' has shape {list(reg)}, expected [1, R, {token_dim}].")
        num_registers, key_norm = reg[1], "block"
    elif not has_registers and not has_bias:
        variant, blocks = "lite", tuple(range(0, LITE_BLOCK_INTERVAL * len(entries), LITE_BLOCK_INTERVAL))
        num_registers, key_norm = 0, "rms"
    else:
        raise LynxFormatError(
            f"{path} mixes the two Lynx layouts ({'registers' if has_registers else 'no registers'}, "
            f"{'bias' if has_bias else 'no bias'}): full has both K/V bias and registers, lite has neither. "
            "The file is not a released Lynx checkpoint."
        )
    layout = LynxLayout(
        variant=variant, resampler=None, model_dim=model_dim, token_dim=token_dim, blocks=blocks,  # type: ignore[arg-type]
        num_registers=num_registers, kv_bias=has_bias, key_norm=key_norm, dtype=first_k.dtype,
    )
    _compare(infos, ip_layer_keys(layout), path, f"Lynx {variant} ip_layers")
    return layout


def _compare(infos: dict[str, TensorInfo], expected: dict[str, tuple[int, ...]], path, what: str) -> None:
    missing = sorted(set(expected) - set(infos))
    unexpected = sorted(set(infos) - set(expected))
    if missing or unexpected:
        raise LynxFormatError(
            f"{path} does not match the {what} layout: {len(missing)} keys missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}). The file is incomplete or not a Lynx checkpoint."
        )
    for name, shape in expected.items():
        if infos[name].shape != shape:
            raise LynxFormatError(
                f"{path}: '{name}' has shape {list(infos[name].shape)}, the {what} layout needs {list(shape)}."
            )


def inspect_layout(resampler: dict[str, TensorInfo], ip_layers: dict[str, TensorInfo],
                   resampler_path="resampler.safetensors", ip_layers_path="ip_layers.safetensors") -> LynxLayout:
    """Validate a pair of Lynx files (as header infos) and return their layout; raises LynxFormatError."""
    r = inspect_resampler(resampler, resampler_path)
    layout = inspect_ip_layers(ip_layers, ip_layers_path)
    if r.output_dim != layout.token_dim:
        raise LynxFormatError(
            f"{resampler_path} produces {r.output_dim}-wide tokens but {ip_layers_path} ({layout.variant}) expects "
            f"{layout.token_dim}: the files come from different Lynx variants (full: 5120, lite: 2048). "
            "Use the resampler and ip_layers from the same folder."
        )
    notes = []
    if layout.variant == "lite":
        notes.append(f"lite identity blocks assumed every {LITE_BLOCK_INTERVAL}nd block ({layout._block_span()}), as Lynx registers them")
    return LynxLayout(**{**layout.__dict__, "resampler": r, "notes": tuple(notes)})


def resolve_lynx_files(path: str | Path, ip_layers: str | Path | None = None) -> tuple[Path, Path]:
    """(resampler, ip_layers) paths from a variant folder, from either file (sibling lookup) or both."""
    path = Path(path)
    if ip_layers is not None:
        return path, Path(ip_layers)
    if path.is_dir():
        folder = path
    elif path.is_file():
        folder = path.parent
    else:
        raise LynxFormatError(f"{path} does not exist. Point at the Lynx variant folder holding {RESAMPLER_FILE} and {IP_LAYERS_FILE}.")
    resampler, ip = folder / RESAMPLER_FILE, folder / IP_LAYERS_FILE
    missing = [p.name for p in (resampler, ip) if not p.is_file()]
    if missing:
        raise LynxFormatError(
            f"{folder} lacks {', '.join(missing)}. A Lynx variant folder (lynx_full or lynx_lite) must hold both "
            f"{RESAMPLER_FILE} and {IP_LAYERS_FILE} with their original names."
        )
    return resampler, ip


def inspect_lynx(path: str | Path, ip_layers: str | Path | None = None) -> LynxLayout:
    """Layout of Lynx files on disk, from their headers only."""
    resampler_path, ip_path = resolve_lynx_files(path, ip_layers)
    return inspect_layout(read_safetensors_header(resampler_path), read_safetensors_header(ip_path), resampler_path, ip_path)


def is_lynx_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / RESAMPLER_FILE).is_file() and (path / IP_LAYERS_FILE).is_file()


# --------------------------------------------------------------------------- conversion


def lynx_config(layout: LynxLayout, family: str = "wan2.1", name: str = "") -> "AdapterConfig":
    """The IaD ``AdapterConfig`` that reproduces a Lynx layout exactly (Lynx is a special case of ours)."""
    from .adapter import AdapterConfig

    r = layout.resampler
    make = AdapterConfig.lynx_full if layout.variant == "full" else AdapterConfig.lynx_lite
    return make(
        family=family,
        model_dim=layout.model_dim,
        token_dim=layout.token_dim,
        blocks=list(layout.blocks),
        num_tokens=r.num_queries,
        num_registers=layout.num_registers,
        kv_bias=layout.kv_bias,
        embed_dim=r.embed_dim,
        embedder=LYNX_EMBEDDER,
        identity_key_norm=layout.key_norm == "block",
        key_rms_norm=layout.key_norm == "rms",
        resampler_dim=r.dim,
        resampler_depth=r.depth,
        resampler_heads=r.heads,
        resampler_dim_head=RESAMPLER_DIM_HEAD,
        resampler_ff_mult=r.ff_dim / r.dim,
        name=name or f"Lynx {layout.variant} (bytedance/lynx)",
        extra={"source": "bytedance/lynx", "lynx_variant": layout.variant,
               "released_wan14b_shapes": layout.matches_released_wan14b()},
    )


def lynx_state_dict(layout: LynxLayout, resampler: dict[str, torch.Tensor], ip_layers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Lynx tensors into the IaD adapter layout: ``resampler.*`` and ``blocks.{block}.*``."""
    state = {f"resampler.{k}": v for k, v in resampler.items()}
    for name, tensor in ip_layers.items():
        entry, rest = name.split(".", 1)
        state[f"blocks.{layout.blocks[int(entry)]}.{rest}"] = tensor
    return state


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # header already validated; this is an I/O or corruption error
        raise LynxFormatError(f"{path} could not be read ({exc}); re-download it.") from exc
    bad = [n for n, t in tensors.items() if not bool(torch.isfinite(t.float()).all())]
    if bad:
        raise LynxFormatError(f"{path} contains NaN/inf values in {bad[:3]}: the weights are corrupt; re-download it.")
    return tensors


def load_lynx(
    path: str | Path,
    ip_layers: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    family: str = "wan2.1",
    operations=torch.nn,
) -> "IdentityAdapter":
    """Load Lynx's released files (a variant folder, either file, or both paths) as an ``IdentityAdapter``.

    The layout (full or lite) is detected and fully validated from the headers before any tensor
    data is read. Tensors keep their stored dtype unless ``dtype`` is given.
    """
    from .adapter import IdentityAdapter

    resampler_path, ip_path = resolve_lynx_files(path, ip_layers)
    layout = inspect_layout(
        read_safetensors_header(resampler_path), read_safetensors_header(ip_path), resampler_path, ip_path
    )
    state = lynx_state_dict(layout, _load_tensors(resampler_path), _load_tensors(ip_path))
    adapter = IdentityAdapter.from_state_dict(lynx_config(layout, family=family), state, operations)
    adapter.lynx_layout = layout  # for display in the loader node
    return adapter.to(device=device, dtype=dtype) if dtype is not None else adapter.to(device)


def is_lynx_path(path: str | Path) -> bool:
    """A Lynx variant folder, or one of its released files: what ``load_adapter_or_lynx`` reads as Lynx."""
    return Path(path).is_dir() or is_lynx_file(path)


def is_lynx_file(path: str | Path) -> bool:
    """True for a released Lynx file (``resampler.safetensors`` / ``ip_layers.safetensors``) next to its sibling."""
    path = Path(path)
    return path.name in (RESAMPLER_FILE, IP_LAYERS_FILE) and is_lynx_folder(path.parent)


def load_adapter_or_lynx(path: str | Path, expected_embedder: str | None = None, expected_family: str | None = None,
                         expected_model_dim: int | None = None, device: str | torch.device = "cpu",
                         dtype: torch.dtype | None = None, operations=torch.nn) -> "IdentityAdapter":
    """What the IaD Model Loader calls: an IaD checkpoint, or a Lynx file/folder loaded directly.

    Lynx adapters go through the same compatibility checks as IaD checkpoints (embedder, family, width).
    """
    from .checkpoint import check_compatible, load_adapter

    path = Path(path)
    if path.name == REF_LAYERS_FILE and is_lynx_folder(path.parent):
        raise LynxFormatError(f"{path} is Lynx full's ref-adapter, not an identity adapter: load it with IaD Lynx Ref "
                              f"Adapter, and pick {RESAMPLER_FILE} or {IP_LAYERS_FILE} of the same folder here.")
    if is_lynx_path(path):
        adapter = load_lynx(path, device=device, dtype=dtype, operations=operations)
        check_compatible(adapter.config, str(path), expected_embedder, expected_family, expected_model_dim)
        return adapter
    return load_adapter(path, expected_embedder, expected_family, expected_model_dim, device=device, dtype=dtype,
                        operations=operations)
