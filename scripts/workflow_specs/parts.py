"""What the hand-made workflows share: the common model files, help texts, layout columns and
node builders (loaders, prompts, photos, the face -> identity chain, IaD Apply, sampler, save).
"""

from __future__ import annotations

from .model import HF, IAD_BG, IAD_COLOR, ModelFile, Node, download_list

WAN21_REPO = f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
WAN22_REPO = f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"

WAN21_T2V_1_3B = ModelFile("wan2.1_t2v_1.3B_fp16.safetensors", "diffusion_models",
                           f"{WAN21_REPO}/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors")
WAN21_T2V_14B = ModelFile("wan2.1_t2v_14B_fp16.safetensors", "diffusion_models",
                          f"{WAN21_REPO}/diffusion_models/wan2.1_t2v_14B_fp16.safetensors")
WAN22_T2V_HIGH = ModelFile("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "diffusion_models",
                           f"{WAN22_REPO}/diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors")
WAN22_T2V_LOW = ModelFile("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "diffusion_models",
                          f"{WAN22_REPO}/diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors")
UMT5_FP8 = ModelFile("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders",
                     f"{WAN21_REPO}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors")
WAN21_VAE = ModelFile("wan_2.1_vae.safetensors", "vae", f"{WAN21_REPO}/vae/wan_2.1_vae.safetensors")


IRSE50 = ModelFile("recognition_arcface_ir_se50.pth", "facexlib",
                  "https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth")
LYNX_FULL = ModelFile("lynx_full/resampler.safetensors", "iad")  # a folder from huggingface.co/ByteDance/lynx

# -- IaD files (no public download: you train or convert them) ------------------------------------
IAD_WAN21_1_3B = ModelFile("iad_wan2.1_t2v_1.3B.safetensors", "iad")
IAD_WAN21_14B = ModelFile("iad_wan2.1_t2v_14B.safetensors", "iad")

# Face nodes (nodes/face_nodes.py) and their widget values. IaD adapters read antelopev2 embeddings of
# faces found as insightface intends (BGR); Lynx's parts get the faces bytedance/lynx's pipeline finds:
# insightface's default pack buffalo_l at 640, its detector handed the RGB photo.
FACE_LOADER_WIDGETS = {"model_pack": "antelopev2", "provider": "auto", "det_size": 640,
                       "detector_colour_order": "BGR (insightface's convention)"}
LYNX_FACE_LOADER_WIDGETS = {"model_pack": "buffalo_l", "provider": "auto", "det_size": 640,
                            "detector_colour_order": "RGB (as Lynx's pipeline)"}
FACE_EMBED_WIDGETS = {"policy": "largest", "face_index": 0, "min_score": 0.5}

ANTELOPEV2_HELP = """\
Face model (insightface antelopev2, the pack PuLID/InstantID use): unzip antelopev2.zip so the
.onnx files sit directly in
  models/insightface/models/antelopev2/
  (1k3d68.onnx, 2d106det.onnx, genderage.onnx, glintr100.onnx, scrfd_10g_bnkps.onnx)
A doubled folder antelopev2/antelopev2/ is found too. Nothing is downloaded automatically."""

LYNX_FACE_HELP = """\
Face model (insightface buffalo_l, the pack bytedance/lynx finds faces with): unzip buffalo_l.zip
(insightface's v0.7 release) so the .onnx files sit directly in
  models/insightface/models/buffalo_l/
  (1k3d68.onnx, 2d106det.onnx, det_10g.onnx, genderage.onnx, w600k_r50.onnx)
The face loader hands its detector the photo in RGB, as Lynx's pipeline does. Nothing is
downloaded automatically."""

ADAPTER_HELP = """\
IaD adapter: put the .safetensors into models/iad/ (then press R to refresh the lists).
IaD adapters are made per base model (family + width); there is no public download:
train one with `python -m iad.train` (docs/training.md), or for Wan 2.1 14B convert the
released Lynx weights with `python -m iad.convert_lynx` (docs/lynx.md)."""

PHOTO_HELP = """\
Reference photo: click 'choose file to upload' in the Load Image node. A clear, well-lit
photo with the face at least ~100 px wide; any expression - IaD keeps who the person is and
lets the prompt decide the expression, pose and motion."""

WAN_NEGATIVE = ("static, frozen, blurry, low quality, worst quality, jpeg artifacts, deformed face, extra fingers, "
                "bad hands, watermark, subtitles, text")

# Columns of the layout (x); nodes stack downwards inside a column.
C0, C1, C2, C3, C4, C5, C6, C7, C8 = 0, 500, 960, 1420, 1840, 2240, 2680, 3120, 3540



def wan_loaders(unet: ModelFile, x: int, shift: float = 8.0) -> list[Node]:
    """Diffusion model (+ the shift Wan uses), umt5 text encoder, Wan VAE."""
    return [
        Node("unet", "UNETLoader", x, {"unet_name": unet.name, "weight_dtype": "default"},
             models=(unet,), size=(400, 82), title="Load Diffusion Model (Wan)"),
        Node("shift", "ModelSamplingSD3", x, {"shift": shift}, links={"model": ("unet", 0)}, size=(400, 60)),
        Node("clip", "CLIPLoader", x, {"clip_name": UMT5_FP8.name, "type": "wan", "device": "default"},
             models=(UMT5_FP8,), size=(400, 106), title="Load CLIP (umt5-xxl text encoder)"),
        Node("vae", "VAELoader", x, {"vae_name": WAN21_VAE.name}, models=(WAN21_VAE,), size=(400, 60)),
    ]


