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
    pos: int | tuple[int, int]  # a column x (stacked below the column's previous node) or (x, y)
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)  # input name -> (node key, output name or index)
    title: str | None = None
    models: tuple[ModelFile, ...] = ()
    size: tuple[int, int] | None = None
    color: str | None = None
    bgcolor: str | None = None

    def to_js(self) -> dict:
        return {
            "key": self.key, "type": self.type, "pos": [self.pos, None] if isinstance(self.pos, int) else list(self.pos), "widgets": self.widgets,
            "links": {k: [v[0], v[1]] for k, v in self.links.items()}, "title": self.title,
            "models": [m.meta() for m in self.models], "size": list(self.size) if self.size else None,
            "color": self.color, "bgcolor": self.bgcolor,
        }


def note(key: str, text: str, pos, size=(420, 300), title: str = "Read me") -> Node:
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
FACE_LOADER_WIDGETS = {"model_pack": "antelopev2", "provider": "auto", "det_size": 640}
FACE_EMBED_WIDGETS = {"policy": "largest", "face_index": 0, "min_score": 0.5}

ANTELOPEV2_HELP = """\
Face model (insightface antelopev2, the pack PuLID/InstantID use): unzip antelopev2.zip so the
.onnx files sit directly in
  models/insightface/models/antelopev2/
  (1k3d68.onnx, 2d106det.onnx, genderage.onnx, glintr100.onnx, scrfd_10g_bnkps.onnx)
A doubled folder antelopev2/antelopev2/ is found too. Nothing is downloaded automatically."""

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


def _wan_loaders(unet: ModelFile, x: int) -> list[Node]:
    """Diffusion model (+ the shift Wan uses), umt5 text encoder, Wan VAE."""
    return [
        Node("unet", "UNETLoader", x, {"unet_name": unet.name, "weight_dtype": "default"},
             models=(unet,), size=(400, 82), title="Load Diffusion Model (Wan)"),
        Node("shift", "ModelSamplingSD3", x, {"shift": 8.0}, links={"model": ("unet", 0)}, size=(400, 60)),
        Node("clip", "CLIPLoader", x, {"clip_name": UMT5_FP8.name, "type": "wan", "device": "default"},
             models=(UMT5_FP8,), size=(400, 106), title="Load CLIP (umt5-xxl text encoder)"),
        Node("vae", "VAELoader", x, {"vae_name": WAN21_VAE.name}, models=(WAN21_VAE,), size=(400, 60)),
    ]


def _prompts(x: int, positive: str) -> list[Node]:
    return [
        Node("positive", "CLIPTextEncode", x, {"text": positive}, links={"clip": ("clip", 0)},
             title="Prompt: the action (expression, pose, motion) comes from here", size=(420, 180),
             color="#232", bgcolor="#353"),
        Node("negative", "CLIPTextEncode", x, {"text": WAN_NEGATIVE}, links={"clip": ("clip", 0)},
             title="Negative prompt", size=(420, 140), color="#322", bgcolor="#533"),
    ]


def _photos(x: int, photos: list[str], batch_x: int) -> tuple[list[Node], tuple]:
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


