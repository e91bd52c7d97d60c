"""IaD Apply on every Wan variant ComfyUI loads, through a real server, each in its own core graph:
a tiny model of the real class that ComfyUI's loader detects from the file, the variant's own core
conditioning node (WanVaceToVideo, WanSoundImageToVideo, WanHuMoImageToVideo, WanAnimateToVideo,
WanSCAILToVideo, WanDancerVideo, WanPhantomSubjectToVideo, WanInfiniteTalkToVideo, the causal model's
ARVideoI2V + SamplerARVideo, Fun Camera / Control), and a probe (IaDTestStreamProbe) that records
what the model's modules read and return while it samples. For each variant:

- weight 0 is bit-identical to the graph without IaD, and the identity changes the video;
- the identity changes the video rows only: in the first patched block's cross-attention output of
  the first model call, every row that is not the video (reference, motion, pose, subject tokens)
  is bit-identical, and the video rows differ;
- every other stream reads bit-identical inputs in that call (text K/V, audio, pose, face motion,
  VACE hints, camera, music, the reference-image embedding), whatever the identity does;
- IaD Apply before or after ModelSamplingSD3 gives the same video, bit for bit;
- identity tokens are computed once per run: the adapter's resampler never runs while sampling,
  and each block's identity K/V are projected once.

Variants the running ComfyUI lacks (SCAIL, Dancer, the causal model and InfiniteTalk on 0.3.75) are
checked to be absent instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from harness import apply_fixtures as af
from harness import tiny_models as tiny
from harness import tiny_wan_variants as tv
from harness.prompts import Prompt, run_latent
from harness.workflow_fixtures import TINY_LYNX_FOLDER, workflow_assets  # noqa: F401  (fixture)

pytestmark = pytest.mark.server

WIDTH = HEIGHT = 64          # latent 8 x 8: 16 tokens per latent frame
LENGTH = 5                   # 2 latent frames
PER_FRAME = 16
VIDEO = 2 * PER_FRAME        # the video's tokens (without a frame the latent carries for a reference)
PHOTO = "iad_variant_reference.png"
ADAPTER, ADAPTER_160 = "iad-tiny-wan-variants.safetensors", "iad-tiny-wan-variants-160.safetensors"
TEXT_KV = ["blocks.0.cross_attn.k", "blocks.0.cross_attn.v"]


@dataclass
class Case:
    """One variant's graph: the model file, how its conditioning is built, where the video sits in the
    first block's sequence (start, stop, sequence length), and which modules carry its other streams."""

    name: str
    spec: object
    condition: object                    # (prompt, model, positive, negative, vae, photo, frames) -> (model, pos, neg, latent)
    rows: tuple[int, int, int | None]
    # module path -> the tags (in0, kw:x, out0, ...) that carry the video stream there (they may differ)
    streams: dict[str, tuple[str, ...]] = field(default_factory=dict)
    cfg: float = 2.0
    adapter: str = ADAPTER
    causal: bool = False

    def available(self) -> bool:
        return not isinstance(self.spec, tv.WanVariantSpec) or tv.available(self.spec)

    @property
    def filename(self) -> str:
        return self.spec.filename


def _size(**extra):
    return dict(width=WIDTH, height=HEIGHT, length=LENGTH, **extra)


def _clip(p):
    return p.add("IaDTestClipVisionOutput", seed=1)[0]


def vace(p, model, pos, neg, vae, photo, frames):
    out = p.add("WanVaceToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, strength=1.0,
                reference_image=photo, **_size())
    return model, out[0], out[1], out[2]


def camera(with_clip: bool):
    def build(p, model, pos, neg, vae, photo, frames):
        embedding = p.add("WanCameraEmbedding", camera_pose="Zoom In", **_size())
        extra = {"clip_vision_output": _clip(p)} if with_clip else {}
        out = p.add("WanCameraImageToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, start_image=photo,
                    camera_conditions=embedding[0], **extra, **_size())
        return model, out[0], out[1], out[2]
    return build