def prompt_nodes(x: int, positive: str) -> list[Node]:
    return [
        Node("positive", "CLIPTextEncode", x, {"text": positive}, links={"clip": ("clip", 0)},
             title="Prompt: the action (expression, pose, motion) comes from here", size=(420, 180),
             color="#232", bgcolor="#353"),
        Node("negative", "CLIPTextEncode", x, {"text": WAN_NEGATIVE}, links={"clip": ("clip", 0)},
             title="Negative prompt", size=(420, 140), color="#322", bgcolor="#533"),
    ]


def photo_nodes(x: int, photos: list[str], batch_x: int) -> tuple[list[Node], tuple]:
    """Load Image per photo; several photos are batched (ImageBatch resizes each later photo
    to the first one's size, which the face detector copes with)."""
    nodes = [Node(f"photo{i + 1}", "LoadImage", x, {"image": photo},
                  title=f"Reference photo {i + 1}" if len(photos) > 1 else "Reference photo", size=(320, 340))
             for i, photo in enumerate(photos)]
    source = ("photo1", 0)
    for i in range(2, len(photos) + 1):
        nodes.append(Node(f"batch{i}", "ImageBatch", batch_x, links={"image1": source, "image2": (f"photo{i}", 0)},
                          title=f"Batch photos 1-{i}", size=(260, 50)))
        source = (f"batch{i}", 0)
    return nodes, source


def face_and_identity(x: int, preview_x: int, images: tuple, adapter: ModelFile, decoupling: str, strength: float,
                       irse50: bool = False) -> list[Node]:
    """Faces -> ArcFace embeddings -> identity tokens (IaD Identity runs once per run). ``irse50``:
    embeddings from facexlib's IR-SE50 (what Lynx adapters need) instead of the pack's recognizer, on
    faces found as Lynx finds them (LYNX_FACE_LOADER_WIDGETS)."""
    embedder = [Node("irse50", "IaDIRSE50FaceEmbedder", x, {"weights": IRSE50.name}, models=(IRSE50,),
                     links={"face_analysis": ("face_loader", 0)}, color=IAD_COLOR, bgcolor=IAD_BG, size=(380, 80),
                     title="IaD IR-SE50 Face Embedder (Lynx's recognizer)")] if irse50 else []
    return [
        Node("face_loader", "IaDFaceAnalysisLoader", x, dict(LYNX_FACE_LOADER_WIDGETS if irse50 else FACE_LOADER_WIDGETS),
             color=IAD_COLOR, bgcolor=IAD_BG, size=(380, 110)),
        *embedder,
        Node("face_embed", "IaDFaceEmbed", x, dict(FACE_EMBED_WIDGETS), color=IAD_COLOR, bgcolor=IAD_BG,
             links={"face_analysis": ("irse50" if irse50 else "face_loader", 0), "images": images}, size=(380, 190)),
        # No properties.models here: the frontend's schema needs a download URL, and there is none.
        Node("iad_loader", "IaDModelLoader", x, {"adapter_name": adapter.name}, color=IAD_COLOR, bgcolor=IAD_BG,
             size=(380, 60)),
        Node("identity", "IaDIdentity", x, {"decoupling": decoupling, "strength": strength},
             links={"iad_model": ("iad_loader", 0), "face_embeds": ("face_embed", 0)},
             color=IAD_COLOR, bgcolor=IAD_BG, size=(380, 110)),
        Node("face_crops", "PreviewImage", preview_x, links={"images": ("face_embed", 1)},
             title="Preview: the faces IaD uses", size=(300, 300)),
        Node("face_info", "PreviewAny", preview_x, links={"source": ("face_embed", 3)},
             title="Face report (which face, score, same person?)", size=(360, 160)),
    ]


# PersonalVideo: identity in the last quarter of the denoising (IaD Apply's default).
LATE_START = 0.75


def apply_node(key: str, x: int, model: tuple, weight: float, start: float = LATE_START, end: float = 1.0,
           identity: str = "identity", title: str | None = None, uncond: str = "none") -> Node:
    return Node(key, "IaDApply", x, {"weight": weight, "start_percent": start, "end_percent": end, "uncond_identity": uncond},
                links={"model": model, "iad_model": ("iad_loader", 0), "identity": (identity, 0)},
                color=IAD_COLOR, bgcolor=IAD_BG, size=(360, 170), title=title)


def latent_node(x: int) -> Node:
    return Node("latent", "EmptyHunyuanLatentVideo", x, {"width": 832, "height": 480, "length": 33, "batch_size": 1},
                title="Video size (Wan uses EmptyHunyuanLatentVideo)", size=(360, 130))


def sampler_node(key: str, x: int, model: tuple, seed: int, steps: int = 30, cfg: float = 6.0, title: str | None = None) -> Node:
    return Node(key, "KSampler", x,
                {"seed": seed, "control_after_generate": "fixed", "steps": steps, "cfg": cfg,
                 "sampler_name": "uni_pc", "scheduler": "simple", "denoise": 1.0},
                links={"model": model, "positive": ("positive", 0), "negative": ("negative", 0), "latent_image": ("latent", 0)},
                title=title, size=(340, 262))


def save_node(key: str, x: int, images: tuple, prefix: str, title: str | None = None) -> Node:
    return Node(key, "SaveAnimatedWEBP", x, {"filename_prefix": prefix, "fps": 16.0, "lossless": False, "quality": 90,
                                             "method": "default"},
                links={"images": images}, title=title, size=(420, 440))


def readme_text(title: str, body: str, files: list[ModelFile], extra: str = "") -> str:
    return f"""
{title}

{body.strip()}

Model files (the 'Missing Models' dialog offers the same download links)
{download_list(files)}

{ANTELOPEV2_HELP}

{ADAPTER_HELP}
{extra}
{PHOTO_HELP}
"""
