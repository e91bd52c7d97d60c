"""Lynx importer: released file layout, full/lite detection, refusal of malformed files, conversion.

Files are random-weight Lynx-format files built from the documented layout (tests/harness/lynx_files.py);
the released 14B shapes are checked shape-only.
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from harness.lynx_files import (
    RELEASED_FULL,
    RELEASED_LITE,
    LynxSpec,
    ip_layer_shapes,
    lynx_tensors,
    reference_resampler,
    resampler_shapes,
    write_lynx,
)
from iad.adapter import IdentityAdapter
from iad.checkpoint import AdapterCheckpointError, check_compatible, load_adapter
from iad.convert_lynx import main as convert_main
from iad.lynx import (
    LYNX_EMBEDDER,
    LynxFormatError,
    TensorInfo,
    inspect_layout,
    inspect_lynx,
    load_adapter_or_lynx,
    load_lynx,
)

FULL = LynxSpec("full", output=128, model_dim=128, entries=3, registers=4, seed=1)
LITE = LynxSpec("lite", output=64, model_dim=128, entries=2, registers=0, seed=2)


@pytest.fixture(scope="module")
def lynx_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lynx")
    return {"full": write_lynx(root / "lynx_full", FULL), "lite": write_lynx(root / "lynx_lite", LITE)}


def _infos(shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> dict[str, TensorInfo]:
    return {name: TensorInfo(dtype, tuple(shape)) for name, shape in shapes.items()}


# ----------------------------------------------------------------------------- detection


def test_full_is_detected_with_registers_bias_all_blocks_and_block_norm(lynx_dirs):
    layout = inspect_lynx(lynx_dirs["full"])
    assert layout.variant == "full"
    assert layout.blocks == (0, 1, 2)
    assert layout.num_registers == 4 and layout.kv_bias
    assert layout.key_norm == "block"          # the block's own norm_k on identity keys
    assert (layout.model_dim, layout.token_dim) == (128, 128)
    r = layout.resampler
    assert (r.dim, r.heads, r.depth, r.num_queries, r.embed_dim, r.output_dim, r.ff_dim) == (128, 2, 2, 4, 512, 128, 512)
    assert not layout.matches_released_wan14b()


def test_lite_is_detected_every_second_block_no_bias_no_registers_rms_key_norm(lynx_dirs):
    layout = inspect_lynx(lynx_dirs["lite"] / "ip_layers.safetensors")   # either file finds its sibling
    assert layout.variant == "lite"
    assert layout.blocks == (0, 2)
    assert layout.num_registers == 0 and not layout.kv_bias
    assert layout.key_norm == "rms"            # parameter-free RMSNorm(eps 1e-5), not the block's norm_k
    assert (layout.model_dim, layout.token_dim) == (128, 64)


@pytest.mark.parametrize("spec, variant, blocks, registers, bias", [
    (RELEASED_FULL, "full", tuple(range(40)), 16, True),
    (RELEASED_LITE, "lite", tuple(range(0, 40, 2)), 0, False),
])
def test_released_wan14b_shape_rules(spec, variant, blocks, registers, bias):
    """The real checkpoints' shapes (shape-only: no 2-4 GB files) are accepted, detected and map 1:1 onto IaD."""
    layout = inspect_layout(_infos(resampler_shapes(spec)), _infos(ip_layer_shapes(spec)))
    assert layout.variant == variant and layout.blocks == blocks
    assert layout.num_registers == registers and layout.kv_bias == bias
    assert layout.model_dim == 5120 and layout.token_dim == (5120 if variant == "full" else 2048)
    r = layout.resampler
    assert (r.dim, r.heads, r.depth, r.num_queries, r.embed_dim) == (1280, 20, 4, 16, 512)
    assert layout.matches_released_wan14b()
    # Every Lynx tensor has a home of the same shape in the IaD adapter, and nothing is left over.
    from iad.lynx import lynx_config, lynx_state_dict

    config = lynx_config(layout)
    assert config.embedder == LYNX_EMBEDDER
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in IdentityAdapter(config).state_dict().items()}
        fake = {k: torch.empty(v) for k, v in {**resampler_shapes(spec), **ip_layer_shapes(spec)}.items()}
    resampler = {k: v for k, v in fake.items() if k in resampler_shapes(spec)}
    ip = {k: v for k, v in fake.items() if k in ip_layer_shapes(spec)}
    mapped = {k: tuple(v.shape) for k, v in lynx_state_dict(layout, resampler, ip).items()}
    assert mapped == expected
    params = sum(math.prod(s) for s in mapped.values())
    # full: ~2.1 G adapter params + resampler; lite: ~0.42 G + resampler (what the release sizes imply)
    assert params == pytest.approx(2.2e9 if variant == "full" else 0.5e9, rel=0.15)


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_loaded_adapter_carries_the_file_tensors_at_the_right_blocks(lynx_dirs, variant):
    spec = FULL if variant == "full" else LITE
    resampler, ip = lynx_tensors(spec)
    adapter = load_lynx(lynx_dirs[variant])
    assert isinstance(adapter, IdentityAdapter)
    c = adapter.config
    assert c.embedder == LYNX_EMBEDDER == "facexlib/irse50"
    assert c.identity_key_norm == (variant == "full") and c.key_rms_norm == (variant == "lite")
    layout = inspect_lynx(lynx_dirs[variant])
    for j, block in enumerate(layout.blocks):
        kv = adapter.blocks[str(block)]
        assert torch.equal(kv.to_k_ip.weight, ip[f"{j}.to_k_ip.weight"])
        assert torch.equal(kv.to_v_ip.weight, ip[f"{j}.to_v_ip.weight"])
        if variant == "full":
            assert torch.equal(kv.to_k_ip.bias, ip[f"{j}.to_k_ip.bias"])
            assert torch.equal(kv.registers, ip[f"{j}.registers"])
        else:
            assert kv.to_k_ip.bias is None and kv.registers is None
    assert torch.equal(adapter.resampler.latents, resampler["latents"])
    assert torch.equal(adapter.resampler.layers[1][1][3].weight, resampler["layers.1.1.3.weight"])


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_identity_tokens_equal_lynx_resampler_equations(lynx_dirs, variant):
    spec = FULL if variant == "full" else LITE
    resampler, _ = lynx_tensors(spec)
    adapter = load_lynx(lynx_dirs[variant])
    e = F.normalize(torch.randn(3, 512, generator=torch.Generator().manual_seed(5)), dim=-1)
    ours = adapter.identity_tokens(e)
    ref = reference_resampler(resampler, e[:, None, :], spec.heads, spec.depth)   # Lynx feeds [B, 1, 512]
    assert ours.shape == (3, spec.queries, spec.output)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # Lynx's unconditional branch: the resampler of an all-zero embedding (not "no identity").
    torch.testing.assert_close(adapter.null_tokens(1), reference_resampler(resampler, torch.zeros(1, 1, 512), spec.heads, spec.depth), atol=1e-5, rtol=1e-5)


