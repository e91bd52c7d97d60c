"""Hand-made workflows of the other families: HunyuanVideo and LTX-Video.
"""

from __future__ import annotations

from .model import HF, Group, ModelFile, Node, Workflow, note
from .parts import (C0, C1, C2, C3, C4, C5, C6, apply_node, face_and_identity, photo_nodes, readme_text,
                    save_node)

HUNYUAN_REPO = f"{HF}/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files"
HUNYUAN_T2V = ModelFile("hunyuan_video_t2v_720p_bf16.safetensors", "diffusion_models",
                        f"{HUNYUAN_REPO}/diffusion_models/hunyuan_video_t2v_720p_bf16.safetensors")
CLIP_L = ModelFile("clip_l.safetensors", "text_encoders", f"{HUNYUAN_REPO}/text_encoders/clip_l.safetensors")
LLAVA_FP8 = ModelFile("llava_llama3_fp8_scaled.safetensors", "text_encoders",
                      f"{HUNYUAN_REPO}/text_encoders/llava_llama3_fp8_scaled.safetensors")
HUNYUAN_VAE = ModelFile("hunyuan_video_vae_bf16.safetensors", "vae", f"{HUNYUAN_REPO}/vae/hunyuan_video_vae_bf16.safetensors")
IAD_HUNYUAN = ModelFile("iad_hunyuan_video_t2v.safetensors", "iad")

LTXV_2B = ModelFile("ltx-video-2b-v0.9.5.safetensors", "checkpoints",
                    f"{HF}/Lightricks/LTX-Video/resolve/main/ltx-video-2b-v0.9.5.safetensors")
