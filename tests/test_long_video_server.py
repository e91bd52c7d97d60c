"""IaD Apply in ComfyUI's own long-video mechanism, context windows, through a real server on tiny
models: ``WanContextWindowsManual`` on Wan 2.1 (both ComfyUI versions) and ``LTXVContextWindows``
on LTX-Video (v0.28.2, where it exists). Core runs the model once per window and fuses the windows'
outputs; IaD's patches run inside each call. For each mechanism:

- the windows really are used (the video differs from one pass), and IaD Apply before or after the
  windows node gives the same video, bit for bit;
- weight 0 with windows is bit-identical to windows alone, and the identity changes the video;
- identity tokens are computed once per run and each block's identity K/V once, however many
  windows and steps call the model (the probe counts the adapter's modules);
- the step range is resolved against the sampled model in every window: with the identity on the
  last half of the steps, every window call of the first half is bit-identical to the run without
  identity and the first call of the second half is not;
- a window as long as the video (core then samples in one pass) gives exactly IaD without windows.

Extension, ComfyUI's other way to a long video, chunk after chunk: Wan 2.2 S2V's
``WanSoundImageToVideoExtend`` (both versions) and last-frame continuation with Wan I2V. Every
chunk gets the same identity: the resampler never runs while sampling, the first chunk projects each
block's identity K/V once and the second reuses those very tensors; weight 0 leaves every chunk
bit-identical, and the identity changes them.

The causal Wan's KV cache (streaming) is covered in tests/test_wan_variants_server.py: a run
without identity after one with it gives the first run's video, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from harness import apply_fixtures as af
from harness import tiny_models as tiny
from harness import tiny_wan_variants as tv
from harness.paths import comfyui_at_least
from harness.prompts import Prompt, run_latent, saved_latent

pytestmark = pytest.mark.server


@dataclass(frozen=True)
class Mechanism:
    name: str
    family: str                 # apply_fixtures family
    windows_node: str
    latent: tuple               # (node, inputs)
    frames: int                 # video frames
    window: int                 # context_length, video frames
    overlap: int                # context_overlap, video frames
    cross_attention: str        # the patched module in the first block
    adapter: str


WAN = Mechanism("wan-context-windows", "wan-t2v", "WanContextWindowsManual",
                ("EmptyHunyuanLatentVideo", dict(width=64, height=64, length=33, batch_size=1)),
                33, 17, 8, "blocks.0.cross_attn", "iad-long-wan.safetensors")                  # 9 latent frames, windows of 5
LTXV = Mechanism("ltxv-context-windows", "ltxv", "LTXVContextWindows",
                 ("EmptyLTXVLatentVideo", dict(width=128, height=128, length=41, batch_size=1)),
                 41, 17, 8, "transformer_blocks.0.attn2", "iad-long-ltxv.safetensors")        # 6 latent frames, windows of 3
MECHANISMS = [WAN, LTXV]
STEPS = 4
PHOTO = "iad_long_video_start.png"
I2V_ADAPTER = "iad-long-wan-i2v.safetensors"
KV = ("adapter:resampler", "adapter:blocks.0.to_k_ip")


def _here(m: Mechanism) -> bool:
    return m.windows_node != "LTXVContextWindows" or comfyui_at_least("0.28")


@pytest.fixture(scope="module")
def server(comfy_server, tmp_path_factory):
    save_adapter = af.module("iad.checkpoint").save_adapter
    folder = tmp_path_factory.mktemp("long-video-adapters")
    for m in MECHANISMS:
        comfy_server.add_model("iad", save_adapter(af.make_adapter(af.FAMILIES[m.family]), folder / m.adapter), m.adapter)
    comfy_server.add_model("diffusion_models", tiny.ensure_other(tiny.LTXV_TINY), tiny.LTXV_TINY.filename)
    comfy_server.add_model("diffusion_models", tv.ensure_variant(tv.S2V), tv.S2V.filename)
    comfy_server.add_model("diffusion_models", tiny.ensure(tiny.WAN21_I2V), tiny.WAN21_I2V.filename)
    comfy_server.add_model("iad", save_adapter(af.make_adapter(af.FAMILIES["wan-i2v"]), folder / I2V_ADAPTER), I2V_ADAPTER)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        comfy_server.input_dir / PHOTO)
    return comfy_server


def _windows(p, server, m: Mechanism, model, length: int | None = None, schedule: str | None = None):
    """The core windows node with its defaults for every input this ComfyUI has, FreeNoise off (it
    reshuffles the noise, a separate matter), our window and overlap."""
    spec = server.object_info()[m.windows_node]["input"]
    values = {}
    for section in ("required", "optional"):
        for name, item in spec.get(section, {}).items():
            options = item[1] if len(item) > 1 and isinstance(item[1], dict) else {}
            choices = item[0] if isinstance(item[0], list) else options.get("options")
            if "default" in options:
                values[name] = options["default"]
            elif choices:   # older ComfyUI: a combo's default is its first option
                values[name] = choices[0]
    values.update(context_length=length or m.window, context_overlap=m.overlap, freenoise=False)
    if schedule:
        values["context_schedule"] = schedule
    return p.add(m.windows_node, model=model, **{k: v for k, v in values.items() if k != "model"})[0]


def graph(server, m: Mechanism, iad: dict | None = None, windows: str = "before", window_length: int | None = None,
          probe: tuple[str, ...] = (), tag: str = "", schedule: str | None = None):
    """UNETLoader -> ModelSamplingSD3 -> [windows node and IaD Apply, in ``windows`` order] -> [probe]
    -> KSampler (4 steps, CFG 3) -> SaveLatent. ``windows``: "before" IaD, "after" it, or "none"."""
    family = af.FAMILIES[m.family]
    p = Prompt()
    model = p.add("UNETLoader", unet_name=family.spec.filename, weight_dtype="default")[0]
    model = p.add("ModelSamplingSD3", model=model, shift=5.0)[0]
    if windows == "before":
        model = _windows(p, server, m, model, window_length, schedule)
    if iad is not None:
        loader = p.add("IaDModelLoader", adapter_name=m.adapter)
        faces = p.add("IaDTestFaceEmbeds", seed=0, count=3)
        identity = p.add("IaDIdentity", iad_model=loader[0], face_embeds=faces[0], decoupling="auto", strength=1.0)
        model = p.add("IaDApply", model=model, iad_model=loader[0], identity=identity[0], weight=iad.get("weight", 1.0),
                      start_percent=iad.get("start", 0.0), end_percent=1.0)[0]
    if windows == "after":
        model = _windows(p, server, m, model, window_length, schedule)
    if probe:
        model = p.add("IaDTestStreamProbe", model=model, modules=",".join(probe), name=f"{m.name}-{tag}", calls=64)[0]
    if m.family == "wan-t2v":
        pos = p.add("IaDTestWanConditioning", text="a person walks and smiles", length=16, scale=1.0)
        neg = p.add("IaDTestWanConditioning", text="", length=16, scale=1.0)
    else:
        pos = p.add("IaDTestVideoConditioning", family="ltxv", text="a person walks and smiles", length=16)
        neg = p.add("IaDTestVideoConditioning", family="ltxv", text="", length=16)
    node, inputs = m.latent
    latent = p.add(node, **inputs)
    sampled = p.add("KSampler", model=model, positive=pos[0], negative=neg[0], latent_image=latent[0], seed=0,
                    steps=STEPS, cfg=3.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    save = p.add("SaveLatent", samples=sampled[0], filename_prefix=f"iad_long_{m.name}_{tag}")
    return p, save


def probed(server, m: Mechanism, tag: str) -> dict[str, torch.Tensor]:
    return probed_file(server, f"{m.name}-{tag}")


@pytest.mark.parametrize("m", MECHANISMS, ids=[m.name for m in MECHANISMS])
def test_iad_apply_composes_with_context_windows(server, m):
    if not _here(m):
        assert m.windows_node not in server.object_info(), "this ComfyUI has the node: run the test"
        return
    one_pass = run_latent(server, graph(server, m, windows="none", tag="one-pass"))
    windows = run_latent(server, graph(server, m, probe=(m.cross_attention,), tag="windows"))
    assert not torch.equal(windows, one_pass), "the windows were not used"
    assert torch.equal(run_latent(server, graph(server, m, iad={"weight": 0.0}, tag="w0")), windows), (
        "weight 0 with windows is not windows alone")
    before = run_latent(server, graph(server, m, iad={}, windows="before", tag="before"))
    after = run_latent(server, graph(server, m, iad={}, windows="after", tag="after",
                                     probe=(m.cross_attention, "adapter:resampler", "adapter:blocks.0.to_k_ip")))
    assert torch.equal(before, after), "IaD Apply before or after the windows node gave different videos"
    assert (after - windows).abs().max() > 1e-4, "the identity did not change the windowed video"

    # once per run: the model ran once per window and step (and more than once per step), the
    # identity tokens never, each block's K/V once
    counts = probed(server, m, "after")
    calls = int(counts[f"{m.cross_attention}|count"])
    assert calls >= 2 * STEPS, calls
    assert int(counts["adapter:resampler|count"]) == 0
    assert int(counts["adapter:blocks.0.to_k_ip|count"]) == 1


@pytest.mark.parametrize("m", MECHANISMS, ids=[m.name for m in MECHANISMS])
def test_the_step_range_is_resolved_in_every_window(server, m):
    if not _here(m):
        return
    # the static schedule keeps the same windows at every step, so calls map to steps
    run_latent(server, graph(server, m, probe=(m.cross_attention,), tag="static", schedule="standard_static"))
    base = probed(server, m, "static")
    run_latent(server, graph(server, m, iad={"start": 0.5}, probe=(m.cross_attention,), tag="late-half",
                             schedule="standard_static"))
    late = probed(server, m, "late-half")
    calls = int(base[f"{m.cross_attention}|count"])
    per_step = calls // STEPS
    assert calls % STEPS == 0 and per_step >= 2, "expected the same several windows at every step"
    for call in range(2 * per_step):   # the first half of the steps: identity off in every window
        key = f"{m.cross_attention}|{call}|out0"
        assert torch.equal(late[key], base[key]), f"window call {call} (step {call // per_step}) got the identity"
    first_on = f"{m.cross_attention}|{2 * per_step}|out0"
    assert (late[first_on] - base[first_on]).abs().max() > 1e-6, "the second half's first window got no identity"


@pytest.mark.parametrize("m", MECHANISMS, ids=[m.name for m in MECHANISMS])
def test_a_window_as_long_as_the_video_is_iad_in_one_pass(server, m):
    """Core samples in one pass when the window covers the video; so must IaD."""
    if not _here(m):
        return
    whole = run_latent(server, graph(server, m, iad={}, windows="after", window_length=m.frames, tag="whole"))
    assert torch.equal(whole, run_latent(server, graph(server, m, iad={}, windows="none", tag="iad-one-pass")))


def _chunk_identity(p, model, adapter: str, weight: float):
    loader = p.add("IaDModelLoader", adapter_name=adapter)
    faces = p.add("IaDTestFaceEmbeds", seed=0, count=3)
    identity = p.add("IaDIdentity", iad_model=loader[0], face_embeds=faces[0], decoupling="auto", strength=1.0)
    return p.add("IaDApply", model=model, iad_model=loader[0], identity=identity[0], weight=weight, start_percent=0.0,
                 end_percent=1.0)[0]


def _sample(p, model, pos, neg, latent, probe_name: str | None):
    if probe_name:
        model = p.add("IaDTestStreamProbe", model=model, modules=",".join(KV), name=probe_name, calls=2)[0]
    return p.add("KSampler", model=model, positive=pos, negative=neg, latent_image=latent, seed=0, steps=2, cfg=2.0,
                 sampler_name="euler", scheduler="simple", denoise=1.0)[0]


def extension_graph(kind: str, weight: float | None, tag: str):
    """Two chunks with one model: ``s2v`` (WanSoundImageToVideo, then WanSoundImageToVideoExtend on the
    first chunk's latent) or ``i2v`` (WanImageToVideo, then again from the first chunk's last decoded
    frame). Returns the prompt and both chunks' SaveLatent nodes."""
    p = Prompt()
    unet = tv.S2V.filename if kind == "s2v" else tiny.WAN21_I2V.filename
    model = p.add("UNETLoader", unet_name=unet, weight_dtype="default")[0]
    model = p.add("ModelSamplingSD3", model=model, shift=5.0)[0]
    if weight is not None:
        model = _chunk_identity(p, model, WAN.adapter if kind == "s2v" else I2V_ADAPTER, weight)
    probe = (lambda chunk: f"{kind}-{tag}-chunk{chunk}") if weight else (lambda chunk: None)   # weight 0: no adapter
    pos = p.add("IaDTestWanConditioning", text="a person talks and smiles", length=16, scale=1.0)[0]
    neg = p.add("IaDTestWanConditioning", text="", length=16, scale=1.0)[0]
    vae = p.add("VAELoader", vae_name=tiny.WAN21_VAE.filename)[0]
    photo = p.add("LoadImage", image=PHOTO)[0]
    size = dict(width=64, height=64, length=5)
    if kind == "s2v":
        audio = p.add("IaDTestAudioEncoderOutput", encoder="wav2vec2-large", seconds=2.0, seed=2)[0]
        first = p.add("WanSoundImageToVideo", positive=pos, negative=neg, vae=vae, batch_size=1,
                      audio_encoder_output=audio, ref_image=photo, **size)
        chunk1 = _sample(p, model, first[0], first[1], first[2], probe(1))
        second = p.add("WanSoundImageToVideoExtend", positive=first[0], negative=first[1], vae=vae, length=5,
                       video_latent=chunk1, audio_encoder_output=audio, ref_image=photo)
        chunk2 = _sample(p, model, second[0], second[1], second[2], probe(2))
    else:
        clip = p.add("IaDTestClipVisionOutput", seed=1)[0]
        first = p.add("WanImageToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, start_image=photo,
                      clip_vision_output=clip, **size)
        chunk1 = _sample(p, model, first[0], first[1], first[2], probe(1))
        frames = p.add("VAEDecode", samples=chunk1, vae=vae)[0]
        last = p.add("ImageFromBatch", image=frames, batch_index=4, length=1)[0]
        second = p.add("WanImageToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, start_image=last,
                       clip_vision_output=clip, **size)
        chunk2 = _sample(p, model, second[0], second[1], second[2], probe(2))
    saves = [p.add("SaveLatent", samples=c, filename_prefix=f"iad_long_{kind}_{tag}_{i}") for i, c in ((1, chunk1), (2, chunk2))]
    return p, saves


