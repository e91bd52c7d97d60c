"""IdentityAdapter / AdapterConfig / Resampler: the contract the attention patch and the Lynx
importer rely on (docs/architecture.md, docs/design.md section 4)."""

from __future__ import annotations

import math

import pytest
import torch

from iad.adapter import AdapterConfig, IdentityAdapter
from iad.resampler import Resampler


def _z(batch: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(batch, 512, generator=g), dim=-1)


def test_kv_shapes_and_registers_are_appended_after_the_identity_tokens():
    config = AdapterConfig.tiny(num_tokens=4, num_registers=3, blocks=[1, 5])
    adapter = IdentityAdapter.random(config, seed=1)
    tokens = adapter.identity_tokens(_z(2))
    assert tokens.shape == (2, 4, config.token_dim)
    k, v = adapter.block_kv(5, tokens)
    assert k.shape == v.shape == (2, 4 + 3, config.model_dim)
    kv = adapter.blocks["5"]
    # The first N rows are the tokens' own projections: registers do not leak into them.
    torch.testing.assert_close(k[:, :4], kv.to_k_ip(tokens))
    torch.testing.assert_close(v[:, :4], kv.to_v_ip(tokens))
    # The last R rows are the registers' projections, the same for every sample.
    registers = kv.registers.expand(2, -1, -1)
    torch.testing.assert_close(k[:, 4:], kv.to_k_ip(registers))
    torch.testing.assert_close(v[:, 4:], kv.to_v_ip(registers))
    # Each listed block has its own projections.
    k1, _ = adapter.block_kv(1, tokens)
    assert not torch.allclose(k1, k)


def test_without_registers_the_kv_have_exactly_num_tokens_rows_and_no_bias():
    config = AdapterConfig.tiny(num_registers=0, kv_bias=False)
    adapter = IdentityAdapter.random(config, seed=2)
    k, v = adapter.block_kv(0, adapter.identity_tokens(_z(1)))
    assert k.shape == v.shape == (1, config.num_tokens, config.model_dim)
    assert adapter.blocks["0"].to_k_ip.bias is None and adapter.blocks["0"].registers is None
    assert not any("registers" in name or name.endswith("bias") and ".to_" in name for name in adapter.blocks.state_dict())


def test_key_rms_norm_gives_unit_rms_keys_and_leaves_values_alone():
    config = AdapterConfig.tiny(key_rms_norm=True, identity_key_norm=False)
    adapter = IdentityAdapter.random(config, seed=3)
    tokens = adapter.identity_tokens(_z(2))
    k, v = adapter.block_kv(0, tokens)
    rms = k.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)
    plain = IdentityAdapter.from_state_dict(AdapterConfig.tiny(), adapter.state_dict())
    k_plain, v_plain = plain.block_kv(0, tokens)
    torch.testing.assert_close(v, v_plain)
    assert not torch.allclose(k, k_plain)
    torch.testing.assert_close(torch.nn.functional.normalize(k, dim=-1), torch.nn.functional.normalize(k_plain, dim=-1))


