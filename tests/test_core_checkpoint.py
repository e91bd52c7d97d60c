"""The adapter checkpoint format: exact round trip, header-only inspection, and a loader that
refuses every broken or mismatched file with a message naming the file and the fix."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from iad.adapter import AdapterConfig, IdentityAdapter
from iad.checkpoint import AdapterCheckpointError, inspect_adapter, load_adapter, save_adapter


@pytest.fixture
def saved(tmp_path):
    config = AdapterConfig.tiny(decoupler_kind="training_free", decoupler_rank=3, num_registers=2)
    adapter = IdentityAdapter.random(config, seed=11)
    path = save_adapter(adapter, tmp_path / "iad_tiny.safetensors")
    return adapter, path


def _rewrite(path, mutate_metadata=None, drop=(), mutate_tensors=None):
    """Re-write a saved adapter with edited metadata / tensors (the way a broken export would)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys() if k not in drop}
    if mutate_metadata:
        mutate_metadata(metadata)
    if mutate_tensors:
        mutate_tensors(tensors)
    save_file(tensors, str(path), metadata=metadata)


def test_round_trip_is_exact_for_every_tensor_and_the_config(saved):
    adapter, path = saved
    loaded = load_adapter(path)
    assert loaded.config == adapter.config
    original, restored = adapter.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for name in original:
        assert torch.equal(original[name], restored[name]), name
    z = torch.nn.functional.normalize(torch.randn(2, 512), dim=-1)
    assert torch.equal(loaded.identity_tokens(z), adapter.identity_tokens(z))
    for block in adapter.config.blocks:
        for a, b in zip(loaded.block_kv(block, loaded.identity_tokens(z)), adapter.block_kv(block, adapter.identity_tokens(z))):
            assert torch.equal(a, b)
    assert loaded.decoupler.rank == 3
    assert torch.equal(loaded.decoupler.identity(z), adapter.decoupler.identity(z))


def test_trained_decoupler_and_half_precision_round_trip(tmp_path):
    adapter = IdentityAdapter.random(AdapterConfig.tiny(decoupler_kind="trained", kv_bias=False, num_registers=0), seed=5)
    path = save_adapter(adapter, tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = load_adapter(path)
    assert loaded.blocks["0"].to_k_ip.weight.dtype == torch.float16
    for name, tensor in adapter.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor.half()), name
    as_float = load_adapter(path, dtype=torch.float32)
    assert as_float.blocks["0"].to_k_ip.weight.dtype == torch.float32


def test_inspect_reads_the_header_only(saved, monkeypatch):
    adapter, path = saved
    import safetensors.torch

    def no_tensor_reads(*args, **kwargs):
        raise AssertionError("inspect_adapter must not load tensors")

    monkeypatch.setattr(safetensors.torch, "load_file", no_tensor_reads)
    assert inspect_adapter(path) == adapter.config


def test_wrong_embedder_family_and_width_are_refused_with_the_fix(saved):
    _, path = saved
    with pytest.raises(AdapterCheckpointError) as err:
        load_adapter(path, expected_embedder="facexlib/irse50")
    msg = str(err.value)
    assert str(path) in msg and "insightface/antelopev2/glintr100" in msg and "facexlib/irse50" in msg
    assert "IaD Face Analysis Loader" in msg
    with pytest.raises(AdapterCheckpointError, match=r"for 'wan2.1' models, but the model is 'ltxv'"):
        load_adapter(path, expected_family="ltxv")
    with pytest.raises(AdapterCheckpointError, match=r"width 128, but this model's attention width is 5120"):
        load_adapter(path, expected_model_dim=5120)
    # Matching expectations load fine.
    assert load_adapter(path, expected_embedder="insightface/antelopev2/glintr100", expected_family="wan2.1", expected_model_dim=128)


