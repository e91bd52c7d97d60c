"""IaD adapter checkpoints: safetensors tensors + JSON metadata, and a loader that validates all of it.

File layout (docs/design.md, "Checkpoint format"): a standard ``.safetensors`` file whose header
``__metadata__`` holds

    "format": "comfyui-iad-adapter"     "format_version": "1"
    "config": AdapterConfig as JSON      (family, model_dim, token_dim, blocks, num_tokens,
                                          num_registers, kv_bias, embed_dim, embedder,
                                          decoupler_kind, identity_key_norm, key_rms_norm, ...)
    "family", "model_dim", "embedder", "decoupler_kind": copies for people reading the header

and the tensors of :class:`iad.adapter.IdentityAdapter`'s state dict. Safetensors only: nothing is
ever unpickled. Every refusal raises :class:`AdapterCheckpointError` (a ``ValueError``) naming the
file, what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import torch

from .adapter import FORMAT_VERSION, AdapterConfig, IdentityAdapter, describe_state_mismatch

FORMAT_NAME = "comfyui-iad-adapter"
SUPPORTED_VERSIONS = (1,)
_MAX_HEADER = 100 * 1024 * 1024
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}
_FIX_REDOWNLOAD = "re-download or re-export it (the file on disk is damaged or was not fully copied)"


class AdapterCheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file, why and how to fix it."""