def test_bf16_files_load_and_keep_their_dtype_unless_asked(tmp_path):
    folder = write_lynx(tmp_path / "bf16", FULL, dtype=torch.bfloat16)
    assert inspect_lynx(folder).dtype == "BF16"
    assert load_lynx(folder).blocks["0"].to_k_ip.weight.dtype == torch.bfloat16
    assert load_lynx(folder, dtype=torch.float32).blocks["0"].to_k_ip.weight.dtype == torch.float32


# ----------------------------------------------------------------------------- refusals


def _write(folder, resampler, ip):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(resampler, str(folder / "resampler.safetensors"))
    save_file(ip, str(folder / "ip_layers.safetensors"))
    return folder


def _refused(folder, *needles):
    with pytest.raises(LynxFormatError) as err:
        load_lynx(folder)
    message = str(err.value)
    for needle in needles:
        assert needle in message, message
    return message


def test_truncated_download_is_refused_naming_the_file(lynx_dirs, tmp_path):
    folder = tmp_path / "trunc"
    folder.mkdir()
    for name in ("resampler.safetensors", "ip_layers.safetensors"):
        (folder / name).write_bytes((lynx_dirs["full"] / name).read_bytes())
    data = (folder / "ip_layers.safetensors").read_bytes()
    (folder / "ip_layers.safetensors").write_bytes(data[: len(data) - 1000])
    _refused(folder, "ip_layers.safetensors", "truncated", "re-download")


def test_swapped_files_are_refused(lynx_dirs, tmp_path):
    resampler, ip = lynx_tensors(FULL)
    _refused(_write(tmp_path / "swap", ip, resampler), "resampler.safetensors", "swapped")


def test_mixed_layout_registers_without_bias_is_refused(tmp_path):
    resampler, ip = lynx_tensors(FULL)
    ip = {k: v for k, v in ip.items() if not k.endswith("bias")}
    _refused(_write(tmp_path / "mixed", resampler, ip), "ip_layers.safetensors", "mixes the two Lynx layouts")


def test_missing_processor_entry_is_refused(tmp_path):
    resampler, ip = lynx_tensors(FULL)
    ip = {k: v for k, v in ip.items() if not k.startswith("1.")}
    _refused(_write(tmp_path / "gap", resampler, ip), "ip_layers.safetensors", "[1]", "missing")


