"""LTX-2 (ComfyUI's LTXAV: one transformer, a video and an audio stream): the identity enters the
video stream's text cross-attention only. ComfyUI v0.2x only: where ComfyUI has no LTX-2 (0.3.75)
conftest does not collect this module, and test_apply_inprocess checks which versions have it."""

from __future__ import annotations

import pytest
import torch

from harness import apply_fixtures as af

AUDIO_MODULES = ("audio_attn1", "audio_attn2", "audio_ff", "audio_to_video_attn", "video_to_audio_attn", "audio_patchify_proj",
                 "audio_proj_out")


@pytest.fixture(scope="module")
def ltx2(comfy, pack):
    family = af.FAMILIES["ltx2"]
    return (family, af.load_model(family), *af.iad_inputs(family))


def _without_v2a(model):
    """The same model with LTX-2's video-to-audio attention switched off (a ComfyUI transformer option)."""
    clone = model.clone()
    clone.model_options["transformer_options"]["v2a_cross_attn"] = False
    return clone


def test_only_the_video_text_cross_attention_is_patched(ltx2):
    family, model, iad_model, identity = ltx2
    patched = af.apply(model, iad_model, identity, start=0.0)
    keys = sorted(patched.object_patches)
    assert keys == [f"diffusion_model.transformer_blocks.{b}.attn2.forward" for b in family.blocks]
    assert not any(name in key for key in keys for name in AUDIO_MODULES)


def test_audio_stream_is_bit_identical_where_it_does_not_read_the_video(ltx2):
    """With LTX-2's video-to-audio attention off, the audio latent of a whole patched sampling run
    is bit-identical to the unpatched run's, while the video changes. With it on, the audio follows
    the (now different) video through the model's own attention, as it follows the prompt."""
    family, model, iad_model, identity = ltx2
    patched = af.apply(model, iad_model, identity, start=0.0)
    base_video, base_audio = af.sample_parts(_without_v2a(model), family, steps=3)
    video, audio = af.sample_parts(_without_v2a(patched), family, steps=3)
    assert torch.equal(audio, base_audio), "the identity reached the audio tokens"
    assert (video - base_video).abs().max() > 1e-3, "the identity had no effect on the video"
    coupled_video, coupled_audio = af.sample_parts(patched, family, steps=3)
    assert not torch.equal(coupled_video, base_video)


# The audio inputs of each audio module in a block, up to the video-to-audio attention (after it the
# audio has read the video, by design): positional index or keyword.
AUDIO_INPUTS = {"audio_attn1": (0,), "audio_attn2": (0, "context"), "audio_to_video_attn": ("context",),
                "video_to_audio_attn": (0,)}


def test_every_audio_module_sees_the_same_audio_in_the_first_patched_block(ltx2):
    """Inside a model call, the audio that each audio module of the first patched block reads is
    bit-identical with and without the identity (up to the video-to-audio attention, which reads
    the video by design); the video cross-attention's output differs, and the text it reads does not."""
    family, model, iad_model, identity = ltx2
    block = model.model.diffusion_model.transformer_blocks[family.blocks[0]]
    seen: dict[str, list] = {}

    def record(name):
        def hook(module, args, kwargs, output):
            inputs = {key: (args[key] if isinstance(key, int) else kwargs[key]).clone()
                      for key in AUDIO_INPUTS.get(name, ("context",))}
            seen.setdefault(name, []).append((inputs, output.clone()))
        return hook

    names = tuple(AUDIO_INPUTS) + ("attn2",)
    hooks = [getattr(block, name).register_forward_hook(record(name), with_kwargs=True) for name in names]
    try:
        af.sample_parts(model, family, steps=1, cfg=1.0)
        af.sample_parts(af.apply(model, iad_model, identity, start=0.0), family, steps=1, cfg=1.0)
    finally:
        for h in hooks:
            h.remove()
    for name in AUDIO_INPUTS:
        (base, _), (patched, _) = seen[name]
        for key in base:
            assert torch.equal(base[key], patched[key]), f"{name}: audio input {key} changed"
    (base, base_out), (patched, patched_out) = seen["attn2"]
    assert torch.equal(base["context"], patched["context"]), "the text tokens changed"
    assert not torch.equal(base_out, patched_out), "the identity did not reach the video cross-attention"