def _face_and_identity(x: int, preview_x: int, images: tuple, adapter: ModelFile, decoupling: str, strength: float) -> list[Node]:
    """Faces -> ArcFace embeddings -> identity tokens (IaD Identity runs once per run)."""
    return [
        Node("face_loader", "IaDFaceAnalysisLoader", x, dict(FACE_LOADER_WIDGETS), color=IAD_COLOR, bgcolor=IAD_BG,
             size=(380, 110)),
        Node("face_embed", "IaDFaceEmbed", x, dict(FACE_EMBED_WIDGETS), color=IAD_COLOR, bgcolor=IAD_BG,
             links={"face_analysis": ("face_loader", 0), "images": images}, size=(380, 190)),
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


def _apply(key: str, x: int, model: tuple, weight: float, start: float, end: float = 1.0, identity: str = "identity",
           title: str | None = None) -> Node:
    return Node(key, "IaDApply", x, {"weight": weight, "start_percent": start, "end_percent": end, "apply_to_uncond": False},
                links={"model": model, "iad_model": ("iad_loader", 0), "identity": (identity, 0)},
                color=IAD_COLOR, bgcolor=IAD_BG, size=(360, 170), title=title)


def _latent(x: int) -> Node:
    return Node("latent", "EmptyHunyuanLatentVideo", x, {"width": 832, "height": 480, "length": 33, "batch_size": 1},
                title="Video size (Wan uses EmptyHunyuanLatentVideo)", size=(360, 130))


def _sampler(key: str, x: int, model: tuple, seed: int, steps: int = 30, cfg: float = 6.0, title: str | None = None) -> Node:
    return Node(key, "KSampler", x,
                {"seed": seed, "control_after_generate": "fixed", "steps": steps, "cfg": cfg,
                 "sampler_name": "uni_pc", "scheduler": "simple", "denoise": 1.0},
                links={"model": model, "positive": ("positive", 0), "negative": ("negative", 0), "latent_image": ("latent", 0)},
                title=title, size=(340, 262))


def _save(key: str, x: int, images: tuple, prefix: str, title: str | None = None) -> Node:
    return Node(key, "SaveAnimatedWEBP", x, {"filename_prefix": prefix, "fps": 16.0, "lossless": False, "quality": 90,
                                             "method": "default"},
                links={"images": images}, title=title, size=(420, 440))


def _readme(title: str, body: str, files: list[ModelFile], extra: str = "") -> str:
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


def wan21_1_3b_single_photo() -> Workflow:
    adapter = IAD_WAN21_1_3B
    readme = _readme(
        "IaD identity video - Wan 2.1 T2V 1.3B, ONE reference photo (the smallest working setup, ~8 GB VRAM).",
        """
The face comes from your photo; the expression, pose and motion come from the prompt.

Steps
1. Download the files below into your ComfyUI folder.
2. Load your photo in 'Reference photo'.
3. Write what the person does in the green prompt; press Run (Ctrl+Enter).
""", [WAN21_T2V_1_3B, UMT5_FP8, WAN21_VAE, adapter])
    tips = """
IaD settings
- IaD Apply weight 1.0: identity strength (0 = plain Wan). Too strong: stiff face; too weak: likeness fades.
- start_percent 0.3: identity only in the later 70% of the denoising (PersonalVideo's finding):
  the early steps lay out composition and motion from the prompt, the later steps resolve the face.
- IaD Identity decoupling 'auto': the adapter's trained decoupler if it has one, else training-free.
  With ONE photo the training-free decoupler has little to go on: add photos (see the 14B
  multi-reference workflow) for a cleaner identity/expression split.
- 832x480, 33 frames, 30 steps, cfg 6, shift 8: Wan 2.1 1.3B's usual settings.
"""
    photos, images = _photos(C1, ["iad_reference_1.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 980), title="Read me: what to download and where"),
        *_wan_loaders(WAN21_T2V_1_3B, C1),
        *photos,
        *_prompts(C2, "a young woman laughs out loud, then turns her head to the left and waves, "
                      "walking through a sunny park, handheld camera"),
        *_face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0),
        _apply("apply", C3, ("shift", 0), weight=1.0, start=0.3),
        _latent(C3),
        _sampler("sampler", C4, ("apply", 0), seed=42),
        note("tips", tips, C4, size=(420, 400), title="IaD settings"),
        Node("decode", "VAEDecode", C5, links={"samples": ("sampler", 0), "vae": ("vae", 0)}),
        _save("save", C5, ("decode", 0), "iad/wan2.1_1.3B_identity", title="Identity video"),
    ]
    groups = [
        Group("Wan 2.1 T2V 1.3B", ["unet", "shift", "clip", "vae"]),
        Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("wan2.1_t2v_1.3B_iad_single_photo", nodes, groups)


def wan21_14b_multi_reference() -> Workflow:
    adapter = IAD_WAN21_14B
    readme = _readme(
        "IaD identity video - Wan 2.1 T2V 14B, several reference photos, training-free decoupling, late-step injection.",
        """
Several photos of the SAME person (different expressions, angles, lighting) give the most robust
identity: IaD's training-free decoupler estimates how the photos differ (expression, pose,
lighting) and removes those directions from the identity, so the prompt alone decides the action.

Steps
1. Download the files below. 14B fp16 needs ~40 GB VRAM or offloading; the fp8 file
   wan2.1_t2v_14B_fp8_e4m3fn.safetensors (same folder) fits 24 GB: pick it in the loader.
2. Load 2-4 photos of one person in the 'Reference photo' nodes (with fewer, delete the
   unused photo and its 'Batch photos' node).
3. Write the action in the green prompt; Run (Ctrl+Enter).
""", [WAN21_T2V_14B, UMT5_FP8, WAN21_VAE, adapter],
        extra="The IaD adapter must match the base model: a 14B adapter (width 5120) on the 14B model.\n")
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
    photos, images = _photos(C1, ["iad_reference_1.png", "iad_reference_2.png", "iad_reference_3.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 1120), title="Read me: what to download and where"),
        *_wan_loaders(WAN21_T2V_14B, C1),
        *photos,
        *_prompts(C2, "a middle-aged man frowns in concentration, then breaks into a wide grin and nods, "
                      "sitting at a wooden desk in a dim workshop, cinematic lighting"),
        *_face_and_identity(C3, C4, images, adapter, decoupling="training-free", strength=0.8),
        _apply("apply", C4, ("shift", 0), weight=1.0, start=0.4, title="IaD Apply (late steps only: start 0.4)"),
        _latent(C4),
        _sampler("sampler", C5, ("apply", 0), seed=7),
        note("tips", tips, C5, size=(440, 420), title="IaD settings"),
        Node("decode", "VAEDecode", C6, links={"samples": ("sampler", 0), "vae": ("vae", 0)}),
        _save("save", C6, ("decode", 0), "iad/wan2.1_14B_identity", title="Identity video"),
    ]
    groups = [
        Group("Wan 2.1 T2V 14B", ["unet", "shift", "clip", "vae"]),
        Group("Identity from several photos (IaD)", ["face_loader", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("wan2.1_t2v_14B_iad_multi_reference", nodes, groups)


def wan21_ab_comparison() -> Workflow:
    adapter = IAD_WAN21_1_3B
    readme = _readme(
        "A/B: what does IaD change? Three videos with the SAME seed, prompt and settings, side by side:",
        """
  left   = A: plain Wan 2.1 1.3B (no identity)
  middle = B: IaD with decoupling (identity from the photos, action from the prompt)
  right  = C: IaD with decoupling OFF (raw face embedding: tends to copy the photos' expression/pose)
'IaD Evaluate Video' measures each against your photos: identity similarity (FaceSim), identity
stability, expression copy (does the face copy the photo instead of following the prompt?) and
motion; JSON report on the node, per-frame curves in the plot.

Steps
1. Download the files below.
2. Load two photos of one person; write a prompt whose expression differs from the photos
   (e.g. photos neutral, prompt 'laughs'): that is where decoupling shows.
3. Run (Ctrl+Enter). Takes about 3x the time of a single video.
""", [WAN21_T2V_1_3B, UMT5_FP8, WAN21_VAE, adapter])
    photos, images = _photos(C1, ["iad_reference_1.png", "iad_reference_2.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 1060), title="Read me: what to download and where"),
        *_wan_loaders(WAN21_T2V_1_3B, C1),
        *photos,
        *_prompts(C2, "a woman bursts out laughing, eyes closed, head tilted back, then looks to the right, "
                      "standing on a windy beach at sunset"),
        *_face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0),
        Node("identity_raw", "IaDIdentity", C2, {"decoupling": "none", "strength": 1.0},
             links={"iad_model": ("iad_loader", 0), "face_embeds": ("face_embed", 0)},
             title="IaD Identity (decoupling OFF)", color=IAD_COLOR, bgcolor=IAD_BG, size=(380, 110)),
        _latent(C3),
        _apply("apply", C3, ("shift", 0), weight=1.0, start=0.3, title="IaD Apply (B: decoupled)"),
        _apply("apply_raw", C3, ("shift", 0), weight=1.0, start=0.3, identity="identity_raw",
               title="IaD Apply (C: decoupling off)"),
        _sampler("sampler_base", C4, ("shift", 0), seed=1234, title="A: plain Wan (no IaD)"),
        _sampler("sampler_iad", C4, ("apply", 0), seed=1234, title="B: IaD (decoupled)"),
        _sampler("sampler_raw", C4, ("apply_raw", 0), seed=1234, title="C: IaD, decoupling off"),
        Node("decode_base", "VAEDecode", C5, links={"samples": ("sampler_base", 0), "vae": ("vae", 0)}, title="Decode A"),
        Node("decode_iad", "VAEDecode", C5, links={"samples": ("sampler_iad", 0), "vae": ("vae", 0)}, title="Decode B"),
        Node("decode_raw", "VAEDecode", C5, links={"samples": ("sampler_raw", 0), "vae": ("vae", 0)}, title="Decode C"),
        Node("stitch_ab", "ImageStitch", C5, {"direction": "right", "match_image_size": True, "spacing_width": 0,
                                              "spacing_color": "white"},
             links={"image1": ("decode_base", 0), "image2": ("decode_iad", 0)}, title="A | B"),
        Node("stitch_abc", "ImageStitch", C5, {"direction": "right", "match_image_size": True, "spacing_width": 0,
                                               "spacing_color": "white"},
             links={"image1": ("stitch_ab", 0), "image2": ("decode_raw", 0)}, title="A | B | C"),
        _save("save", C6, ("stitch_abc", 0), "iad/ab_side_by_side", title="Side by side: A plain | B IaD | C IaD, no decoupling"),
    ]
    for tag, decode in (("A: plain Wan", "decode_base"), ("B: IaD", "decode_iad"), ("C: IaD, decoupling off", "decode_raw")):
        nodes.append(Node(f"eval_{decode}", "IaDEvaluateVideo", C7, {"prompt": "", "fps": 16.0, "frame_sampling": "all frames"},
                          links={"video": (decode, 0), "face_analysis": ("face_loader", 0), "reference_embeds": ("face_embed", 0)},
                          title=f"Evaluate {tag}", color=IAD_COLOR, bgcolor=IAD_BG, size=(380, 360)))
        nodes.append(Node(f"plot_{decode}", "PreviewImage", C8, links={"images": (f"eval_{decode}", 1)},
                          title=f"Metrics plot {tag}", size=(380, 360)))
    groups = [
        Group("Wan 2.1 T2V 1.3B", ["unet", "shift", "clip", "vae"]),
        Group("Identity (IaD)", ["face_loader", "face_embed", "iad_loader", "identity", "identity_raw"], "#335"),
        Group("A / B / C with the same seed", ["sampler_base", "sampler_iad", "sampler_raw"]),
        Group("Identity metrics (IaD Evaluate Video)", [n.key for n in nodes if n.key.startswith("eval_")], "#335"),
    ]
    return Workflow("wan2.1_t2v_1.3B_iad_ab_comparison", nodes, groups)


def all_workflows() -> list[Workflow]:
    return [wan21_1_3b_single_photo(), wan21_14b_multi_reference(), wan21_ab_comparison()]