def test_identity_tokens_follow_the_identity_and_samples_do_not_interact():
    adapter = IdentityAdapter.random(AdapterConfig.tiny(), seed=4)
    z = _z(3)
    together = adapter.identity_tokens(z)
    alone = torch.cat([adapter.identity_tokens(z[i]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert (together[0] - together[1]).abs().max() > 1e-3, "different identities gave the same tokens"
    with pytest.raises(ValueError, match=r"\[B, 512\]"):
        adapter.identity_tokens(torch.randn(2, 256))
    null = adapter.null_tokens(2)
    torch.testing.assert_close(null, adapter.identity_tokens(torch.zeros(2, 512)))


def test_unknown_block_is_refused_with_the_list_of_patched_blocks():
    adapter = IdentityAdapter.random(AdapterConfig.tiny(blocks=[0, 2]), seed=0)
    with pytest.raises(KeyError, match=r"block 1 carries no identity K/V.*\[0, 2\]"):
        adapter.block_kv(1, adapter.identity_tokens(_z(1)))


def test_random_is_deterministic_and_leaves_the_global_rng_alone():
    config = AdapterConfig.tiny(decoupler_kind="trained")
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = IdentityAdapter.random(config, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    b = IdentityAdapter.random(config, seed=7)
    c = IdentityAdapter.random(config, seed=8)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name
    assert not torch.equal(a.blocks["0"].to_k_ip.weight, c.blocks["0"].to_k_ip.weight)
    # Random adapters are "live": the trained decoupler is not the identity map.
    z = _z(2)
    assert (a.decoupler.identity(z) - z).abs().max() > 1e-4


def test_num_parameters_counts_every_weight():
    config = AdapterConfig.tiny(num_registers=2)
    adapter = IdentityAdapter.random(config)
    d, t, m = config.resampler_dim, config.token_dim, config.model_dim
    inner = config.resampler_heads * config.resampler_dim_head
    ff = int(d * config.resampler_ff_mult)
    per_layer = 4 * d + d * inner + d * 2 * inner + inner * d + 2 * d + d * ff + ff * d
    resampler = config.num_tokens * d + (config.embed_dim * d + d) + (d * t + t) + 2 * t + config.resampler_depth * per_layer
    per_block = 2 * (t * m + m) + config.num_registers * t
    assert adapter.num_parameters() == resampler + len(config.blocks) * per_block


def test_config_json_round_trip_and_validation():
    config = AdapterConfig.tiny(decoupler_kind="training_free", decoupler_rank=3, extra={"note": "x"})
    assert AdapterConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="blocks is empty"):
        AdapterConfig.tiny(blocks=[])
    with pytest.raises(ValueError, match="decoupler_kind"):
        AdapterConfig.tiny(decoupler_kind="magic")
    with pytest.raises(ValueError, match="distinct"):
        AdapterConfig.tiny(blocks=[1, 1])
    with pytest.raises(ValueError, match="unknown adapter configuration fields"):
        AdapterConfig.from_dict({**config.to_dict(), "future_field": 1})
    with pytest.raises(ValueError, match="lacks required fields"):
        AdapterConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "model_dim"})


# -- Lynx as a special case (docs/design.md, "Lynx as a special case") -----------------------------

def _meta_state(config: AdapterConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        adapter = IdentityAdapter(config)
    return {name: tuple(t.shape) for name, t in adapter.state_dict().items()}


def _lynx_resampler_shapes(output_dim: int) -> dict[str, tuple[int, ...]]:
    """Shapes of Lynx's resampler.safetensors: Resampler(depth=4, dim=1280, dim_head=64, heads=20,
    num_queries=16, embedding_dim=512, ff_mult=4, output_dim) in the IP-Adapter layout."""
    shapes = {"latents": (1, 16, 1280), "proj_in.weight": (1280, 512), "proj_in.bias": (1280,),
              "proj_out.weight": (output_dim, 1280), "proj_out.bias": (output_dim,),
              "norm_out.weight": (output_dim,), "norm_out.bias": (output_dim,)}
    for i in range(4):
        p = f"layers.{i}."
        shapes.update({p + "0.norm1.weight": (1280,), p + "0.norm1.bias": (1280,), p + "0.norm2.weight": (1280,),
                       p + "0.norm2.bias": (1280,), p + "0.to_q.weight": (1280, 1280), p + "0.to_kv.weight": (2560, 1280),
                       p + "0.to_out.weight": (1280, 1280), p + "1.0.weight": (1280,), p + "1.0.bias": (1280,),
                       p + "1.1.weight": (5120, 1280), p + "1.3.weight": (1280, 5120)})
    return shapes


def test_lynx_full_layout_is_a_special_case():
    ours = _meta_state(AdapterConfig.lynx_full())
    lynx = {f"resampler.{k}": v for k, v in _lynx_resampler_shapes(5120).items()}
    for i in range(40):   # ip_layers.safetensors: "{i}.to_k_ip.weight", ... for every block i
        lynx.update({f"blocks.{i}.to_k_ip.weight": (5120, 5120), f"blocks.{i}.to_k_ip.bias": (5120,),
                     f"blocks.{i}.to_v_ip.weight": (5120, 5120), f"blocks.{i}.to_v_ip.bias": (5120,),
                     f"blocks.{i}.registers": (1, 16, 5120)})
    assert ours == lynx


def test_lynx_lite_layout_is_a_special_case():
    ours = _meta_state(AdapterConfig.lynx_lite())
    lynx = {f"resampler.{k}": v for k, v in _lynx_resampler_shapes(2048).items()}
    for j in range(20):   # lite ip_layers "{j}.to_k_ip.weight" belong to block 2*j, no bias, no registers
        lynx.update({f"blocks.{2 * j}.to_k_ip.weight": (5120, 2048), f"blocks.{2 * j}.to_v_ip.weight": (5120, 2048)})
    assert ours == lynx


def test_resampler_computes_the_reference_perceiver_math():
    """Our resampler, fed a Lynx-layout state dict, equals the IP-Adapter/Lynx formulation written
    out by hand (queries attend to [input; queries], q and k each scaled by dim_head^-1/4)."""
    torch.manual_seed(0)
    r = Resampler(dim=32, depth=2, dim_head=8, heads=4, num_queries=5, embedding_dim=512, output_dim=24, ff_mult=2)
    for p in r.parameters():
        torch.nn.init.normal_(p, 0, 0.2)
    sd = r.state_dict()
    x = torch.randn(2, 1, 512)

    def layer_norm(t, prefix):
        return torch.nn.functional.layer_norm(t, t.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"])

    h = x @ sd["proj_in.weight"].T + sd["proj_in.bias"]
    lat = sd["latents"].repeat(2, 1, 1)
    for i in range(2):
        p = f"layers.{i}."
        xi, li = layer_norm(h, p + "0.norm1"), layer_norm(lat, p + "0.norm2")
        q = li @ sd[p + "0.to_q.weight"].T
        k, v = (torch.cat([xi, li], 1) @ sd[p + "0.to_kv.weight"].T).chunk(2, -1)
        split = lambda t: t.view(2, t.shape[1], 4, 8).transpose(1, 2)  # noqa: E731
        s = 1 / math.sqrt(math.sqrt(8))
        w = torch.softmax((split(q) * s) @ (split(k) * s).transpose(-2, -1), -1)
        out = (w @ split(v)).permute(0, 2, 1, 3).reshape(2, 5, -1)
        lat = lat + out @ sd[p + "0.to_out.weight"].T
        f = layer_norm(lat, p + "1.0") @ sd[p + "1.1.weight"].T
        lat = lat + torch.nn.functional.gelu(f) @ sd[p + "1.3.weight"].T
    expected = layer_norm(lat @ sd["proj_out.weight"].T + sd["proj_out.bias"], "norm_out")
    torch.testing.assert_close(r(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r(x[:, 0]), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_adapter_on_comfyui_casting_layers_computes_exactly_what_torch_layers_do(comfy, dtype):
    """Inside ComfyUI the loader builds the adapter from comfy.ops.manual_cast layers (weights cast
    to the input's dtype and device per call, as ComfyUI's models do): same names, same numbers."""
    import comfy.ops

    config = AdapterConfig.tiny(decoupler_kind="trained")
    reference = IdentityAdapter.random(config, seed=4).to(dtype)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    casting = IdentityAdapter.from_state_dict(config, state, comfy.ops.manual_cast)
    assert isinstance(casting.blocks["0"].to_k_ip, comfy.ops.manual_cast.Linear)
    assert isinstance(casting.resampler.norm_out, comfy.ops.manual_cast.LayerNorm)
    assert isinstance(casting.decoupler.id_head[0], comfy.ops.manual_cast.Linear)
    layers = [m for m in casting.modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm))]
    assert layers and all(getattr(m, "comfy_cast_weights", False) for m in layers), "a raw torch layer is left"
    assert casting.state_dict().keys() == reference.state_dict().keys()
    with torch.no_grad():
        z = _z(2).to(dtype)
        assert torch.equal(casting.identity_tokens(z), reference.identity_tokens(z))
        assert torch.equal(casting.null_tokens(), reference.null_tokens())
        tokens = reference.identity_tokens(z)
        for got, want in zip(casting.block_kv(1, tokens), reference.block_kv(1, tokens)):
            assert torch.equal(got, want)
        assert torch.equal(casting.decoupler.identity(z), reference.decoupler.identity(z))
        # a float32 embedding into fp16 weights: the layers cast the weights, torch.nn would refuse
        if dtype == torch.float16:
            assert casting.resampler.proj_in(z.float()).dtype == torch.float32


def test_low_rank_kv_factorises_each_projection_and_round_trips():
    """kv_rank r: to_k_ip / to_v_ip are up(down(x)) with r * (token_dim + model_dim) weights (+ bias)
    instead of token_dim * model_dim; the state dict, a checkpoint and the K/V contract follow."""
    from iad.adapter import LowRankLinear, output_linear
    from iad.checkpoint import load_adapter, save_adapter

    full = AdapterConfig.tiny(num_registers=2)
    low = AdapterConfig.tiny(num_registers=2, kv_rank=8)
    a_full, a_low = IdentityAdapter.random(full, seed=4), IdentityAdapter.random(low, seed=4)
    kv = a_low.blocks["0"]
    assert isinstance(kv.to_k_ip, LowRankLinear) and output_linear(kv.to_v_ip) is kv.to_v_ip.up
    per_block = lambda a: sum(p.numel() for n, p in a.blocks["0"].named_parameters() if "to_" in n)  # noqa: E731
    assert per_block(a_low) == 2 * (8 * (full.token_dim + full.model_dim) + full.model_dim)
    assert per_block(a_full) == 2 * (full.token_dim * full.model_dim + full.model_dim)
    assert {k for k in a_low.state_dict() if k.startswith("blocks.0.to_k_ip")} == {
        "blocks.0.to_k_ip.down.weight", "blocks.0.to_k_ip.up.weight", "blocks.0.to_k_ip.up.bias"}
    tokens = a_low.identity_tokens(_z(2))
    k, v = a_low.block_kv(0, tokens)
    x = torch.cat([tokens, kv.registers.expand(2, -1, -1)], 1)
    torch.testing.assert_close(k, kv.to_k_ip.up(kv.to_k_ip.down(x)))
    torch.testing.assert_close(v, kv.to_v_ip.up(kv.to_v_ip.down(x)))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_adapter(save_adapter(a_low, Path(tmp) / "low.safetensors"))
    assert loaded.config.kv_rank == 8
    torch.testing.assert_close(loaded.block_kv(0, tokens)[0], k)
    with pytest.raises(ValueError, match="kv_rank 64 must be below"):
        AdapterConfig.tiny(kv_rank=64)   # token_dim 64: a rank-64 factorisation is no smaller
