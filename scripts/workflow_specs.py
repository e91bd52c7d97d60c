"""The shipped workflows, described as data: nodes, widget values and links by name.

``scripts/build_workflows.py`` turns each spec into the UI-format JSON in ``workflows/`` inside
the real frontend. Model file names are those of ComfyUI's official repackaged releases, so a
workflow works as downloaded; each loader carries ``properties.models`` (name, folder, URL), which
the frontend's "Missing Models" dialog offers as download buttons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# -- model files ----------------------------------------------------------------------------------
HF = "https://huggingface.co"
WAN21_REPO = f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
WAN22_REPO = f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"


@dataclass(frozen=True)
class ModelFile:
    name: str
    directory: str  # the ComfyUI models/ sub-folder
    url: str | None = None  # None: no public download (e.g. adapters you train yourself)

    def meta(self) -> dict:
        entry = {"name": self.name, "directory": self.directory}
        if self.url:
            entry["url"] = self.url
        return entry


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

NOTE_COLOR, NOTE_BG = "#432", "#653"
IAD_COLOR, IAD_BG = "#223", "#335"


# -- spec data model ------------------------------------------------------------------------------
@dataclass
class Node:
    key: str
    type: str
    pos: tuple[int, int]
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)  # input name -> (node key, output name or index)
    title: str | None = None
    models: tuple[ModelFile, ...] = ()
    size: tuple[int, int] | None = None
    color: str | None = None
    bgcolor: str | None = None

    def to_js(self) -> dict:
        return {
            "key": self.key, "type": self.type, "pos": list(self.pos), "widgets": self.widgets,
            "links": {k: [v[0], v[1]] for k, v in self.links.items()}, "title": self.title,
            "models": [m.meta() for m in self.models], "size": list(self.size) if self.size else None,
            "color": self.color, "bgcolor": self.bgcolor,
        }


def note(key: str, text: str, pos: tuple[int, int], size=(420, 300), title: str = "Read me") -> Node:
    return Node(key, "Note", pos, widgets={"text": text.strip() + "\n"}, title=title, size=size,
                color=NOTE_COLOR, bgcolor=NOTE_BG)


@dataclass
class Group:
    title: str
    members: list[str]
    color: str | None = None


@dataclass
class Workflow:
    name: str
    nodes: list[Node]
    groups: list[Group] = field(default_factory=list)

    def node(self, key: str) -> Node:
        return next(n for n in self.nodes if n.key == key)

    def model_files(self) -> list[ModelFile]:
        seen: dict[str, ModelFile] = {}
        for n in self.nodes:
            for m in n.models:
                seen.setdefault(m.name, m)
        return list(seen.values())

    def to_js(self) -> dict:
        return {"name": self.name, "nodes": [n.to_js() for n in self.nodes],
                "groups": [{"title": g.title, "members": g.members, "color": g.color} for g in self.groups]}


def download_list(files) -> str:
    return "\n".join(f"- models/{m.directory}/{m.name}" + (f"\n    {m.url}" if m.url else "") for m in files)




# -- IaD files (no public download: you train or convert them) ------------------------------------
IAD_WAN21_1_3B = ModelFile("iad_wan2.1_t2v_1.3B.safetensors", "iad")
IAD_WAN21_14B = ModelFile("iad_wan2.1_t2v_14B.safetensors", "iad")

# Face nodes (nodes/face_nodes.py) and their widget values.
FACE_LOADER = "IaDFaceAnalysisLoader"
FACE_EMBED = "IaDFaceEmbed"
FACE_LOADER_WIDGETS = {"model_pack": "antelopev2", "provider": "auto", "det_size": 640}
FACE_EMBED_WIDGETS = {"policy": "largest", "face_index": 0, "min_score": 0.5}
FACE_EMBED_IMAGE_INPUT = "images"

ANTELOPEV2_HELP = """\
Face model (insightface antelopev2, the pack PuLID/InstantID use): unzip antelopev2.zip so the
.onnx files sit directly in
  models/insightface/models/antelopev2/
  (1k3d68.onnx, 2d106det.onnx, genderage.onnx, glintr100.onnx, scrfd_10g_bnkps.onnx)