def test_truncated_file_is_refused(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(AdapterCheckpointError, match=r"truncated.*re-download"):
        load_adapter(path)
    with pytest.raises(AdapterCheckpointError, match="truncated"):
        inspect_adapter(path)
    path.write_bytes(data[:5])
    with pytest.raises(AdapterCheckpointError, match="too short"):
        load_adapter(path)


def test_corrupt_header_and_non_safetensors_files_are_refused(saved, tmp_path):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[8:20] = b"#" * 12          # garble the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(AdapterCheckpointError, match=f"{path.name}.*corrupt safetensors header"):
        load_adapter(path)
    text = tmp_path / "notes.safetensors"
    text.write_text("this is not a checkpoint at all, just some text")
    with pytest.raises(AdapterCheckpointError, match="not a valid safetensors file"):
        load_adapter(text)
    with pytest.raises(AdapterCheckpointError, match="not found.*models/iad"):
        load_adapter(tmp_path / "missing.safetensors")


class _Trap:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(_TRAP_MARKER[0]),))


_TRAP_MARKER: list[str] = [""]


def test_pickled_checkpoints_are_never_unpickled(tmp_path):
    marker = tmp_path / "pickle_was_executed"
    _TRAP_MARKER[0] = str(marker)
    bad = tmp_path / "adapter.safetensors"
    bad.write_bytes(pickle.dumps({"weights": _Trap()}))
    with pytest.raises(AdapterCheckpointError, match="never reads pickled"):
        load_adapter(bad)
    assert not marker.exists()


def test_unknown_format_version_is_refused(saved):
    _, path = saved

    def bump(meta):
        meta["format_version"] = "99"
        config = json.loads(meta["config"])
        config["format_version"] = 99
        meta["config"] = json.dumps(config)

    _rewrite(path, mutate_metadata=bump)
    with pytest.raises(AdapterCheckpointError, match=r"format version 99.*Update ComfyUI-IaD"):
        load_adapter(path)
    with pytest.raises(AdapterCheckpointError, match="format version 99"):
        inspect_adapter(path)


def test_missing_extra_and_misshaped_tensors_are_refused(saved):
    adapter, path = saved
    _rewrite(path, drop=("blocks.1.to_v_ip.weight",))
    with pytest.raises(AdapterCheckpointError, match=r"missing tensors \[blocks.1.to_v_ip.weight\]"):
        load_adapter(path)
    save_adapter(adapter, path)
    _rewrite(path, mutate_tensors=lambda t: t.update({"blocks.7.to_k_ip.weight": torch.zeros(2, 2)}))
    with pytest.raises(AdapterCheckpointError, match=r"unexpected tensors \[blocks.7.to_k_ip.weight\]"):
        load_adapter(path)
    save_adapter(adapter, path)
    _rewrite(path, mutate_tensors=lambda t: t.update({"blocks.0.registers": torch.zeros(1, 5, 64)}))
    with pytest.raises(AdapterCheckpointError, match=r"blocks.0.registers: expected \[1, 2, 64\], found \[1, 5, 64\]"):
        load_adapter(path)


def test_nan_weights_are_refused_as_corrupt(saved):
    _, path = saved

    def poison(tensors):
        tensors["resampler.proj_in.weight"][0, 0] = float("nan")

    _rewrite(path, mutate_tensors=poison)
    with pytest.raises(AdapterCheckpointError, match=r"NaN/inf.*resampler.proj_in.weight"):
        load_adapter(path)


def test_a_foreign_safetensors_file_points_to_the_right_tool(tmp_path):
    lynx_like = tmp_path / "ip_layers.safetensors"
    save_file({"0.to_k_ip.weight": torch.zeros(4, 4)}, str(lynx_like))
    with pytest.raises(AdapterCheckpointError, match=r"not an IaD adapter.*Lynx importer"):
        load_adapter(lynx_like)


def test_invalid_config_in_metadata_is_refused(saved):
    _, path = saved

    def break_config(meta):
        config = json.loads(meta["config"])
        config["blocks"] = []
        meta["config"] = json.dumps(config)

    _rewrite(path, mutate_metadata=break_config)
    with pytest.raises(AdapterCheckpointError, match=r"invalid adapter configuration.*blocks is empty"):
        load_adapter(path)


def test_trailing_bytes_are_refused(saved):
    _, path = saved
    with open(path, "ab") as f:
        f.write(struct.pack("<Q", 0) * 4)
    with pytest.raises(AdapterCheckpointError, match="trailing bytes"):
        load_adapter(path)