T5XXL_FP16 = ModelFile("t5xxl_fp16.safetensors", "text_encoders",
                       f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors")
IAD_LTXV = ModelFile("iad_ltxv_2b.safetensors", "iad")

VARIANT_TIPS = """
IaD settings
- IaD Apply weight 1.0, start_percent 0.75: identity only in the last quarter of the denoising
  (PersonalVideo's finding: the early steps fix layout, motion and expression from the prompt;
  identity injected late keeps the prompt's action). Earlier = stronger identity, more copying.
- IaD Identity decoupling 'auto' (trained decoupler if the adapter has one, else training-free).
- The adapter must be made for this model family and width; IaD Apply says so clearly if not.
"""


def hunyuan_video_single_photo() -> Workflow:
    adapter = IAD_HUNYUAN
    readme = readme_text(
        "IaD identity video - HunyuanVideo T2V (720p bf16), one reference photo.",
        """
HunyuanVideo has no separate text cross-attention, so IaD adds a residual identity attention to
its double and single transformer blocks (IaD Apply detects the model and does this for you).

Steps
1. Download the files below.
2. Load your photo in 'Reference photo'.
3. Write what the person does in the green prompt; Run (Ctrl+Enter).
""", [HUNYUAN_T2V, CLIP_L, LLAVA_FP8, HUNYUAN_VAE, adapter],
        extra="The IaD adapter must be made for HunyuanVideo (width 3072).\n")
    photos, images = photo_nodes(C1, ["iad_reference_1.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 1000), title="Read me: what to download and where"),
        Node("unet", "UNETLoader", C1, {"unet_name": HUNYUAN_T2V.name, "weight_dtype": "default"}, models=(HUNYUAN_T2V,),
             size=(400, 82), title="Load Diffusion Model (HunyuanVideo)"),
        Node("shift", "ModelSamplingSD3", C1, {"shift": 7.0}, links={"model": ("unet", 0)}, size=(400, 60)),
        Node("clip", "DualCLIPLoader", C1, {"clip_name1": CLIP_L.name, "clip_name2": LLAVA_FP8.name, "type": "hunyuan_video",
                                            "device": "default"}, models=(CLIP_L, LLAVA_FP8), size=(400, 130)),
        Node("vae", "VAELoader", C1, {"vae_name": HUNYUAN_VAE.name}, models=(HUNYUAN_VAE,), size=(400, 60)),
        *photos,
        Node("positive", "CLIPTextEncode", C2, {"text": "a man with a beard laughs and raises his eyebrows, then looks over "
                                                        "his shoulder, walking down a rainy street at night, neon lights"},
             links={"clip": ("clip", 0)}, title="Prompt: the action (expression, pose, motion) comes from here",
             size=(420, 180), color="#232", bgcolor="#353"),
        Node("guidance", "FluxGuidance", C2, {"guidance": 6.0}, links={"conditioning": ("positive", 0)}, size=(420, 60)),
        *face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0),
        apply_node("apply", C3, ("shift", 0), weight=1.0),
        Node("latent", "EmptyHunyuanLatentVideo", C3, {"width": 848, "height": 480, "length": 73, "batch_size": 1},
             title="Video size", size=(360, 130)),
        Node("noise", "RandomNoise", C4, {"noise_seed": 42, "control_after_generate": "fixed"}, size=(340, 82)),
        Node("guider", "BasicGuider", C4, links={"model": ("apply", 0), "conditioning": ("guidance", 0)}, size=(340, 50)),
        Node("sampler_select", "KSamplerSelect", C4, {"sampler_name": "euler"}, size=(340, 60)),
        Node("scheduler", "BasicScheduler", C4, {"scheduler": "simple", "steps": 20, "denoise": 1.0},
             links={"model": ("apply", 0)}, size=(340, 110)),
        note("tips", VARIANT_TIPS, C4, size=(420, 260), title="IaD settings"),
        Node("sampler", "SamplerCustomAdvanced", C5, links={"noise": ("noise", 0), "guider": ("guider", 0),
                                                             "sampler": ("sampler_select", 0), "sigmas": ("scheduler", 0),
                                                             "latent_image": ("latent", 0)}, size=(300, 110)),
        Node("decode", "VAEDecodeTiled", C5, {"tile_size": 256, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8},
             links={"samples": ("sampler", 0), "vae": ("vae", 0)}, size=(300, 150)),
        save_node("save", C6, ("decode", 0), "iad/hunyuan_video_identity", title="Identity video"),
    ]
    nodes[-1].widgets["fps"] = 24.0
    groups = [
        Group("HunyuanVideo T2V", ["unet", "shift", "clip", "vae"]),
        Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("hunyuan_video_t2v_iad_single_photo", nodes, groups)


def ltxv_single_photo() -> Workflow:
    adapter = IAD_LTXV
    readme = readme_text(
        "IaD identity video - LTX-Video 2B (v0.9.5), one reference photo.",
        """
IaD adds the identity as extra attention next to LTX-Video's text cross-attention
(transformer_blocks.N.attn2); IaD Apply detects the model and does this for you.

Steps
1. Download the files below (the LTX-Video checkpoint goes to models/checkpoints/: it holds
   the model and its VAE).
2. Load your photo in 'Reference photo'.
3. Write what the person does in the green prompt; Run (Ctrl+Enter).
""", [LTXV_2B, T5XXL_FP16, adapter],
        extra="The IaD adapter must be made for LTX-Video 2B (width 2048).\n")
    photos, images = photo_nodes(C1, ["iad_reference_1.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 980), title="Read me: what to download and where"),
        Node("checkpoint", "CheckpointLoaderSimple", C1, {"ckpt_name": LTXV_2B.name}, models=(LTXV_2B,), size=(400, 100),
             title="Load Checkpoint (LTX-Video: model + VAE)"),
        Node("clip", "CLIPLoader", C1, {"clip_name": T5XXL_FP16.name, "type": "ltxv", "device": "default"},
             models=(T5XXL_FP16,), size=(400, 106), title="Load CLIP (t5xxl text encoder)"),
        *photos,
        Node("positive", "CLIPTextEncode", C2, {"text": "a young woman with curly hair grins widely, then laughs and covers "
                                                        "her mouth with her hand, sitting in a sunlit cafe, shallow depth of field"},
             links={"clip": ("clip", 0)}, title="Prompt: the action (expression, pose, motion) comes from here",
             size=(420, 180), color="#232", bgcolor="#353"),
        Node("negative", "CLIPTextEncode", C2, {"text": "low quality, worst quality, deformed, distorted, disfigured, "
                                                        "motion smear, motion artifacts, fused fingers, bad anatomy, static"},
             links={"clip": ("clip", 0)}, title="Negative prompt", size=(420, 140), color="#322", bgcolor="#533"),
        Node("conditioning", "LTXVConditioning", C2, {"frame_rate": 25.0},
             links={"positive": ("positive", 0), "negative": ("negative", 0)}, size=(420, 80)),
        *face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0),
        apply_node("apply", C3, ("checkpoint", 0), weight=1.0),
        Node("latent", "EmptyLTXVLatentVideo", C3, {"width": 768, "height": 512, "length": 97, "batch_size": 1},
             title="Video size", size=(360, 130)),
        Node("sampler_select", "KSamplerSelect", C4, {"sampler_name": "euler"}, size=(340, 60)),
        Node("scheduler", "LTXVScheduler", C4, {"steps": 30, "max_shift": 2.05, "base_shift": 0.95, "stretch": True,
                                                "terminal": 0.1}, links={"latent": ("latent", 0)}, size=(340, 170)),
        note("tips", VARIANT_TIPS, C4, size=(420, 260), title="IaD settings"),
        Node("sampler", "SamplerCustom", C5, {"add_noise": True, "noise_seed": 42, "control_after_generate": "fixed",
                                               "cfg": 3.0},
             links={"model": ("apply", 0), "positive": ("conditioning", 0), "negative": ("conditioning", 1),
                    "sampler": ("sampler_select", 0), "sigmas": ("scheduler", 0), "latent_image": ("latent", 0)},
             size=(340, 230)),
        Node("decode", "VAEDecode", C5, links={"samples": ("sampler", 0), "vae": ("checkpoint", 2)}),
        save_node("save", C6, ("decode", 0), "iad/ltxv_identity", title="Identity video"),
    ]
    nodes[-1].widgets["fps"] = 24.0
    groups = [
        Group("LTX-Video 2B", ["checkpoint", "clip"]),
        Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("ltxv_2b_iad_single_photo", nodes, groups)
