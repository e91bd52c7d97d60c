"""Every Wan model ComfyUI loads, and where its generated video sits in the token sequence.

All of them are Wan 2.1-architecture transformers whose blocks keep Wan's text cross-attention
(``blocks.{i}.cross_attn``, ``WanT2VCrossAttention`` or ``WanI2VCrossAttention``), so IaD patches that
one site everywhere. What differs is what *else* enters the blocks (read from ComfyUI v0.28.2's
``comfy/ldm/wan``; docs/patching.md has the table):

- tokens appended to or prepended before the video in the sequence: reference frames (S2V, HuMo,
  SCAIL, Phantom), motion frames (S2V), pose tokens (SCAIL), a reference image (Fun Control 2.2's
  ``ref_conv``), in-context latents. The identity goes on the **video rows only**: the other rows
  carry the user's conditioning, at their own timestep (S2V's references are at t=0), which the
  adapter was never trained on; their inputs reach the model as the user gave them.
- other streams with their own attention, never patched: audio (S2V's injector, HuMo's audio
  attention, InfiniteTalk's ``attn2_patch``), Animate's face-motion adapter and pose latents, VACE's
  hint blocks (their own ``cross_attn``), WanDancer's music injector, the causal model's KV caches.

The video rows are found per model call from the call itself (``video_rows``): the latent ``x``
being denoised gives ``T * ceil(H/2) * ceil(W/2)`` tokens, and only SCAIL's reference frames and a
``ref_conv`` reference image come *before* them; everything else comes after.
"""

from __future__ import annotations

from dataclasses import dataclass

# The cross-attention classes the Wan patch reproduces exactly (iad/patching/wan.py).
PATCHABLE_CROSS_ATTENTION = ("WanT2VCrossAttention", "WanI2VCrossAttention")

# Lynx's ref-adapter runs Lynx's reference pass: the model alone on the face's 16-channel latent,
# at timestep 0, with a fixed text. Where a model needs more than that to run, it is refused.
_NEEDS_IMAGE_CHANNELS = ("its input is the video latent plus mask and image channels, and Lynx's reference pass "
                         "defines only the face's 16-channel latent")


@dataclass(frozen=True)
class WanVariant:
    name: str                      # what users call it
    streams: str = ""              # what else enters the blocks (left bit-identical)
    refused: str | None = None     # why IaD Apply refuses it (None: supported)
    ref_adapter: str | None = None  # why Lynx's ref-adapter cannot run on it (None: it can)
    causal: bool = False           # the streaming model: blocks run without transformer_options, text K/V cached