def test_wrong_shape_is_refused_naming_the_key(tmp_path):
    resampler, ip = lynx_tensors(FULL)
    ip["2.to_v_ip.weight"] = torch.zeros(128, 96)
    _refused(_write(tmp_path / "shape", resampler, ip), "ip_layers.safetensors", "2.to_v_ip.weight", "[128, 96]")


def test_resampler_and_ip_layers_from_different_variants_are_refused(tmp_path):
    resampler_lite, _ = lynx_tensors(LITE)
    _, ip_full = lynx_tensors(FULL)
    _refused(_write(tmp_path / "cross", resampler_lite, ip_full), "different Lynx variants", "64", "128")


def test_incomplete_resampler_is_refused(tmp_path):
    resampler, ip = lynx_tensors(LITE)
    del resampler["layers.1.0.to_kv.weight"]
    _refused(_write(tmp_path / "noresampler", resampler, ip), "resampler.safetensors", "layers.1.0.to_kv.weight")


def test_ref_layers_passed_as_ip_layers_are_refused_with_a_hint(tmp_path):
    resampler, _ = lynx_tensors(FULL)
    ref = {"0.to_k_ref.weight": torch.zeros(8, 8), "0.to_v_ref.weight": torch.zeros(8, 8)}
    _refused(_write(tmp_path / "ref", resampler, ref), "ip_layers.safetensors", "ref_layers.safetensors")


def test_pickle_and_garbage_are_refused_without_unpickling(lynx_dirs, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "resampler.safetensors").write_bytes((lynx_dirs["full"] / "resampler.safetensors").read_bytes())

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    (folder / "ip_layers.safetensors").write_bytes(pickle.dumps({"0.to_k_ip.weight": Boom()}))
    _refused(folder, "ip_layers.safetensors", "not a safetensors file")


def test_nan_weights_are_refused(tmp_path):
    resampler, ip = lynx_tensors(FULL)
    ip["0.registers"][0, 0, 0] = float("nan")
    _refused(_write(tmp_path / "nan", resampler, ip), "ip_layers.safetensors", "NaN")


def test_folder_without_both_files_is_refused(lynx_dirs, tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "resampler.safetensors").write_bytes((lynx_dirs["full"] / "resampler.safetensors").read_bytes())
    _refused(folder, "lacks ip_layers.safetensors")


# ----------------------------------------------------------------------------- conversion, embedder


def test_converter_cli_round_trip_and_embedder_guard(lynx_dirs, tmp_path, capsys):
    out = tmp_path / "models" / "iad" / "lynx_lite.safetensors"
    assert convert_main([str(lynx_dirs["lite"]), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Lynx lite" in printed and "facexlib/irse50" in printed
    converted = load_adapter(out, expected_embedder="facexlib/irse50")
    direct = load_lynx(lynx_dirs["lite"])
    e = F.normalize(torch.randn(2, 512), dim=-1)
    torch.testing.assert_close(converted.identity_tokens(e), direct.identity_tokens(e), atol=0, rtol=0)
    t = direct.identity_tokens(e)
    for a, b in zip(converted.block_kv(2, t), direct.block_kv(2, t)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # A Lynx adapter with insightface (antelopev2) embeddings is refused, naming both recognizers.
    with pytest.raises(AdapterCheckpointError, match="facexlib/irse50.*insightface/antelopev2/glintr100"):
        load_adapter(out, expected_embedder="insightface/antelopev2/glintr100")
    with pytest.raises(AdapterCheckpointError, match="facexlib/irse50"):
        load_adapter_or_lynx(lynx_dirs["full"], expected_embedder="insightface/antelopev2/glintr100")
    with pytest.raises(AdapterCheckpointError, match="width 128"):
        check_compatible(direct.config, "lynx", expected_model_dim=1536)


def test_converter_cli_reports_a_bad_folder_and_fails(tmp_path, capsys):
    assert convert_main([str(tmp_path), str(tmp_path / "out.safetensors")]) == 2
    assert "lacks resampler.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()


def test_loader_entry_point_loads_lynx_directly_or_iad_checkpoints(lynx_dirs, tmp_path):
    a = load_adapter_or_lynx(lynx_dirs["full"] / "resampler.safetensors", expected_embedder="facexlib/irse50")
    assert a.config.num_registers == 4
    out = tmp_path / "full.safetensors"
    assert convert_main([str(lynx_dirs["full"]), str(out), "--dtype", "fp16"]) == 0
    b = load_adapter_or_lynx(out, expected_embedder="facexlib/irse50")
    assert b.blocks["1"].registers.dtype == torch.float16
    torch.testing.assert_close(b.blocks["1"].registers.float(), a.blocks["1"].registers, atol=1e-3, rtol=1e-3)