A doubled folder antelopev2/antelopev2/ is found too. Nothing is downloaded automatically."""

ADAPTER_HELP = """\
IaD adapter: put the .safetensors into models/iad/. IaD adapters are made per base model
(family + width): train one with `python -m iad.train` (docs/training.md) or convert the
released Lynx weights with `python -m iad.convert_lynx` (Wan 2.1 14B only, docs/lynx.md).
No IaD weights are downloaded automatically."""

PHOTO_HELP = """\
Reference photo: click 'choose file to upload' in the Load Image node. A clear, well-lit
photo with the face at least ~100 px wide; any expression - IaD keeps who the person is and
lets the prompt decide the expression, pose and motion."""


def _wan_text_and_models(unet: ModelFile, x: int, y: int, prefix: str = "") -> list[Node]:
    """Loaders (diffusion model, umt5 text encoder, Wan VAE) at column x."""
    return [
        Node(prefix + "unet", "UNETLoader", (x, y), {"unet_name": unet.name, "weight_dtype": "default"},
             models=(unet,), size=(380, 82), title="Load Diffusion Model (Wan)"),
        Node(prefix + "clip", "CLIPLoader", (x, y + 130), {"clip_name": UMT5_FP8.name, "type": "wan", "device": "default"},
             models=(UMT5_FP8,), size=(380, 106)),
        Node(prefix + "vae", "VAELoader", (x, y + 290), {"vae_name": WAN21_VAE.name}, models=(WAN21_VAE,), size=(380, 60)),
    ]


def _prompts(x: int, y: int, positive: str, negative: str) -> list[Node]:
    return [
        Node("positive", "CLIPTextEncode", (x, y), {"text": positive}, links={"clip": ("clip", "CLIP")},
             title="Prompt: the action (expression, pose, motion) comes from here", size=(420, 180), color="#232", bgcolor="#353"),
        Node("negative", "CLIPTextEncode", (x, y + 230), {"text": WAN_NEGATIVE}, links={"clip": ("clip", "CLIP")},
             title="Negative prompt", size=(420, 140), color="#322", bgcolor="#533"),
    ]


def _identity_nodes(x: int, y: int, photos: list[str], adapter: ModelFile, decoupling: str, strength: float) -> list[Node]:
    """Reference photo(s) -> face embeddings -> identity tokens (computed once per run)."""
    nodes = []
    for i, photo in enumerate(photos):
        nodes.append(Node(f"photo{i + 1}", "LoadImage", (x, y + 360 * i), {"image": photo},
                          title=f"Reference photo {i + 1}" if len(photos) > 1 else "Reference photo", size=(320, 320)))
    image_source = ("photo1", "IMAGE")
    for i in range(2, len(photos) + 1):
        # ImageBatch resizes the later photo to the first one's size; the face detector copes.
        key = f"batch{i}"
        nodes.append(Node(key, "ImageBatch", (x + 360, y + 360 * (i - 1) + 40),
                          links={"image1": image_source, "image2": (f"photo{i}", "IMAGE")}, title=f"Batch photos 1-{i}"))
        image_source = (key, "IMAGE")
    fx = x + 360 if len(photos) == 1 else x + 640
    nodes += [
        Node("face_loader", FACE_LOADER, (fx, y), dict(FACE_LOADER_WIDGETS), color=IAD_COLOR, bgcolor=IAD_BG, size=(340, 110)),
        Node("face_embed", FACE_EMBED, (fx, y + 170), dict(FACE_EMBED_WIDGETS), color=IAD_COLOR, bgcolor=IAD_BG,
             links={"face_analysis": ("face_loader", 0), FACE_EMBED_IMAGE_INPUT: image_source}, size=(340, 130)),
        Node("face_crops", "PreviewImage", (fx + 380, y + 170), links={"images": ("face_embed", 1)},
             title="Preview: the faces IaD uses", size=(240, 260)),
        Node("face_info", "PreviewAny", (fx + 380, y + 470), links={"source": ("face_embed", 3)},
             title="Face report (which face, score, same-person check)", size=(300, 160)),
        Node("iad_loader", "IaDModelLoader", (fx, y + 360), {"adapter_name": adapter.name}, models=(adapter,),
             color=IAD_COLOR, bgcolor=IAD_BG, size=(340, 60)),
        Node("identity", "IaDIdentity", (fx, y + 470), {"decoupling": decoupling, "strength": strength},
             links={"iad_model": ("iad_loader", 0), "face_embeds": ("face_embed", 0)},
             color=IAD_COLOR, bgcolor=IAD_BG, size=(340, 110)),
    ]
    return nodes


def _apply(key: str, model: tuple, pos, weight: float, start: float, end: float = 1.0, identity: str = "identity") -> Node:
    return Node(key, "IaDApply", pos, {"weight": weight, "start_percent": start, "end_percent": end, "apply_to_uncond": False},
                links={"model": model, "iad_model": ("iad_loader", 0), "identity": (identity, 0)},
                color=IAD_COLOR, bgcolor=IAD_BG, size=(340, 170))


def _sampler(key: str, model: tuple, pos, seed: int, steps: int, cfg: float, title: str | None = None) -> Node:
    return Node(key, "KSampler", pos,
                {"seed": seed, "control_after_generate": "fixed", "steps": steps, "cfg": cfg,
                 "sampler_name": "uni_pc", "scheduler": "simple", "denoise": 1.0},
                links={"model": model, "positive": ("positive", 0), "negative": ("negative", 0), "latent_image": ("latent", 0)},
                title=title, size=(320, 262))


def _save(key: str, images: tuple, pos, prefix: str, title: str | None = None) -> Node:
    return Node(key, "SaveAnimatedWEBP", pos, {"filename_prefix": prefix, "fps": 16.0, "lossless": False, "quality": 90,
                                               "method": "default"},
                links={"images": images}, title=title, size=(420, 420))


WAN_NEGATIVE = ("static, frozen, blurry, low quality, worst quality, jpeg artifacts, deformed face, extra fingers, "
                "bad hands, watermark, subtitles, text")


def wan21_1_3b_single_photo() -> Workflow:
    files = [WAN21_T2V_1_3B, UMT5_FP8, WAN21_VAE, IAD_WAN21_1_3B]
    readme = f"""