def save_adapter(adapter: IdentityAdapter, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write ``adapter`` as a safetensors file with metadata (atomically: temp file + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    config = adapter.config
    config.validate()
    config.format_version = FORMAT_VERSION
    tensors = {}
    for name, tensor in adapter.state_dict().items():
        t = tensor.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": config.to_json(),
        "family": config.family,
        "model_dim": str(config.model_dim),
        "embedder": config.embedder,
        "decoupler_kind": config.decoupler_kind,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_header(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """Parse and check a safetensors header without reading tensor data.

    Returns ``(tensor_entries, metadata)``. Detects files that are not safetensors, truncated files
    and headers whose offsets do not fit the file.
    """
    path = Path(path)
    if not path.is_file():
        raise AdapterCheckpointError(f"IaD adapter file not found: {path}. Put the .safetensors file in ComfyUI/models/iad/.")
    size = path.stat().st_size
    if size < 8:
        raise AdapterCheckpointError(f"{path} is {size} bytes long, too short to be a safetensors file: {_FIX_REDOWNLOAD}.")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len <= 0 or header_len > _MAX_HEADER or header_len > size - 8:
            raise AdapterCheckpointError(
                f"{path} is not a valid safetensors file (header length {header_len} for a {size}-byte file): "
                f"it is truncated, corrupt or another format (IaD never reads pickled .pt/.bin/.ckpt files); {_FIX_REDOWNLOAD}."
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdapterCheckpointError(f"{path} has a corrupt safetensors header ({exc}); {_FIX_REDOWNLOAD}.") from None
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - header_len
    end = 0
    for name, entry in header.items():
        try:
            start, stop = (int(x) for x in entry["data_offsets"])
            count = 1
            for d in entry["shape"]:
                count *= int(d)
            width = _DTYPE_BYTES.get(entry["dtype"])
        except (KeyError, TypeError, ValueError):
            raise AdapterCheckpointError(f"{path}: tensor entry {name!r} in the header is malformed; {_FIX_REDOWNLOAD}.") from None
        if width is not None and stop - start != count * width:
            raise AdapterCheckpointError(f"{path}: tensor {name!r} has {stop - start} bytes for shape {entry['shape']}; {_FIX_REDOWNLOAD}.")
        end = max(end, stop)
    if end > data_size:
        raise AdapterCheckpointError(
            f"{path} is truncated: its header describes {end} bytes of tensor data but only {data_size} are present; {_FIX_REDOWNLOAD}."
        )
    if end < data_size:
        raise AdapterCheckpointError(f"{path} has {data_size - end} unexpected trailing bytes after the tensor data; {_FIX_REDOWNLOAD}.")
    return header, metadata


def _config_from_metadata(path: Path, metadata: dict[str, str]) -> AdapterConfig:
    if metadata.get("format") != FORMAT_NAME:
        raise AdapterCheckpointError(
            f"{path} is a safetensors file but not an IaD adapter (no '{FORMAT_NAME}' metadata). "
            "If it is a Lynx checkpoint, load its folder directly or convert it with the Lynx importer "
            "(python -m iad.convert_lynx); "
            "otherwise load it with the node it was made for."
        )
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise AdapterCheckpointError(f"{path} has an unreadable format_version {metadata.get('format_version')!r}; {_FIX_REDOWNLOAD}.") from None
    if version not in SUPPORTED_VERSIONS:
        newer = version > max(SUPPORTED_VERSIONS)
        raise AdapterCheckpointError(
            f"{path} uses IaD adapter format version {version}; this ComfyUI-IaD reads version(s) "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}. "
            + ("Update ComfyUI-IaD to load it." if newer else "Re-export it with a current ComfyUI-IaD.")
        )
    try:
        config = AdapterConfig.from_json(metadata["config"])
    except KeyError:
        raise AdapterCheckpointError(f"{path} lacks the 'config' metadata entry; {_FIX_REDOWNLOAD}.") from None
    except (ValueError, TypeError) as exc:
        raise AdapterCheckpointError(f"{path} has an invalid adapter configuration: {exc}.") from None
    if config.format_version != version:
        raise AdapterCheckpointError(f"{path}: config says format version {config.format_version} but the file says {version}; {_FIX_REDOWNLOAD}.")
    return config


def inspect_adapter(path: str | os.PathLike) -> AdapterConfig:
    """The configuration stored in an adapter file, read from its header only (no tensors loaded)."""
    _, metadata = read_header(path)
    return _config_from_metadata(Path(path), metadata)


def check_compatible(
    config: AdapterConfig,
    where: str,
    expected_embedder: str | None = None,
    expected_family: str | None = None,
    expected_model_dim: int | None = None,
) -> None:
    """Refuse an adapter that does not fit the embedder / base model it is about to be used with."""
    if expected_embedder is not None and config.embedder != expected_embedder:
        raise AdapterCheckpointError(
            f"{where} was trained on face embeddings from '{config.embedder}', but the faces were embedded with "
            f"'{expected_embedder}'. Embeddings of different recognizers are not interchangeable: load the "
            f"'{config.embedder}' face model in IaD Face Analysis Loader, or use an adapter trained for '{expected_embedder}'."
        )
    if expected_family is not None and config.family != expected_family:
        raise AdapterCheckpointError(
            f"{where} is an adapter for '{config.family}' models, but the model is '{expected_family}'. "
            f"Use an IaD adapter made for {expected_family}."
        )
    if expected_model_dim is not None and config.model_dim != int(expected_model_dim):
        raise AdapterCheckpointError(
            f"{where} was made for a {config.family} model of width {config.model_dim}, but this model's attention width "
            f"is {expected_model_dim} (a different size of the model). Use the adapter that matches the model size."
        )


def load_adapter(
    path: str | os.PathLike,
    expected_embedder: str | None = None,
    expected_family: str | None = None,
    expected_model_dim: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    operations=torch.nn,
) -> IdentityAdapter:
    """Load and validate an adapter file; see :class:`AdapterCheckpointError` for every refusal.
    ``operations``: the layer classes of ``IdentityAdapter`` (torch.nn, or ComfyUI's comfy.ops)."""
    import safetensors
    from safetensors.torch import load_file

    safetensors_error = getattr(safetensors, "SafetensorError", RuntimeError)

    path = Path(path)
    header, metadata = read_header(path)
    config = _config_from_metadata(path, metadata)
    check_compatible(config, str(path), expected_embedder, expected_family, expected_model_dim)

    expected = _expected_shapes(config)
    found = {name: _ShapeOnly(entry["shape"]) for name, entry in header.items()}
    mismatch = describe_state_mismatch(expected, found)
    if mismatch:
        raise AdapterCheckpointError(
            f"{path} does not match its own configuration ({config.family}, width {config.model_dim}, "
            f"{len(config.blocks)} blocks): {mismatch}. The file is incomplete or was edited; {_FIX_REDOWNLOAD}."
        )
    try:
        state = load_file(str(path), device="cpu")
    except (safetensors_error, OSError, RuntimeError) as exc:
        raise AdapterCheckpointError(f"{path} could not be read ({exc}); {_FIX_REDOWNLOAD}.") from None
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise AdapterCheckpointError(f"{path} contains NaN/inf values in {bad[:4]}: the weights are corrupt; {_FIX_REDOWNLOAD}.")
    try:
        adapter = IdentityAdapter.from_state_dict(config, state, operations)
    except ValueError as exc:
        raise AdapterCheckpointError(f"{path}: {exc}; {_FIX_REDOWNLOAD}.") from None
    return adapter.to(device=device, dtype=dtype) if dtype is not None else adapter.to(device)


class _ShapeOnly:
    def __init__(self, shape) -> None:
        self.shape = tuple(int(d) for d in shape)


def _expected_shapes(config: AdapterConfig) -> dict[str, _ShapeOnly]:
    """Tensor names and shapes an adapter with ``config`` has, built on the meta device (no memory)."""
    with torch.device("meta"):
        adapter = IdentityAdapter(config)
    return {name: _ShapeOnly(t.shape) for name, t in adapter.state_dict().items()}