def run_chunks(server, prompt_and_saves) -> list[torch.Tensor]:
    prompt, saves = prompt_and_saves
    result = server.run_ok(prompt)
    return [saved_latent(server, result, save) for save in saves]


@pytest.mark.parametrize("kind", ["s2v", "i2v"])
def test_iad_apply_keeps_one_identity_across_extension_chunks(server, kind):
    base = run_chunks(server, extension_graph(kind, None, "base"))
    zero = run_chunks(server, extension_graph(kind, 0.0, "w0"))
    assert all(torch.equal(a, b) for a, b in zip(zero, base)), "weight 0 changed a chunk"
    with_id = run_chunks(server, extension_graph(kind, 1.0, "iad"))
    for chunk, (a, b) in enumerate(zip(with_id, base), 1):
        assert (a - b).abs().max() > 1e-4, f"the identity did not change chunk {chunk}"
    # the first chunk projects each block's identity K/V once; the second reuses exactly those
    one, two = probed_file(server, f"{kind}-iad-chunk1"), probed_file(server, f"{kind}-iad-chunk2")
    assert int(one["adapter:resampler|count"]) == 0 and int(two["adapter:resampler|count"]) == 0
    assert int(one["adapter:blocks.0.to_k_ip|count"]) == 1 and int(two["adapter:blocks.0.to_k_ip|count"]) == 0


def probed_file(server, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(server.output_dir / "iad_probe" / f"{name}.safetensors"))
