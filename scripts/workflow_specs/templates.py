"""Workflows built from ComfyUI's official templates (the templates package ComfyUI pins): the
template as shipped plus the IaD nodes below it, IaD Apply on its model.
"""

from __future__ import annotations

from .families import VARIANT_TIPS
from .model import HF, Group, ModelFile, Node, TemplateWorkflow, note
from .parts import C0, C1, C2, C3, C4, apply_node, face_and_identity, photo_nodes, readme_text

# -- built from ComfyUI's official templates -------------------------------------------------------
LTX2_REPO = f"{HF}/Lightricks/LTX-2/resolve/main"
LTX2_19B_FP8 = ModelFile("ltx-2-19b-dev-fp8.safetensors", "checkpoints", f"{LTX2_REPO}/ltx-2-19b-dev-fp8.safetensors")
GEMMA3_FP4 = ModelFile("gemma_3_12B_it_fp4_mixed.safetensors", "text_encoders",
                       f"{HF}/Comfy-Org/ltx-2/resolve/main/split_files/text_encoders/gemma_3_12B_it_fp4_mixed.safetensors")
LTX2_DISTILLED_LORA = ModelFile("ltx-2-19b-distilled-lora-384.safetensors", "loras",
                                f"{LTX2_REPO}/ltx-2-19b-distilled-lora-384.safetensors")
LTX2_CAMERA_LORA = ModelFile("ltx-2-19b-lora-camera-control-dolly-left.safetensors", "loras",
                             f"{HF}/Lightricks/LTX-2-19b-LoRA-Camera-Control-Dolly-Left/resolve/main/"
                             "ltx-2-19b-lora-camera-control-dolly-left.safetensors")
LTX2_UPSCALER = ModelFile("ltx-2-spatial-upscaler-x2-1.0.safetensors", "latent_upscale_models",
                          f"{LTX2_REPO}/ltx-2-spatial-upscaler-x2-1.0.safetensors")
IAD_LTX2 = ModelFile("iad_ltx2_19b.safetensors", "iad")

HV15_REPO = f"{HF}/Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files"
HV15_720P_T2V = ModelFile("hunyuanvideo1.5_720p_t2v_fp16.safetensors", "diffusion_models",
                          f"{HV15_REPO}/diffusion_models/hunyuanvideo1.5_720p_t2v_fp16.safetensors")
HV15_SR = ModelFile("hunyuanvideo1.5_1080p_sr_distilled_fp16.safetensors", "diffusion_models",
                    f"{HV15_REPO}/diffusion_models/hunyuanvideo1.5_1080p_sr_distilled_fp16.safetensors")
QWEN25_VL_FP8 = ModelFile("qwen_2.5_vl_7b_fp8_scaled.safetensors", "text_encoders",
                          f"{HV15_REPO}/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors")
BYT5_GLYPH = ModelFile("byt5_small_glyphxl_fp16.safetensors", "text_encoders",
                       f"{HV15_REPO}/text_encoders/byt5_small_glyphxl_fp16.safetensors")
HV15_VAE = ModelFile("hunyuanvideo15_vae_fp16.safetensors", "vae", f"{HV15_REPO}/vae/hunyuanvideo15_vae_fp16.safetensors")
HV15_UPSAMPLER = ModelFile("hunyuanvideo15_latent_upsampler_1080p.safetensors", "latent_upscale_models",
                           f"{HV15_REPO}/latent_upscale_models/hunyuanvideo15_latent_upsampler_1080p.safetensors")
IAD_HV15 = ModelFile("iad_hunyuan_video_1.5_720p_t2v.safetensors", "iad")


