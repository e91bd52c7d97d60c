"""IaD Model Loader -> IaD Identity -> IaD Apply through a real ComfyUI server, in native graphs with
LoRA, ModelSamplingSD3 and a core patch node, on tiny Wan, LTX-Video and HunyuanVideo models;
also under --lowvram / --novram. Results are compared bit for bit as saved latents."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

import pytest

from harness import apply_fixtures as af
from harness import tiny_models as tiny
from harness.comfy_server import ComfyServer
from harness.prompts import Prompt, run_latent
from conftest import make_server

pytestmark = pytest.mark.server

ADAPTERS = {"wan-t2v": "iad-tiny-wan.safetensors", "ltxv": "iad-tiny-ltxv.safetensors",
            "hunyuan-video": "iad-tiny-hunyuan.safetensors", "ltx2": "iad-tiny-ltx2.safetensors",
            "hunyuan-video-1.5": "iad-tiny-hunyuan-video-1.5.safetensors"}
WIDE_ADAPTER = "iad-wan-14b-width.safetensors"
LORA = "iad-tiny-wan-lora.safetensors"


def _tiny_wan_lora(path, rank: int = 4, seed: int = 7) -> None:
    """A LoRA on the tiny Wan's attention projections (cross-attention q/k/v/o and self-attention q),
    in the generic ``diffusion_model.<module>.lora_up/lora_down`` format ComfyUI loads for Wan."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for block in range(tiny.WAN21_T2V.num_layers):
        for module in ("cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "self_attn.q"):
            key = f"diffusion_model.blocks.{block}.{module}"
            state[f"{key}.lora_up.weight"] = torch.randn(128, rank, generator=g) * 0.5
            state[f"{key}.lora_down.weight"] = torch.randn(rank, 128, generator=g) * 0.5
    save_file(state, str(path))


@pytest.fixture(scope="module")
def iad_files(comfy, pack, tmp_path_factory):
    save_adapter = af.module("iad.checkpoint").save_adapter
    folder = tmp_path_factory.mktemp("iad-files")
    files = {}
    for name, filename in ADAPTERS.items():
        files[filename] = save_adapter(af.make_adapter(af.FAMILIES[name]), folder / filename)
    wide = af.module("iad.adapter").IdentityAdapter.random(af.module("iad.adapter").AdapterConfig.tiny(model_dim=5120, blocks=[0]))
    files[WIDE_ADAPTER] = save_adapter(wide, folder / WIDE_ADAPTER)
    _tiny_wan_lora(folder / LORA)
    files[LORA] = folder / LORA
    return files


def _install(server, files):
    for filename, path in files.items():
        server.add_model("loras" if filename == LORA else "iad", path, filename)
    for spec in tiny.other_family_specs():
        server.add_model("diffusion_models", tiny.ensure_other(spec), spec.filename)
    return server


@pytest.fixture(scope="module")
def server(comfy_server, iad_files):
    return _install(comfy_server, iad_files)


def graph(family: str = "wan-t2v", iad=(), lora: bool = False, core_patch: bool = False, cfg: float = 3.0,
          steps: int = 2, advanced: bool = False, prefix: str = "iad_apply"):
    """UNETLoader -> [LoRA] -> ModelSamplingSD3 -> IaD Apply* -> [RescaleCFG] -> KSampler -> SaveLatent.
    ``iad`` is a list of dicts: weight, start, end, uncond, adapter, face_seed. Without "uncond" the
    prompt omits uncond_identity (as prompts written before it existed do)."""
    p = Prompt()
    unet = {"wan-t2v": tiny.WAN21_T2V, "ltxv": tiny.LTXV_TINY, "hunyuan-video": tiny.HUNYUAN_VIDEO_TINY, "ltx2": tiny.LTX2_TINY,
            "hunyuan-video-1.5": tiny.HUNYUAN_VIDEO15_TINY}[family].filename
    model = p.add("UNETLoader", unet_name=unet, weight_dtype="default")[0]
    if lora:
        model = p.add("LoraLoaderModelOnly", model=model, lora_name=LORA, strength_model=1.0)[0]
    model = p.add("ModelSamplingSD3", model=model, shift=8.0)[0]
    for item in iad:
        loader = p.add("IaDModelLoader", adapter_name=item.get("adapter", ADAPTERS[family]))
        faces = p.add("IaDTestFaceEmbeds", seed=item.get("face_seed", 0), count=3)
        identity = p.add("IaDIdentity", iad_model=loader[0], face_embeds=faces[0], decoupling="auto", strength=1.0)
        uncond = {"uncond_identity": item["uncond"]} if "uncond" in item else {}
        model = p.add("IaDApply", model=model, iad_model=loader[0], identity=identity[0], weight=item.get("weight", 1.0),
                      start_percent=item.get("start", 0.0), end_percent=item.get("end", 1.0), **uncond)[0]
    if core_patch:
        model = p.add("RescaleCFG", model=model, multiplier=0.7)[0]
    if family == "wan-t2v":
        pos = p.add("IaDTestWanConditioning", text="a person smiles", length=16, scale=1.0)
        neg = p.add("IaDTestWanConditioning", text="", length=16, scale=1.0)
        latent = p.add("EmptyHunyuanLatentVideo", width=64, height=64, length=5, batch_size=1)
    else:
        kind = {"ltxv": "ltxv", "ltx2": "ltx2", "hunyuan-video": "hunyuan_video", "hunyuan-video-1.5": "hunyuan_video15"}[family]
        pos = p.add("IaDTestVideoConditioning", family=kind, text="a person smiles", length=16)
        neg = p.add("IaDTestVideoConditioning", family=kind, text="", length=16)
        if family in ("ltxv", "ltx2"):   # LTX-2 video only here; its audio stream: test_apply_ltx2
            latent = p.add("EmptyLTXVLatentVideo", width=128, height=128, length=9, batch_size=1)
        elif family == "hunyuan-video-1.5":
            latent = p.add("EmptyHunyuanVideo15Latent", width=128, height=128, length=5, batch_size=1)
        else:
            latent = p.add("EmptyHunyuanLatentVideo", width=64, height=64, length=5, batch_size=1)
    common = dict(model=model, positive=pos[0], negative=neg[0], latent_image=latent[0], steps=steps, cfg=cfg,
                  sampler_name="euler", scheduler="simple")
    if advanced:  # same computation as KSampler(denoise=1), but a different node: never served from cache
        sampled = p.add("KSamplerAdvanced", add_noise="enable", noise_seed=0, start_at_step=0, end_at_step=10000,
                        return_with_leftover_noise="disable", **common)
    else:
        sampled = p.add("KSampler", seed=0, denoise=1.0, **common)
    save = p.add("SaveLatent", samples=sampled[0], filename_prefix=prefix)
    return p, save


def test_nodes_are_listed_with_the_adapters_in_models_iad(server):
    info = server.object_info()
    assert {"IaDModelLoader", "IaDIdentity", "IaDApply"} <= set(info)
    options = info["IaDModelLoader"]["input"]["required"]["adapter_name"]
    listed = options[1]["options"] if isinstance(options[1], dict) and "options" in options[1] else options[0]
    assert set(ADAPTERS.values()) <= set(listed)
    apply_inputs = info["IaDApply"]["input"]
    assert apply_inputs["required"]["start_percent"][1]["default"] == 0.75      # PersonalVideo: the last quarter
    assert apply_inputs["required"]["end_percent"][1]["default"] == 1.0
    uncond = apply_inputs["optional"]["uncond_identity"]
    options = uncond[1]["options"] if "options" in uncond[1] else uncond[0]
    assert options == ["none", "same as cond", "null identity (Lynx)"] and uncond[1]["default"] == "none"


def test_wan_inactive_is_bit_identical_and_nothing_leaks(server):
    base = run_latent(server, graph(prefix="base"))
    assert torch.equal(run_latent(server, graph(iad=[{"weight": 0.0}], prefix="w0")), base)
    assert torch.equal(run_latent(server, graph(iad=[{"start": 0.99, "end": 1.0}], prefix="never")), base)
    patched = run_latent(server, graph(iad=[{}], prefix="patched"))
    assert (patched - base).abs().max() > 1e-3
    # The same loaded model object (UNETLoader is cached), unpatched again, re-sampled.
    assert torch.equal(run_latent(server, graph(advanced=True, prefix="after")), base)
    # The step range gates: identity only in the second half changes less than the full range.
    base4 = run_latent(server, graph(steps=4, prefix="base4"))
    full4 = run_latent(server, graph(steps=4, iad=[{}], prefix="full4"))
    late4 = run_latent(server, graph(steps=4, iad=[{"start": 0.5, "end": 1.0}], prefix="late4"))
    assert (late4 - base4).abs().max() > 1e-3 and (late4 - full4).abs().max() > 1e-3


def test_wan_full_native_chain_with_lora_model_sampling_core_patch_and_two_applies(server):
    lora_only = run_latent(server, graph(lora=True, core_patch=True, prefix="lora"))
    one = run_latent(server, graph(lora=True, core_patch=True, iad=[{"weight": 0.6}], prefix="one"))
    two = run_latent(server, graph(lora=True, core_patch=True, iad=[{"weight": 0.6}, {"weight": 0.6, "face_seed": 1}],
                                   prefix="two"))
    no_lora = run_latent(server, graph(core_patch=True, iad=[{"weight": 0.6}], prefix="nolora"))
    assert (one - lora_only).abs().max() > 1e-3, "IaD had no effect on top of the LoRA"
    assert (one - no_lora).abs().max() > 1e-3, "the LoRA had no effect under IaD (its keys were not applied?)"
    assert (two - one).abs().max() > 1e-3, "the second IaD Apply did not compose"
    assert "lora key not loaded" not in server.log_text()
    assert torch.isfinite(two).all()
    # The negative pass: no identity (default, = the prompt without uncond_identity), the same, or null tokens.
    none = run_latent(server, graph(lora=True, iad=[{"uncond": "none"}], prefix="unc-none"))
    same = run_latent(server, graph(lora=True, iad=[{"uncond": "same as cond"}], prefix="unc-same"))
    null = run_latent(server, graph(lora=True, iad=[{"uncond": "null identity (Lynx)"}], prefix="unc-null"))
    assert torch.equal(none, run_latent(server, graph(lora=True, iad=[{}], prefix="unc-default")))
    assert (same - none).abs().max() > 1e-3 and (null - none).abs().max() > 1e-3 and (null - same).abs().max() > 1e-3
    cfg1 = run_latent(server, graph(lora=True, iad=[{}], cfg=1.0, prefix="cfg1"))
    assert torch.isfinite(cfg1).all() and not torch.equal(cfg1, run_latent(server, graph(lora=True, cfg=1.0, prefix="cfg1b")))


@pytest.mark.parametrize("family", af.available_families(["ltxv", "ltx2", "hunyuan-video", "hunyuan-video-1.5"]))
def test_ltx_and_hunyuan_families(server, family):
    base = run_latent(server, graph(family, prefix=f"{family}-base"))
    assert torch.equal(run_latent(server, graph(family, iad=[{"weight": 0.0}], prefix=f"{family}-w0")), base)
    patched = run_latent(server, graph(family, iad=[{}], prefix=f"{family}-on"))
    assert (patched - base).abs().max() > 1e-3
    assert torch.equal(run_latent(server, graph(family, advanced=True, prefix=f"{family}-after")), base)


def test_mismatched_adapter_fails_clearly_and_the_server_keeps_serving(server):
    prompt, _ = graph(iad=[{"adapter": WIDE_ADAPTER}], prefix="wide")
    result = server.run(prompt)
    assert not result.ok
    message = result.error["exception_message"]
    assert "width 5120 (Wan 2.1/2.2 14B)" in message and "width 128" in message
    prompt, _ = graph(family="ltxv", iad=[{"adapter": ADAPTERS["wan-t2v"]}], prefix="wrongfamily")
    result = server.run(prompt)
    assert not result.ok and "made for Wan, but the model is LTX-Video" in result.error["exception_message"]
    assert server.is_alive()
    assert run_latent(server, graph(steps=1, prefix="still-serving")).shape == (1, 16, 2, 8, 8)


# ComfyUI refuses --lowvram/--novram together with --cpu, and without a GPU it has no VRAM modes at
# all. With a GPU the server runs the real flags; without one it runs --disable-smart-memory, which
# offloads (unloads) the model and the adapter after every prompt. The NO_VRAM / LOW_VRAM partial
# loading code itself is exercised in-process (test_apply_inprocess.py::test_offloaded_partial_loading).
HAS_GPU = torch.cuda.is_available()
OFFLOAD_FLAGS = ["--lowvram", "--novram"] if HAS_GPU else ["--disable-smart-memory"]


class _DeviceServer(ComfyServer):
    def command(self):
        return [arg for arg in super().command() if arg != "--cpu"]


@pytest.fixture
def offload_server(tmp_path, tiny_models, iad_files):
    started = []

    def start(flag):
        server = make_server(tmp_path / flag.strip("-"), tiny_models, [flag])
        if HAS_GPU:
            server.__class__ = _DeviceServer
        started.append(server)
        return _install(server.start(), iad_files)

    yield start
    for server in started:
        server.stop()


@pytest.mark.parametrize("flag", OFFLOAD_FLAGS)
def test_offload_modes_run_and_match(server, offload_server, flag):
    prompt = graph(lora=True, iad=[{"start": 0.3}], prefix=f"ref{flag}")
    reference = run_latent(server, prompt)
    other = offload_server(flag)
    first = run_latent(other, graph(lora=True, iad=[{"start": 0.3}], prefix=f"out{flag}"))
    second = run_latent(other, graph(lora=True, iad=[{"start": 0.3}], advanced=True, prefix=f"again{flag}"))
    if HAS_GPU:
        assert torch.allclose(first, reference.to(first), atol=2e-2, rtol=2e-2)
    else:
        assert torch.equal(first, reference)
    assert torch.equal(second, first), "the result changed after the model and adapter were offloaded and reloaded"