def fun_control21(p, model, pos, neg, vae, photo, frames):
    out = p.add("WanFunControlToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, clip_vision_output=_clip(p),
                start_image=photo, control_video=frames, **_size())
    return model, out[0], out[1], out[2]


def fun_control22(p, model, pos, neg, vae, photo, frames):
    out = p.add("Wan22FunControlToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, ref_image=photo,
                control_video=frames, **_size())
    return model, out[0], out[1], out[2]


def s2v(p, model, pos, neg, vae, photo, frames):
    audio = p.add("IaDTestAudioEncoderOutput", encoder="wav2vec2-large", seconds=1.0, seed=2)
    out = p.add("WanSoundImageToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, audio_encoder_output=audio[0],
                ref_image=photo, ref_motion=frames, **_size())
    return model, out[0], out[1], out[2]


def humo(p, model, pos, neg, vae, photo, frames):
    audio = p.add("IaDTestAudioEncoderOutput", encoder="whisper-large-v3", seconds=1.0, seed=3)
    out = p.add("WanHuMoImageToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, audio_encoder_output=audio[0],
                ref_image=photo, **_size())
    return model, out[0], out[1], out[2]


def animate(p, model, pos, neg, vae, photo, frames):
    out = p.add("WanAnimateToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, clip_vision_output=_clip(p),
                reference_image=photo, face_video=photo, pose_video=frames, continue_motion_max_frames=5,
                video_frame_offset=0, **_size())
    return model, out[0], out[1], out[2]


def scail(masks: bool):
    def build(p, model, pos, neg, vae, photo, frames):
        extra = {"pose_video_mask": frames, "reference_image_mask": photo} if masks else {}   # SCAIL-2's masks
        out = p.add("WanSCAILToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, pose_video=frames,
                    reference_image=photo, clip_vision_output=_clip(p), replacement_mode=False, pose_strength=1.0,
                    pose_start=0.0, pose_end=1.0, video_frame_offset=0, previous_frame_count=5, **extra, **_size())
        return model, out[0], out[1], out[2]
    return build


def dancer(p, model, pos, neg, vae, photo, frames):
    audio = p.add("IaDTestAudio", seconds=1.0, seed=4)
    music = p.add("WanDancerEncodeAudio", audio=audio[0], video_frames=LENGTH, audio_inject_scale=1.0)
    out = p.add("WanDancerVideo", positive=pos, negative=neg, vae=vae, clip_vision_output=_clip(p),
                clip_vision_output_ref=_clip(p), start_image=photo, audio_encoder_output=music[0], **_size())
    return model, out[0], out[1], out[2]


def phantom(p, model, pos, neg, vae, photo, frames):
    out = p.add("WanPhantomSubjectToVideo", positive=pos, negative=neg, vae=vae, batch_size=1, images=photo, **_size())
    return model, out[0], out[1], out[3]


def infinitetalk(p, model, pos, neg, vae, photo, frames):
    patch = p.add("ModelPatchLoader", name=tv.INFINITETALK_PATCH)
    audio = p.add("IaDTestAudioEncoderOutput", encoder="wav2vec2-base", seconds=1.0, seed=5)
    out = p.add("WanInfiniteTalkToVideo", mode="single_speaker", model=model, model_patch=patch[0], positive=pos,
                negative=neg, vae=vae, start_image=photo, audio_encoder_output_1=audio[0], motion_frame_count=1,
                audio_scale=1.0, **_size())
    return out[0], out[1], out[2], out[3]


def causal(p, model, pos, neg, vae, photo, frames):
    out = p.add("ARVideoI2V", model=model, vae=vae, start_image=photo, batch_size=1, **_size())
    return out[0], pos, neg, out[1]