def template_identity_nodes(adapter: ModelFile, readme: str, readme_size: tuple[int, int]) -> list[Node]:
    """The IaD part of a template workflow: read-me, photo, faces -> identity, IaD Apply on the
    template's model (``@anchor``), laid out in columns below the template."""
    photos, images = photo_nodes(C1, ["iad_reference_1.png"], C2)
    return [
        note("readme", readme, (C0, 0), size=readme_size, title="Read me: IaD on the official template"),
        *photos,
        *face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0),
        apply_node("apply", C4, ("@anchor", "MODEL"), weight=1.0, title="IaD Apply (feeds everything the model fed)"),
        note("tips", VARIANT_TIPS, C4, size=(420, 260), title="IaD settings"),
    ]


def ltx2_t2v_template() -> TemplateWorkflow:
    files = [LTX2_19B_FP8, GEMMA3_FP4, LTX2_DISTILLED_LORA, LTX2_CAMERA_LORA, LTX2_UPSCALER]
    readme = readme_text(
        "IaD identity video - LTX-2 19B text-to-video with audio: ComfyUI's official template "
        "(video_ltx2_t2v) + IaD, one reference photo.",
        """
Above: ComfyUI's own LTX-2 text-to-video template, unchanged except that its subgraph is unpacked
and its model goes through IaD Apply before the LoRAs and both sampling stages. LTX-2 makes video
and sound in one transformer; IaD adds the identity to the VIDEO stream's text cross-attention
only (transformer_blocks.N.attn2), the audio stream is never patched.

Needs ComfyUI with LTX-2 support (0.7 or newer).

Steps
1. Download the files below (the LTX-2 checkpoint goes to models/checkpoints/: model, VAEs and the
   text projection in one file).
2. Load your photo in 'Reference photo'.
3. Write what the person does (and says) in the prompt (CLIP Text Encode, top); Run (Ctrl+Enter).
""", files + [IAD_LTX2],
        extra="The IaD adapter must be made for LTX-2 (video width 4096).\n")
    return TemplateWorkflow(
        "ltx2_19b_t2v_iad_single_photo", template_identity_nodes(IAD_LTX2, readme, (460, 1240)),
        [Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity", "apply"], "#335")],
        template="video_ltx2_t2v.json",
        anchor={"type": "CheckpointLoaderSimple", "widget": ["ckpt_name", LTX2_19B_FP8.name], "output": "MODEL"},
        requires="LTX-2 (ComfyUI 0.7 or newer)")


def hunyuan_video15_t2v_template() -> TemplateWorkflow:
    files = [HV15_720P_T2V, QWEN25_VL_FP8, BYT5_GLYPH, HV15_VAE, HV15_SR, HV15_UPSAMPLER]
    readme = readme_text(
        "IaD identity video - HunyuanVideo 1.5 720p text-to-video: ComfyUI's official template "
        "(video_hunyuan_video_1.5_720p_t2v) + IaD, one reference photo.",
        """
Above: ComfyUI's own HunyuanVideo 1.5 720p template, unchanged except that its 720p model goes
through IaD Apply. HunyuanVideo 1.5 has no separate text cross-attention: IaD adds a residual
identity attention on the video tokens after its double blocks (text tokens untouched). The
optional 1080p super-resolution stage (bypassed in the template, Ctrl+B) refines the finished
video; it is not patched.

Steps
1. Download the files below (the super-resolution files only if you enable that stage).
2. Load your photo in 'Reference photo'.
3. Write what the person does in the positive prompt (top); Run (Ctrl+Enter).
""", files + [IAD_HV15],
        extra="The IaD adapter must be made for HunyuanVideo 1.5 (width 2048).\n")
    return TemplateWorkflow(
        "hunyuan_video_1.5_720p_t2v_iad_single_photo", template_identity_nodes(IAD_HV15, readme, (460, 1240)),
        [Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity", "apply"], "#335")],
        template="video_hunyuan_video_1.5_720p_t2v.json",
        anchor={"type": "UNETLoader", "widget": ["unet_name", HV15_720P_T2V.name], "output": "MODEL"},
        requires="HunyuanVideo 1.5 (ComfyUI 0.3.75 or newer)")