# ComfyUI config class (supported_models) -> variant. Phantom, MAGREF and InfiniteTalk run on plain
# Wan T2V/I2V weights (WAN21_T2V / WAN21_I2V) with core's conditioning or model patch.
VARIANTS = {
    "WAN21_T2V": WanVariant("Wan 2.1 T2V", "Phantom's subject images (WanPhantomSubjectToVideo) are appended after "
                            "the video; Fun Control 2.2's reference image is prepended (ref_conv)"),
    "WAN22_T2V": WanVariant("Wan 2.2 TI2V 5B"),
    "WAN21_I2V": WanVariant("Wan 2.1 I2V", "CLIP-vision image tokens before the text in the cross-attention's context; "
                            "InfiniteTalk's audio attention (attn2_patch, after the text cross-attention)",
                            ref_adapter=_NEEDS_IMAGE_CHANNELS),
    "WAN21_FunControl2V": WanVariant("Wan 2.1 Fun Control", "control video and start image as input channels",
                                     ref_adapter=_NEEDS_IMAGE_CHANNELS),
    "WAN21_Camera": WanVariant("Wan 2.1 Fun Camera", "the camera adapter, added to the patch embedding",
                               ref_adapter=_NEEDS_IMAGE_CHANNELS),
    "WAN22_Camera": WanVariant("Wan 2.2 Fun Camera", "the camera adapter, added to the patch embedding",
                               ref_adapter=_NEEDS_IMAGE_CHANNELS),
    "WAN21_Vace": WanVariant("Wan VACE", "VACE's hint blocks (vace_blocks, with their own text cross-attention) read "
                             "the VACE context and the unpatched video tokens; their hints are added after the blocks. "
                             "A reference image is the first latent frame (trimmed by TrimVideoLatent)",
                             ref_adapter="its blocks take VACE hints from a VACE context that Lynx's reference pass "
                                         "does not define"),
    "WAN21_HuMo": WanVariant("Wan HuMo", "the reference image's tokens, appended after the video; audio attention "
                             "(audio_cross_attn_wrapper) after the text cross-attention",
                             ref_adapter="its blocks attend to an audio stream that Lynx's reference pass does not "
                                         "define"),
    "WAN22_S2V": WanVariant("Wan 2.2 S2V", "reference-image and motion-frame tokens appended after the video (at "
                            "timestep 0); the audio injector after the listed blocks (video rows only)",
                            ref_adapter="its blocks take an audio stream and reference tokens that Lynx's reference "
                                        "pass does not define"),
    "WAN22_Animate": WanVariant("Wan 2.2 Animate", "the reference image is the first latent frame (trimmed by "
                                "TrimVideoLatent); pose latents added to the patch embedding; the face-motion adapter "
                                "(face_adapter) after every 5th block", ref_adapter=_NEEDS_IMAGE_CHANNELS),
    "WAN21_SCAIL": WanVariant("Wan SCAIL", "reference frames before the video and pose tokens after it",
                              ref_adapter=_NEEDS_IMAGE_CHANNELS),
    "WAN21_SCAIL2": WanVariant("Wan SCAIL-2", "reference frames before the video and pose tokens after it; mask "
                               "embeddings added to both", ref_adapter=_NEEDS_IMAGE_CHANNELS),
    "WAN22_WanDancer": WanVariant("Wan Dancer", "reference and first-frame CLIP tokens before the text in the "
                                  "cross-attention's context; the music injector after the listed blocks",
                                  ref_adapter=_NEEDS_IMAGE_CHANNELS),
    "WAN21_CausalAR_T2V": WanVariant("causal Wan (Causal Forcing)", "the KV cache of past frames (self-attention) "
                                     "and the cached text K/V (cross-attention)", causal=True,
                                     ref_adapter="ComfyUI's autoregressive sampler calls the model without the "
                                                 "diffusion-model wrappers Lynx's reference pass runs in"),
    "WAN21_FlowRVS": WanVariant("Wan FlowRVS", refused="it segments objects in a given video (image-to-image flow); it "
                                "does not generate a person, so there is no identity to add"),
}

# Diffusion-model classes (comfy/ldm/wan) IaD has read, for models loaded without a known config.
KNOWN_CLASSES = {
    "WanModel": "WAN21_T2V", "VaceWanModel": "WAN21_Vace", "CameraWanModel": "WAN21_Camera",
    "WanModel_S2V": "WAN22_S2V", "HumoWanModel": "WAN21_HuMo", "AnimateWanModel": "WAN22_Animate",
    "SCAILWanModel": "WAN21_SCAIL", "SCAIL2WanModel": "WAN21_SCAIL2", "WanDancerModel": "WAN22_WanDancer",
    "CausalWanModel": "WAN21_CausalAR_T2V",
}


def variant_of(diffusion_model, config_name: str | None) -> WanVariant | None:
    """The variant of a Wan diffusion model (None: not a Wan class IaD has read)."""
    cls = type(diffusion_model).__name__
    if cls not in KNOWN_CLASSES:
        return None
    if config_name in VARIANTS:
        return VARIANTS[config_name]
    variant = VARIANTS[KNOWN_CLASSES[cls]]
    if cls == "WanModel" and getattr(diffusion_model, "img_emb", None) is not None:
        variant = VARIANTS["WAN21_I2V"]
    return variant


def video_rows(diffusion_model, x, kwargs: dict) -> tuple[int, int]:
    """Token rows ``(start, stop)`` of the video being generated, for one call of ``diffusion_model``
    (``WanModel.forward`` arguments: the latent ``x`` [B, C, T, H, W] before padding and the extra
    conditioning ``kwargs``)."""
    _, p_h, p_w = diffusion_model.patch_size
    _, _, frames, height, width = x.shape
    per_frame = -(-height // p_h) * -(-width // p_w)
    start = 0
    cls = type(diffusion_model).__name__
    if cls in ("SCAILWanModel", "SCAIL2WanModel"):
        reference = kwargs.get("reference_latent")
        if reference is not None:   # reference frames before the video, in latent time
            start = reference.shape[2] * per_frame
    elif getattr(diffusion_model, "ref_conv", None) is not None:
        reference = kwargs.get("reference_latent")
        if reference is not None:   # ref_conv: one unpadded reference image before the video
            start = (reference.shape[-2] // p_h) * (reference.shape[-1] // p_w)
    return start, start + frames * per_frame