VIDEO_SIDE = ("in0", "kw:x", "out0")   # a module after block 0 reads the video stream first and returns it
CASES = [
    Case("vace", tv.VACE, vace, (0, 3 * PER_FRAME, 3 * PER_FRAME), {"vace_blocks.0": (), "vace_blocks.1": ()}),
    Case("fun-camera-2.1", tv.CAMERA21, camera(True), (0, VIDEO, VIDEO), {"control_adapter": ()}),
    Case("fun-camera-2.2", tv.CAMERA22, camera(False), (0, VIDEO, VIDEO), {"control_adapter": ()}),
    Case("fun-control-2.1", tv.FUN_CONTROL21, fun_control21, (0, VIDEO, VIDEO), {"img_emb": ()}),
    Case("fun-control-2.2", tv.FUN_CONTROL22, fun_control22, (PER_FRAME, PER_FRAME + VIDEO, PER_FRAME + VIDEO),
         {"ref_conv": ()}),
    Case("s2v", tv.S2V, s2v, (0, VIDEO, None),
         {"casual_audio_encoder": (), "frame_packer": (), "audio_injector.injector.0": VIDEO_SIDE}),
    Case("humo", tv.HUMO, humo, (0, VIDEO, VIDEO + PER_FRAME),
         {"audio_proj": (), "blocks.0.audio_cross_attn_wrapper": VIDEO_SIDE}),
    Case("animate", tv.ANIMATE, animate, (0, 3 * PER_FRAME, 3 * PER_FRAME),
         {"face_encoder": (), "pose_patch_embedding": (), "face_adapter.fuser_blocks.0": VIDEO_SIDE}),
    Case("scail", tv.SCAIL, scail(False), (PER_FRAME, PER_FRAME + VIDEO, None), {"patch_embedding_pose": ()}),
    Case("scail2", tv.SCAIL2, scail(True), (PER_FRAME, PER_FRAME + VIDEO, None),
         {"patch_embedding_pose": (), "patch_embedding_mask": ()}),
    Case("dancer", tv.DANCER, dancer, (0, VIDEO, VIDEO), {"music_projection": (), "music_injector.injector.0": VIDEO_SIDE},
         cfg=1.0),
    Case("phantom", tiny.WAN21_T2V, phantom, (0, VIDEO, VIDEO + PER_FRAME)),
    Case("infinitetalk", tv.INFINITETALK_BASE, infinitetalk, (0, VIDEO, VIDEO),
         {"model_patch:blocks.0.audio_cross_attn": VIDEO_SIDE}, cfg=1.0, adapter=ADAPTER_160),
    Case("causal", tv.CAUSAL, causal, (0, PER_FRAME, PER_FRAME), cfg=1.0, causal=True),
]
# Variants the running ComfyUI has (SCAIL, Dancer, the causal model and InfiniteTalk came after 0.3.75).
HERE = [c for c in CASES if c.available()]
HERE_IDS = [c.name for c in HERE]


@pytest.fixture(scope="module")
def server(comfy_server, tmp_path_factory):
    save_adapter = af.module("iad.checkpoint").save_adapter
    AdapterConfig, IdentityAdapter = af.module("iad.adapter").AdapterConfig, af.module("iad.adapter").IdentityAdapter
    folder = tmp_path_factory.mktemp("variant-adapters")
    for name, dim in ((ADAPTER, 128), (ADAPTER_160, 160)):
        adapter = IdentityAdapter.random(AdapterConfig.tiny(family="wan2.1", model_dim=dim, blocks=[0, 1]), seed=7)
        comfy_server.add_model("iad", save_adapter(adapter, folder / name), name)
    for case in CASES:
        if case.available():
            path = tv.ensure_variant(case.spec) if isinstance(case.spec, tv.WanVariantSpec) else tiny.ensure(case.spec)
            comfy_server.add_model("diffusion_models", path, case.filename)
    if tv.available(tv.INFINITETALK_BASE):
        comfy_server.add_model("model_patches", tv.ensure_infinitetalk_patch(), tv.INFINITETALK_PATCH)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(comfy_server.input_dir / PHOTO)
    return comfy_server