IaD identity video - Wan 2.1 T2V 1.3B, one reference photo (the smallest working setup, ~8 GB VRAM).

The face comes from your photo; the expression, pose and motion come from the prompt.

Steps
1. Download the model files below into your ComfyUI folder (the 'Missing Models' dialog offers the same links).
2. Load your photo in 'Reference photo'.
3. Write what the person does in the green prompt; press Run (Ctrl+Enter).

Model files
{download_list(files)}

{ANTELOPEV2_HELP}

{ADAPTER_HELP}

{PHOTO_HELP}
"""
    tips = """
IaD settings
- IaD Apply weight 1.0: identity strength (0 = plain Wan). Too strong -> stiff face; too weak -> likeness fades.
- start_percent 0.3: identity only in the later 70% of the denoising (PersonalVideo): the early
  steps lay out composition and motion from the prompt, the later steps resolve the face.
- IaD Identity decoupling 'auto': the adapter's trained decoupler if it has one, else training-free.
  With ONE photo the training-free decoupler has little to go on: add more photos
  (see the 14B multi-reference workflow) for a cleaner identity/expression split.
- 832x480, 33 frames, 30 steps, cfg 6, shift 8: Wan 2.1 1.3B's usual settings.
"""
    nodes = [
        note("readme", readme, (0, 0), size=(460, 900), title="Read me: what to download and where"),
        *_wan_text_and_models(WAN21_T2V_1_3B, 500, 0),
        *_prompts(920, 0, "a young woman laughs out loud, then turns her head to the left and waves, "
                          "walking through a sunny park, handheld camera", WAN_NEGATIVE),
        Node("shift", "ModelSamplingSD3", (500, 420), {"shift": 8.0}, links={"model": ("unet", 0)}, size=(380, 60)),
        *_identity_nodes(500, 560, ["iad_reference_1.png"], IAD_WAN21_1_3B, decoupling="auto", strength=1.0),
        _apply("apply", ("shift", 0), (1420, 0), weight=1.0, start=0.3),
        note("tips", tips, (1420, 560), size=(420, 420), title="IaD settings"),
        Node("latent", "EmptyHunyuanLatentVideo", (1420, 240), {"width": 832, "height": 480, "length": 33, "batch_size": 1},
             title="Video size (Wan: EmptyHunyuanLatentVideo)", size=(340, 130)),
        _sampler("sampler", ("apply", 0), (1880, 0), seed=42, steps=30, cfg=6.0),
        Node("decode", "VAEDecode", (2240, 0), links={"samples": ("sampler", 0), "vae": ("vae", 0)}),
        _save("save", ("decode", 0), (2240, 100), "iad/wan2.1_1.3B_identity", title="Identity video"),
    ]
    groups = [
        Group("1. Wan 2.1 T2V 1.3B", ["unet", "clip", "vae", "shift"]),
        Group("2. Prompt", ["positive", "negative"]),
        Group("3. Identity (IaD)", ["photo1", "face_loader", "face_embed", "face_crops", "face_info", "iad_loader", "identity"], "#335"),
        Group("4. Generate", ["apply", "latent", "sampler", "decode", "save"]),
    ]
    return Workflow("wan2.1_t2v_1.3B_iad_single_photo", nodes, groups)


def wan21_14b_multi_reference() -> Workflow:
    files = [WAN21_T2V_14B, UMT5_FP8, WAN21_VAE, IAD_WAN21_14B]
    photos = ["iad_reference_1.png", "iad_reference_2.png", "iad_reference_3.png"]
    readme = f"""