def graph(case: Case, iad: dict | None = None, order: str = "shift, iad", probe: list[str] = (), tag: str = "",
          steps: int = 2):
    """UNETLoader -> ModelSamplingSD3 and IaD Apply (in ``order``) -> [probe] -> the variant's own
    conditioning node -> KSampler (or the causal model's AR sampler) -> SaveLatent."""
    p = Prompt()
    model = p.add("UNETLoader", unet_name=case.filename, weight_dtype="default")[0]
    for step in [s.strip() for s in order.split(",")]:
        if step == "shift":
            model = p.add("ModelSamplingSD3", model=model, shift=5.0)[0]
        elif iad is not None:
            model = _identity(p, case, model, iad)
    pos = p.add("IaDTestWanConditioning", text="a person talks and smiles", length=16, scale=1.0)[0]
    neg = p.add("IaDTestWanConditioning", text="", length=16, scale=1.0)[0]
    vae = p.add("VAELoader", vae_name=tiny.WAN21_VAE.filename)[0]
    photo = p.add("LoadImage", image=PHOTO)[0]
    frames = p.add("RepeatImageBatch", image=photo, amount=LENGTH)[0]
    model, pos, neg, latent = case.condition(p, model, pos, neg, vae, photo, frames)
    if probe:
        model = p.add("IaDTestStreamProbe", model=model, modules=",".join(probe), name=f"{case.name}-{tag}", calls=3)[0]
    if case.causal:
        guider = p.add("CFGGuider", model=model, positive=pos, negative=neg, cfg=case.cfg)
        sampler = p.add("SamplerARVideo", num_frame_per_block=1)
        sigmas = p.add("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=1.0)
        noise = p.add("RandomNoise", noise_seed=0)
        sampled = p.add("SamplerCustomAdvanced", noise=noise[0], guider=guider[0], sampler=sampler[0], sigmas=sigmas[0],
                        latent_image=latent)
    else:
        sampled = p.add("KSampler", model=model, positive=pos, negative=neg, latent_image=latent, seed=0, steps=steps,
                        cfg=case.cfg, sampler_name="euler", scheduler="simple", denoise=1.0)
    save = p.add("SaveLatent", samples=sampled[0], filename_prefix=f"iad_variant_{case.name}_{tag}")
    return p, save


def _identity(p, case: Case, model, iad: dict):
    """IaD Apply with the variants' tiny IaD adapter, or (``lynx``) with Lynx full's ID adapter as released
    (the tiny Lynx folder, IR-SE50 faces, null identity for the negative pass) and, with ``ref``, Lynx's
    ref-adapter on a photo with a face."""
    lynx = iad.get("lynx", False)
    loader = p.add("IaDModelLoader", adapter_name=f"{TINY_LYNX_FOLDER}/resampler.safetensors" if lynx else case.adapter)
    faces = p.add("IaDTestFaceEmbeds", seed=iad.get("face_seed", 0), count=3,
                  embedder="facexlib/irse50" if lynx else "insightface/antelopev2/glintr100")
    identity = p.add("IaDIdentity", iad_model=loader[0], face_embeds=faces[0], decoupling="none" if lynx else "auto",
                     strength=1.0)
    model = p.add("IaDApply", model=model, iad_model=loader[0], identity=identity[0], weight=iad.get("weight", 1.0),
                  start_percent=iad.get("start", 0.0), end_percent=iad.get("end", 1.0),
                  uncond_identity="null identity (Lynx)" if lynx else "none")[0]
    if iad.get("ref"):
        face = p.add("IaDFaceAnalysisLoader", model_pack="antelopev2", provider="auto", det_size=640)
        model = p.add("IaDLynxRefAdapter", model=model, ref_layers=f"{TINY_LYNX_FOLDER}/ref_layers.safetensors",
                      vae=p.add("VAELoader", vae_name=tiny.WAN21_VAE.filename)[0], face_analysis=face[0],
                      image=p.add("LoadImage", image=iad["ref"])[0],
                      ref_text=p.add("IaDTestWanConditioning", text="image of a face", length=8, scale=1.0)[0],
                      ref_scale=1.0, start_percent=0.0, end_percent=1.0, dtype="bf16")[0]
    return model


def probed(server, case: Case, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(server.output_dir / "iad_probe" / f"{case.name}-{name}.safetensors"))


@pytest.mark.parametrize("case", HERE, ids=HERE_IDS)
def test_identity_on_the_video_rows_only_with_every_other_stream_bit_identical(server, case):
    streams = ["blocks.0.cross_attn", *TEXT_KV, *case.streams]
    base = run_latent(server, graph(case, probe=streams, tag="base"))
    assert torch.isfinite(base).all() and base.std() > 0
    assert torch.equal(run_latent(server, graph(case, iad={"weight": 0.0}, tag="w0")), base), "weight 0 changed the video"
    with_id = run_latent(server, graph(case, iad={}, probe=streams + ["adapter:resampler", "adapter:blocks.0.to_k_ip"],
                                       tag="iad"))
    assert (with_id - base).abs().max() > 1e-4, "the identity did not change the video"

    before, after = probed(server, case, "base"), probed(server, case, "iad")
    out_base, out_id = before["blocks.0.cross_attn|0|out0"], after["blocks.0.cross_attn|0|out0"]
    start, stop, length = case.rows
    assert out_base.shape[1] == (length or out_base.shape[1]) and out_base.shape[1] >= stop, out_base.shape
    assert torch.equal(out_id[:, :start], out_base[:, :start]) and torch.equal(out_id[:, stop:], out_base[:, stop:]), (
        "the identity reached rows that are not the video")
    assert (out_id[:, start:stop] - out_base[:, start:stop]).abs().max() > 1e-6, "the video rows did not get the identity"
    if case.rows[2] is None:
        assert out_base.shape[1] > stop, "the test expected tokens after the video"

    # Every other stream, in the first model call: what its modules read (and, where that is not the
    # video, what they return) is bit-identical. The text stream is the cross-attention's K/V.
    skip = {path: set(tags) for path, tags in case.streams.items()}
    compared = []
    for key, value in before.items():
        path, call, tag = (key.split("|") + ["", ""])[:3]
        if not tag or path == "blocks.0.cross_attn" or tag in skip.get(path, ()) or (call != "0" and path not in TEXT_KV):
            continue   # counts, the video stream, and later calls (after the identity changed the latent)
        assert torch.equal(after[key], value), f"{key}: the {case.name} stream read different inputs with the identity"
        compared.append(path)
    assert set(compared) == set(TEXT_KV) | set(case.streams), sorted(before)
    if case.causal:   # later calls recompute the text K/V while the identity acts: exactly the cached ones
        for path in TEXT_KV:
            assert int(before[f"{path}|count"]) == 2, "core computes the text K/V once, then attends to its cache"
            assert torch.equal(after[f"{path}|2|out0"], before[f"{path}|1|out0"])
    # tokens once per run: no resampler call while sampling; each block's K/V projected once
    assert int(after["adapter:resampler|count"]) == 0
    assert int(after["adapter:blocks.0.to_k_ip|count"]) == 1
    # nothing of the identity stays behind (the causal model's caches are the sampler's, per run)
    assert torch.equal(run_latent(server, graph(case, tag="after")), base)


@pytest.mark.parametrize("case", HERE, ids=HERE_IDS)
def test_node_order_with_shift_gives_the_same_video(server, case):
    after = run_latent(server, graph(case, iad={"start": 0.5}, order="shift, iad", tag="shift-iad", steps=4))
    before = run_latent(server, graph(case, iad={"start": 0.5}, order="iad, shift", tag="iad-shift", steps=4))
    assert torch.equal(before, after)
    full = run_latent(server, graph(case, iad={"start": 0.0}, tag="full", steps=4))
    assert not torch.equal(full, after), "the step range did not gate the identity"


LYNX_WIDTH = [c for c in HERE if c.adapter == ADAPTER]   # the tiny Lynx folder's width (128)


@pytest.mark.parametrize("case", LYNX_WIDTH, ids=[c.name for c in LYNX_WIDTH])
def test_lynx_id_adapter_on_every_variant_of_its_width(server, workflow_assets, case):
    """Lynx's ID adapter as released, through IaD Apply: the video rows get it, nothing else."""
    base = run_latent(server, graph(case, probe=["blocks.0.cross_attn"], tag="lynx-base"))
    lynx = run_latent(server, graph(case, iad={"lynx": True}, probe=["blocks.0.cross_attn"], tag="lynx"))
    assert (lynx - base).abs().max() > 1e-4
    before, after = probed(server, case, "lynx-base"), probed(server, case, "lynx")
    out_base, out_id = before["blocks.0.cross_attn|0|out0"], after["blocks.0.cross_attn|0|out0"]
    start, stop, _ = case.rows
    assert torch.equal(out_id[:, :start], out_base[:, :start]) and torch.equal(out_id[:, stop:], out_base[:, stop:])
    assert (out_id[:, start:stop] - out_base[:, start:stop]).abs().max() > 1e-6


def test_lynx_ref_adapter_runs_on_phantom_and_is_refused_by_name_where_it_cannot(server, workflow_assets):
    """Lynx's reference pass is the model alone on the face latent: defined for Wan text-to-video layouts.
    On Phantom's graph (T2V weights, subject images after the video) the reference attention reaches the
    video rows only; every other variant is refused, naming the variant and why."""
    photo = workflow_assets["photos"][0]
    phantom = next(c for c in HERE if c.name == "phantom")
    id_only = run_latent(server, graph(phantom, iad={"lynx": True}, probe=["blocks.0.self_attn"], tag="ref-off"))
    with_ref = run_latent(server, graph(phantom, iad={"lynx": True, "ref": photo}, probe=["blocks.0.self_attn"],
                                        tag="ref-on"))
    assert (with_ref - id_only).abs().max() > 1e-4, "the ref-adapter changed nothing"
    # call 0 of the run with the ref-adapter is Lynx's reference pass (the face latent); call 1 the first step
    off = probed(server, phantom, "ref-off")["blocks.0.self_attn|0|out0"]
    on = probed(server, phantom, "ref-on")["blocks.0.self_attn|1|out0"]
    assert on.shape == off.shape
    assert torch.equal(on[:, VIDEO:], off[:, VIDEO:]), "the reference attention reached Phantom's subject tokens"
    assert (on[:, :VIDEO] - off[:, :VIDEO]).abs().max() > 1e-6
    for case in HERE:
        if case.name == "phantom" or case.adapter != ADAPTER:
            continue
        result = server.run(graph(case, iad={"lynx": True, "ref": photo}, tag="ref-refused")[0])
        message = (result.error or {}).get("exception_message", "")
        assert not result.ok and "Lynx's ref-adapter cannot run on" in message and case.spec.config in message, (
            case.name, message)
    assert server.is_alive()
    assert torch.equal(run_latent(server, graph(phantom, iad={"lynx": True, "ref": photo}, tag="ref-again")), with_ref)


def test_variants_this_comfyui_lacks_are_absent():
    """On 0.3.75: SCAIL, Dancer, the causal model and InfiniteTalk are not there (nothing to patch);
    on v0.28.2 every variant is."""
    from harness.paths import comfyui_at_least

    missing = [c.name for c in CASES if c not in HERE]
    if comfyui_at_least("0.28"):
        assert missing == []
    else:
        assert sorted(missing) == ["causal", "dancer", "infinitetalk", "scail", "scail2"]