IaD identity video - Wan 2.1 T2V 14B, several reference photos, training-free decoupling, late-step injection.

Several photos of the SAME person (different expressions, angles, lighting) give the most robust
identity: IaD's training-free decoupler estimates how the photos differ (expression, pose,
lighting) and removes those directions from the identity, so the prompt alone decides the action.

Steps
1. Download the model files below (the 'Missing Models' dialog offers the same links).
   14B fp16 needs ~40 GB VRAM or offloading; the fp8 file
   wan2.1_t2v_14B_fp8_e4m3fn.safetensors (same folder) fits 24 GB - pick it in the loader.
2. Load 2-4 photos of one person in the 'Reference photo' nodes (bypass the ones you don't
   need with Ctrl+B, and the ImageBatch after them).
3. Write the action in the green prompt; Run (Ctrl+Enter).

Model files
{download_list(files)}

{ANTELOPEV2_HELP}

{ADAPTER_HELP}
The IaD adapter must match the base model: a 14B adapter (width 5120) on the 14B model.

{PHOTO_HELP}
"""
    tips = """
IaD settings in this workflow
- IaD Identity decoupling 'training-free', strength 0.8: how much of the direction in which your
  photos differ (expression/pose) is removed from the identity. 0 = the plain mean embedding
  (copies the photos' expression more), 1 = remove all of it. Needs 2+ photos.
- IaD Apply start_percent 0.4: late-step injection - no identity during the first 40% of the
  denoising, where Wan lays out composition and motion from the prompt (PersonalVideo's finding).
  Raise it if the video copies the photo's pose; lower it if the likeness is weak.
- weight 1.0; apply_to_uncond off (CFG then pushes towards the identity).
"""
    nodes = [
        note("readme", readme, (0, 0), size=(460, 1100), title="Read me: what to download and where"),
        *_wan_text_and_models(WAN21_T2V_14B, 500, 0),
        *_prompts(920, 0, "a middle-aged man frowns in concentration, then breaks into a wide grin and nods, "
                          "sitting at a wooden desk in a dim workshop, cinematic lighting", WAN_NEGATIVE),
        Node("shift", "ModelSamplingSD3", (500, 420), {"shift": 8.0}, links={"model": ("unet", 0)}, size=(380, 60)),
        *_identity_nodes(500, 560, photos, IAD_WAN21_14B, decoupling="training-free", strength=0.8),
        _apply("apply", ("shift", 0), (1420, 0), weight=1.0, start=0.4),
        note("tips", tips, (2160, 560), size=(440, 420), title="IaD settings"),
        Node("latent", "EmptyHunyuanLatentVideo", (1420, 240), {"width": 832, "height": 480, "length": 33, "batch_size": 1},
             title="Video size (Wan: EmptyHunyuanLatentVideo)", size=(340, 130)),
        _sampler("sampler", ("apply", 0), (1880, 0), seed=7, steps=30, cfg=6.0),
        Node("decode", "VAEDecode", (2240, 0), links={"samples": ("sampler", 0), "vae": ("vae", 0)}),
        _save("save", ("decode", 0), (2240, 100), "iad/wan2.1_14B_identity", title="Identity video"),
    ]
    groups = [
        Group("1. Wan 2.1 T2V 14B", ["unet", "clip", "vae", "shift"]),
        Group("2. Prompt", ["positive", "negative"]),
        Group("3. Identity from several photos (IaD)", ["photo1", "photo2", "photo3", "batch2", "batch3", "face_loader",
                                                         "face_embed", "face_crops", "face_info", "iad_loader", "identity"], "#335"),
        Group("4. Generate", ["apply", "latent", "sampler", "decode", "save"]),
    ]
    return Workflow("wan2.1_t2v_14B_iad_multi_reference", nodes, groups)


def wan21_ab_comparison() -> Workflow:
    files = [WAN21_T2V_1_3B, UMT5_FP8, WAN21_VAE, IAD_WAN21_1_3B]
    photos = ["iad_reference_1.png", "iad_reference_2.png"]
    readme = f"""
A/B: what does IaD change? Three videos with the SAME seed, prompt and settings, side by side:
  left   = plain Wan 2.1 (no identity)
  middle = IaD with decoupling (identity from the photos, action from the prompt)
  right  = IaD with decoupling OFF (raw face embedding: tends to copy the photos' expression/pose)
'IaD Evaluate Video' measures each one against your photos: identity similarity (FaceSim), identity
stability, expression copy (does the face copy the photo instead of following the prompt?) and
motion. The reports are JSON (shown on the node) and the plots show the per-frame curves.

Steps
1. Download the model files below (the 'Missing Models' dialog offers the same links).
2. Load two photos of one person; write a prompt whose expression differs from the photos
   (e.g. photos neutral, prompt 'laughs') - that is where decoupling shows.
3. Run (Ctrl+Enter). Expect about 3x the time of a single video.

Model files
{download_list(files)}

{ANTELOPEV2_HELP}

{ADAPTER_HELP}

{PHOTO_HELP}
"""
    nodes = [
        note("readme", readme, (0, 0), size=(460, 1000), title="Read me: what to download and where"),
        *_wan_text_and_models(WAN21_T2V_1_3B, 500, 0),
        *_prompts(920, 0, "a woman bursts out laughing, eyes closed, head tilted back, then looks to the right, "
                          "standing on a windy beach at sunset", WAN_NEGATIVE),
        Node("shift", "ModelSamplingSD3", (500, 420), {"shift": 8.0}, links={"model": ("unet", 0)}, size=(380, 60)),
        *_identity_nodes(500, 560, photos, IAD_WAN21_1_3B, decoupling="auto", strength=1.0),
        Node("identity_raw", "IaDIdentity", (1140, 1140), {"decoupling": "none", "strength": 1.0},
             links={"iad_model": ("iad_loader", 0), "face_embeds": ("face_embed", 0)},
             title="IaD Identity (decoupling OFF)", color=IAD_COLOR, bgcolor=IAD_BG, size=(340, 110)),
        Node("latent", "EmptyHunyuanLatentVideo", (1420, 240), {"width": 832, "height": 480, "length": 33, "batch_size": 1},
             title="Video size (Wan: EmptyHunyuanLatentVideo)", size=(340, 130)),
        _apply("apply", ("shift", 0), (1420, 420), weight=1.0, start=0.3, identity="identity"),
        _apply("apply_raw", ("shift", 0), (1420, 640), weight=1.0, start=0.3, identity="identity_raw"),
        _sampler("sampler_base", ("shift", 0), (1880, 0), seed=1234, steps=30, cfg=6.0, title="A: plain Wan (no IaD)"),
        _sampler("sampler_iad", ("apply", 0), (1880, 320), seed=1234, steps=30, cfg=6.0, title="B: IaD (decoupled)"),
        _sampler("sampler_raw", ("apply_raw", 0), (1880, 640), seed=1234, steps=30, cfg=6.0, title="C: IaD, decoupling off"),
        Node("decode_base", "VAEDecode", (2240, 0), links={"samples": ("sampler_base", 0), "vae": ("vae", 0)}, title="Decode A"),
        Node("decode_iad", "VAEDecode", (2240, 320), links={"samples": ("sampler_iad", 0), "vae": ("vae", 0)}, title="Decode B"),
        Node("decode_raw", "VAEDecode", (2240, 640), links={"samples": ("sampler_raw", 0), "vae": ("vae", 0)}, title="Decode C"),
        Node("stitch_ab", "ImageStitch", (2500, 0), {"direction": "right", "match_image_size": True, "spacing_width": 0,
                                                      "spacing_color": "white"},
             links={"image1": ("decode_base", 0), "image2": ("decode_iad", 0)}, title="A | B"),
        Node("stitch_abc", "ImageStitch", (2500, 220), {"direction": "right", "match_image_size": True, "spacing_width": 0,
                                                        "spacing_color": "white"},
             links={"image1": ("stitch_ab", 0), "image2": ("decode_raw", 0)}, title="A | B | C"),
        _save("save", ("stitch_abc", 0), (2840, 0), "iad/ab_side_by_side", title="Side by side: plain | IaD | IaD without decoupling"),
    ]
    for i, (tag, decode) in enumerate((("A: plain Wan", "decode_base"), ("B: IaD", "decode_iad"), ("C: IaD, decoupling off", "decode_raw"))):
        nodes.append(Node(f"eval_{decode}", "IaDEvaluateVideo", (3300, 420 * i),
                          {"prompt": "", "fps": 16.0, "frame_sampling": "all frames"},
                          links={"video": (decode, 0), "face_analysis": ("face_loader", 0), "reference_embeds": ("face_embed", 0)},
                          title=f"Evaluate {tag}", color=IAD_COLOR, bgcolor=IAD_BG, size=(340, 200)))
        nodes.append(Node(f"plot_{decode}", "PreviewImage", (3680, 420 * i), links={"images": (f"eval_{decode}", 1)},
                          title=f"Metrics plot {tag}", size=(360, 380)))
    groups = [
        Group("1. Wan 2.1 T2V 1.3B", ["unet", "clip", "vae", "shift"]),
        Group("2. Prompt (same for A, B, C)", ["positive", "negative"]),
        Group("3. Identity (IaD)", ["photo1", "photo2", "batch2", "face_loader", "face_embed", "face_crops", "face_info",
                                    "iad_loader", "identity", "identity_raw"], "#335"),
        Group("4. A / B / C with the same seed", ["latent", "apply", "apply_raw", "sampler_base", "sampler_iad", "sampler_raw",
                                                   "decode_base", "decode_iad", "decode_raw", "stitch_ab", "stitch_abc", "save"]),
        Group("5. Identity metrics (IaD Evaluate Video)", [n.key for n in nodes if n.key.startswith(("eval_", "plot_"))], "#335"),
    ]
    return Workflow("wan2.1_t2v_1.3B_iad_ab_comparison", nodes, groups)


def all_workflows() -> list[Workflow]:
    return [wan21_1_3b_single_photo(), wan21_14b_multi_reference(), wan21_ab_comparison()]
