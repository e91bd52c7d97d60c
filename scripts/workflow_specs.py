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


@dataclass
class TemplateWorkflow(Workflow):
    """A shipped workflow built from ComfyUI's own official template for a model (the
    comfyui-workflow-templates package ComfyUI pins): the template as shipped, its subgraphs
    unpacked, plus ``nodes`` (the IaD part, placed below it) and IaD Apply between the ``anchor``
    loader's output and everything that output fed. ``@anchor`` in a link names that loader."""

    template: str = ""           # file name in the templates package, e.g. video_ltx2_t2v.json
    anchor: dict = field(default_factory=dict)   # {"type", "widget": [name, value], "output"}
    apply: str = "apply"         # the key of the IaD Apply node in ``nodes``
    requires: str = ""           # what the running ComfyUI must have (said in the README and tests)

    def to_js(self) -> dict:
        return {**super().to_js(), "apply": self.apply}


@dataclass(frozen=True)
class OfficialTemplate:
    graph: dict
    package: str
    version: str
    file: str
    sha256: str

    def provenance(self) -> dict:
        return {"package": self.package, "version": self.version, "file": self.file, "sha256": self.sha256}


def official_template(file: str) -> OfficialTemplate:
    """An official template from the installed comfyui-workflow-templates packages (the one this
    ComfyUI pins); raises FileNotFoundError when none of them has ``file``."""
    import hashlib
    import json
    from importlib import metadata

    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        if not name.lower().replace("_", "-").startswith("comfyui-workflow-templates"):
            continue
        for entry in dist.files or []:
            if entry.name == file and entry.parent.name == "templates":
                path = entry.locate()
                data = path.read_bytes()
                return OfficialTemplate(json.loads(data), name, dist.version, file, hashlib.sha256(data).hexdigest())
    raise FileNotFoundError(f"no installed comfyui-workflow-templates package has {file} (run in the lane of the "
                            "ComfyUI whose templates the workflow is built from: scripts/lanes.py run v0.28.2 -- ...)")


def download_list(files) -> str:
    return "\n".join(f"- models/{m.directory}/{m.name}" + (f"\n    {m.url}" if m.url else "") for m in files)




IRSE50 = ModelFile("recognition_arcface_ir_se50.pth", "facexlib",
                  "https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth")
LYNX_FULL = ModelFile("lynx_full/resampler.safetensors", "iad")  # a folder from huggingface.co/ByteDance/lynx

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


def _wan_loaders(unet: ModelFile, x: int, shift: float = 8.0) -> list[Node]:
    """Diffusion model (+ the shift Wan uses), umt5 text encoder, Wan VAE."""
    return [
        Node("unet", "UNETLoader", x, {"unet_name": unet.name, "weight_dtype": "default"},
             models=(unet,), size=(400, 82), title="Load Diffusion Model (Wan)"),
        Node("shift", "ModelSamplingSD3", x, {"shift": shift}, links={"model": ("unet", 0)}, size=(400, 60)),
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


def _face_and_identity(x: int, preview_x: int, images: tuple, adapter: ModelFile, decoupling: str, strength: float,
                       irse50: bool = False) -> list[Node]:
    """Faces -> ArcFace embeddings -> identity tokens (IaD Identity runs once per run). ``irse50``:
    embeddings from facexlib's IR-SE50 (what Lynx adapters need) instead of the pack's recognizer."""
    embedder = [Node("irse50", "IaDIRSE50FaceEmbedder", x, {"weights": IRSE50.name}, models=(IRSE50,),
                     links={"face_analysis": ("face_loader", 0)}, color=IAD_COLOR, bgcolor=IAD_BG, size=(380, 80),
                     title="IaD IR-SE50 Face Embedder (Lynx's recognizer)")] if irse50 else []
    return [
        Node("face_loader", "IaDFaceAnalysisLoader", x, dict(FACE_LOADER_WIDGETS), color=IAD_COLOR, bgcolor=IAD_BG,
             size=(380, 110)),
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


def _apply(key: str, x: int, model: tuple, weight: float, start: float = LATE_START, end: float = 1.0,
           identity: str = "identity", title: str | None = None, uncond: str = "none") -> Node:
    return Node(key, "IaDApply", x, {"weight": weight, "start_percent": start, "end_percent": end, "uncond_identity": uncond},
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
- start_percent 0.75: identity only in the LAST QUARTER of the denoising (PersonalVideo's finding):
  the early steps fix layout, motion and expression from the prompt; identity injected late keeps
  the prompt's action. Lower it (e.g. 0.5) for a stronger likeness, at the cost of more copying of
  the photo's pose and expression.
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
        _apply("apply", C3, ("shift", 0), weight=1.0),
        _latent(C3),
        _sampler("sampler", C4, ("apply", 0), seed=42),
        note("tips", tips, C4, size=(420, 440), title="IaD settings"),
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
- IaD Apply start_percent 0.75: late-step injection - identity only in the last quarter of the
  denoising; the first 75% fix layout, motion and expression from the prompt (PersonalVideo's
  finding). Lower it if the likeness is weak (earlier = stronger identity, more copying of the
  photos); raise it if the video still copies a photo's pose.
- weight 1.0; uncond_identity 'none' (CFG then also pushes towards the identity).
"""
    photos, images = _photos(C1, ["iad_reference_1.png", "iad_reference_2.png", "iad_reference_3.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 1120), title="Read me: what to download and where"),
        *_wan_loaders(WAN21_T2V_14B, C1),
        *photos,
        *_prompts(C2, "a middle-aged man frowns in concentration, then breaks into a wide grin and nods, "
                      "sitting at a wooden desk in a dim workshop, cinematic lighting"),
        *_face_and_identity(C3, C4, images, adapter, decoupling="training-free", strength=0.8),
        _apply("apply", C4, ("shift", 0), weight=1.0, title="IaD Apply (late steps only: last quarter)"),
        _latent(C4),
        _sampler("sampler", C5, ("apply", 0), seed=7),
        note("tips", tips, C5, size=(440, 440), title="IaD settings"),
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
        _apply("apply", C3, ("shift", 0), weight=1.0, title="IaD Apply (B: decoupled)"),
        _apply("apply_raw", C3, ("shift", 0), weight=1.0, identity="identity_raw",
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
    readme = _readme(
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
    photos, images = _photos(C1, ["iad_reference_1.png"], C2)
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
        *_face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0),
        _apply("apply", C3, ("shift", 0), weight=1.0),
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
        _save("save", C6, ("decode", 0), "iad/hunyuan_video_identity", title="Identity video"),
    ]
    nodes[-1].widgets["fps"] = 24.0
    groups = [
        Group("HunyuanVideo T2V", ["unet", "shift", "clip", "vae"]),
        Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("hunyuan_video_t2v_iad_single_photo", nodes, groups)


def ltxv_single_photo() -> Workflow:
    adapter = IAD_LTXV
    readme = _readme(
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
    photos, images = _photos(C1, ["iad_reference_1.png"], C2)
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
        *_face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0),
        _apply("apply", C3, ("checkpoint", 0), weight=1.0),
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
        _save("save", C6, ("decode", 0), "iad/ltxv_identity", title="Identity video"),
    ]
    nodes[-1].widgets["fps"] = 24.0
    groups = [
        Group("LTX-Video 2B", ["checkpoint", "clip"]),
        Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("ltxv_2b_iad_single_photo", nodes, groups)


def wan22_a14b_multi_reference() -> Workflow:
    """Wan 2.2 A14B: a high-noise expert for the early steps and a low-noise expert for the late
    ones. IaD goes on the low-noise expert only: late-step injection by construction."""
    adapter = IAD_WAN21_14B
    readme = _readme(
        "IaD identity video - Wan 2.2 T2V A14B (two experts), several reference photos, identity on the late steps.",
        """
Wan 2.2 A14B denoises with two 14B experts: the high-noise one lays out composition and motion
(steps 0-10 here), the low-noise one resolves details and faces (steps 10-20). IaD is applied to
the low-noise expert only, so the prompt alone decides the motion and the identity arrives in the
late steps (PersonalVideo's finding). Both experts share Wan 2.1 14B's architecture (width 5120):
a Wan 14B IaD adapter fits.

Steps
1. Download the files below (fp8 experts: ~14 GB each; they are swapped in and out of VRAM).
2. Load 2-4 photos of one person in the 'Reference photo' nodes.
3. Write the action in the green prompt; Run (Ctrl+Enter).
""", [WAN22_T2V_HIGH, WAN22_T2V_LOW, UMT5_FP8, WAN21_VAE, adapter],
        extra="The IaD adapter must match the base model: a 14B adapter (width 5120).\n")
    tips = """
IaD settings in this workflow
- IaD Identity decoupling 'training-free', strength 0.8 (see the Wan 2.1 14B workflow).
- IaD Apply on the LOW-noise expert, start_percent 0.75: the percentages are of the WHOLE
  denoising (the model's sigma schedule), not of the expert's own steps, so 0.75 = steps 15-20 of
  20: the last quarter, as in the other workflows (PersonalVideo). start_percent 0.5 gives the
  identity to all of the low-noise expert's steps (10-20): stronger likeness, more copying. The
  high-noise expert never gets the identity.
- 640x640, 33 frames, 20 steps split 10/10, cfg 3.5, shift 8: the Wan 2.2 14B template settings.
"""
    photos, images = _photos(C1, ["iad_reference_1.png", "iad_reference_2.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 1120), title="Read me: what to download and where"),
        Node("unet_high", "UNETLoader", C1, {"unet_name": WAN22_T2V_HIGH.name, "weight_dtype": "default"},
             models=(WAN22_T2V_HIGH,), size=(420, 82), title="Load Diffusion Model (Wan 2.2 high noise expert)"),
        Node("shift_high", "ModelSamplingSD3", C1, {"shift": 8.0}, links={"model": ("unet_high", 0)}, size=(420, 60)),
        Node("unet", "UNETLoader", C1, {"unet_name": WAN22_T2V_LOW.name, "weight_dtype": "default"},
             models=(WAN22_T2V_LOW,), size=(420, 82), title="Load Diffusion Model (Wan 2.2 low noise expert)"),
        Node("shift", "ModelSamplingSD3", C1, {"shift": 8.0}, links={"model": ("unet", 0)}, size=(420, 60)),
        Node("clip", "CLIPLoader", C1, {"clip_name": UMT5_FP8.name, "type": "wan", "device": "default"},
             models=(UMT5_FP8,), size=(420, 106), title="Load CLIP (umt5-xxl text encoder)"),
        Node("vae", "VAELoader", C1, {"vae_name": WAN21_VAE.name}, models=(WAN21_VAE,), size=(420, 60)),
        *photos,
        *_prompts(C2, "an elderly woman with silver hair smiles warmly, then laughs and claps her hands, "
                      "in a cozy kitchen with morning light, slow camera push-in"),
        *_face_and_identity(C3, C4, images, adapter, decoupling="training-free", strength=0.8),
        _apply("apply", C4, ("shift", 0), weight=1.0, title="IaD Apply (low-noise expert, last quarter)"),
        Node("latent", "EmptyHunyuanLatentVideo", C4, {"width": 640, "height": 640, "length": 33, "batch_size": 1},
             title="Video size (Wan uses EmptyHunyuanLatentVideo)", size=(360, 130)),
        Node("sampler_high", "KSamplerAdvanced", C5,
             {"add_noise": "enable", "noise_seed": 7, "control_after_generate": "fixed", "steps": 20, "cfg": 3.5,
              "sampler_name": "euler", "scheduler": "simple", "start_at_step": 0, "end_at_step": 10,
              "return_with_leftover_noise": "enable"},
             links={"model": ("shift_high", 0), "positive": ("positive", 0), "negative": ("negative", 0),
                    "latent_image": ("latent", 0)}, title="Steps 0-10: high-noise expert (no identity)", size=(360, 334)),
        Node("sampler_low", "KSamplerAdvanced", C5,
             {"add_noise": "disable", "noise_seed": 7, "control_after_generate": "fixed", "steps": 20, "cfg": 3.5,
              "sampler_name": "euler", "scheduler": "simple", "start_at_step": 10, "end_at_step": 10000,
              "return_with_leftover_noise": "disable"},
             links={"model": ("apply", 0), "positive": ("positive", 0), "negative": ("negative", 0),
                    "latent_image": ("sampler_high", 0)}, title="Steps 10-20: low-noise expert + IaD", size=(360, 334)),
        note("tips", tips, C5, size=(440, 430), title="IaD settings"),
        Node("decode", "VAEDecode", C6, links={"samples": ("sampler_low", 0), "vae": ("vae", 0)}),
        _save("save", C6, ("decode", 0), "iad/wan2.2_A14B_identity", title="Identity video"),
    ]
    groups = [
        Group("Wan 2.2 T2V A14B (two experts)", ["unet_high", "shift_high", "unet", "shift", "clip", "vae"]),
        Group("Identity from several photos (IaD)", ["face_loader", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("wan2.2_t2v_A14B_iad_multi_reference", nodes, groups)


def wan21_14b_lynx() -> Workflow:
    """The identity adapter you can download today: Lynx (full) on native Wan 2.1 14B, with IaD's
    training-free decoupling and late-step injection on top."""
    readme = f"""
IaD + Lynx - Wan 2.1 T2V 14B with the released Lynx identity adapter (bytedance/lynx, Apache-2.0),
several reference photos, IaD training-free decoupling and late-step injection.

Lynx is the strongest public identity adapter for Wan 2.1 14B; here it runs on the NATIVE Wan model
(Load Diffusion Model), so LoRAs, fp8/GGUF loaders and other patches compose with it. Its users
report that it copies the photo's expression and forces front-facing headshots: IaD's decoupling
(IaD Identity) and the late-step start (IaD Apply) are what counter that.

Steps
1. Download the files below.
2. Lynx: download the folder lynx_full from https://huggingface.co/ByteDance/lynx so that you have
   models/iad/lynx_full/resampler.safetensors and models/iad/lynx_full/ip_layers.safetensors
   (ref_layers.safetensors is Lynx's ref-adapter, used by the 'Lynx full (ID + ref)' workflow). IaD Model Loader reads the folder directly (pick
   lynx_full/resampler.safetensors), or convert once: python -m iad.convert_lynx (docs/lynx.md).
3. Lynx was trained on facexlib's IR-SE50 face embedding, so the 'IaD IR-SE50 Face Embedder'
   node sits between the face loader and IaD Face Embed (IaD Identity refuses other embeddings).
4. Load 2+ photos of one person; write the action in the green prompt; Run (Ctrl+Enter).

Model files (the 'Missing Models' dialog offers the same download links)
{download_list([WAN21_T2V_14B, UMT5_FP8, WAN21_VAE, IRSE50])}
- models/iad/lynx_full/resampler.safetensors + ip_layers.safetensors  (huggingface.co/ByteDance/lynx)

{ANTELOPEV2_HELP}
(antelopev2 only finds and aligns the faces here; IR-SE50 embeds them.)

{PHOTO_HELP}
"""
    tips = """
Settings
- IaD Identity decoupling 'training-free', strength 0.6: removes the directions in which your photos
  differ (expression, pose) from the identity before Lynx's resampler sees it.
- IaD Apply start_percent 0.75: Lynx itself injects at every step (start 0), which is what
  copies the photo's pose; 0.75 (the last quarter, PersonalVideo) leaves layout, motion and
  expression to the prompt. Lower it (0.5) if the likeness is weak.
- IaD Apply uncond_identity 'null identity (Lynx)': the negative pass gets Lynx's null tokens
  (its resampler on an all-zero face), as Lynx does. With this two-pass KSampler that is exactly
  Lynx's guidance with the identity scale equal to cfg.
- Lynx-faithful settings: decoupling 'none', start_percent 0, cfg 5, 50 steps; for Lynx's
  three-pass guidance (separate identity scale, Lynx: 2.0) use 'IaD Lynx Guider' with
  SamplerCustomAdvanced on this IaD Apply (docs/lynx.md).
- 14B fp16 needs ~40 GB VRAM or offloading; wan2.1_t2v_14B_fp8_e4m3fn.safetensors fits 24 GB.
"""
    photos, images = _photos(C1, ["iad_reference_1.png", "iad_reference_2.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 1180), title="Read me: what to download and where"),
        *_wan_loaders(WAN21_T2V_14B, C1),
        *photos,
        *_prompts(C2, "a young man raises his eyebrows in surprise, then laughs and turns to look at the camera, "
                      "standing in a crowded train station, natural light"),
        *_face_and_identity(C3, C4, images, LYNX_FULL, decoupling="training-free", strength=0.6, irse50=True),
        _apply("apply", C4, ("shift", 0), weight=1.0, uncond="null identity (Lynx)",
               title="IaD Apply (Lynx adapter, last quarter)"),
        _latent(C4),
        _sampler("sampler", C5, ("apply", 0), seed=11, steps=30, cfg=5.0),
        note("tips", tips, C5, size=(440, 480), title="Settings"),
        Node("decode", "VAEDecode", C6, links={"samples": ("sampler", 0), "vae": ("vae", 0)}),
        _save("save", C6, ("decode", 0), "iad/wan2.1_14B_lynx_identity", title="Identity video"),
    ]
    groups = [
        Group("Wan 2.1 T2V 14B", ["unet", "shift", "clip", "vae"]),
        Group("Identity: Lynx + IaD decoupling", ["face_loader", "irse50", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("wan2.1_t2v_14B_lynx_iad_multi_reference", nodes, groups)


LYNX_REF_LAYERS = "lynx_full/ref_layers.safetensors"
LYNX_LITE = ModelFile("lynx_lite/resampler.safetensors", "iad")  # a folder from huggingface.co/ByteDance/lynx


@dataclass(frozen=True)
class LynxRelease:
    """One way to run Lynx as released, with its variant's own defaults (bytedance/lynx infer.py for
    full, infer_lite.py for lite: 50 UniPC steps at 832x480, bf16 adapters in both)."""

    name: str
    title: str
    id_adapter: ModelFile     # lynx_full or lynx_lite
    ref: bool                 # Lynx full's ref-adapter too
    three_pass: bool          # full: guidance_scale 5 + guidance_scale_i 2; lite: plain CFG 5
    frames: int               # full 81, lite 121
    fps: float                # full 16, lite 24
    why: str


LYNX_RELEASES = {
    "full": LynxRelease(
        "wan2.1_t2v_14B_lynx_full_id_ref", "Lynx full as released (ID + ref)", LYNX_FULL, ref=True, three_pass=True,
        frames=81, fps=16.0,
        why="Lynx full's two adapters with its own settings (infer.py): 81 frames at 16 fps, three-pass guidance "
            "with cfg 5 and identity scale 2."),
    "lite": LynxRelease(
        "wan2.1_t2v_14B_lynx_lite", "Lynx lite as released", LYNX_LITE, ref=False, three_pass=False,
        frames=121, fps=24.0,
        why="Lynx lite's ID adapter with its own settings (infer_lite.py): 121 frames at 24 fps, plain CFG 5 (its "
            "generate_t2v passes no identity scale)."),
    "lite+ref": LynxRelease(
        "wan2.1_t2v_14B_lynx_lite_full_ref", "Lynx lite ID adapter + Lynx full ref-adapter", LYNX_LITE, ref=True,
        three_pass=False, frames=121, fps=24.0,
        why="The combination many users prefer ('lite IP adapter + full ref'): lite's identity tokens, full's "
            "reference features, lite's settings (121 frames at 24 fps, plain CFG 5)."),
}


def lynx_release(key: str) -> Workflow:
    """Lynx as released on native Wan 2.1 14B: one photo, Lynx-exact identity (decoupling none, every
    step, null identity for the negative pass), each variant's own frames, fps and guidance."""
    r = LYNX_RELEASES[key]
    folder = r.id_adapter.name.split("/")[0]
    lynx_files = ["resampler.safetensors", "ip_layers.safetensors"]
    ref_line = (f"\n     models/iad/{LYNX_REF_LAYERS}   (from the lynx_full folder)" if r.ref else "")
    readme = f"""
{r.title} - Wan 2.1 T2V 14B with bytedance/lynx (Apache-2.0) on the native model.
{r.why}
50 UniPC steps, 832x480, adapters in bf16, as Lynx.

Steps
1. Download the files below into your ComfyUI folder.
2. Lynx: download from https://huggingface.co/ByteDance/lynx so that you have
""" + "\n".join(f"     models/iad/{folder}/{f}" for f in lynx_files) + ref_line + f"""
3. Load ONE photo in 'Reference photo'; write the action in the green prompt; Run (Ctrl+Enter).

Model files (the 'Missing Models' dialog offers the same download links)
{download_list([WAN21_T2V_14B, UMT5_FP8, WAN21_VAE, IRSE50])}
- models/iad/{folder}/ ({', '.join(lynx_files)})""" + (f"\n- models/iad/{LYNX_REF_LAYERS}" if r.ref else "") + f"""
    (huggingface.co/ByteDance/lynx)

{ANTELOPEV2_HELP}
(antelopev2 finds the face and its keypoints; IR-SE50 embeds it for the ID adapter"""
    readme += ("; the ref-adapter reads Lynx's 256 px face crop through the Wan VAE.)" if r.ref else ".)") + f"""

{PHOTO_HELP}
"""
    guidance = ("IaD Lynx Guider + SamplerCustomAdvanced: Lynx full's three passes per step, cfg 5\n"
                "  (prompt) and cfg_identity 2 (identity)." if r.three_pass else
                "KSampler cfg 5: Lynx lite's plain CFG; its negative pass gets Lynx's null identity.")
    ref_tip = ("- IaD Lynx Ref Adapter: ref_scale 1.0 (Lynx), every step; ref_text is Lynx's 'image of a face'.\n"
               "  One extra single-frame model pass per run (face and zero image).\n" if r.ref else
               "- Lynx full's ref-adapter adds fine facial detail: see the 'Lynx lite ID + full ref' workflow.\n")
    tips = f"""
What each Lynx part does here
- IaD Apply (ID adapter): weight 1.0 = Lynx ip_scale; start 0 / end 1 = every step, as Lynx;
  uncond_identity 'null identity (Lynx)' = Lynx's negative pass (resampler on an all-zero face).
  IaD Identity decoupling 'none' = exactly Lynx's embedding of one photo.
{ref_tip}- {guidance}
- {r.frames} frames, saved at {r.fps:g} fps: the variant's own defaults.
- Less copying of the photo (IaD): raise IaD Apply start_percent to 0.75 (identity only in the
  last quarter) and add photos with decoupling 'training-free' (the multi-reference Lynx workflow).
- Memory: 14B in fp16 needs ~40 GB VRAM or offloading; wan2.1_t2v_14B_fp8_e4m3fn.safetensors fits
  24 GB. Lynx full's ID adapter has 2.2 G parameters, lite's 0.5 G, the ref-adapter 2.1 G (bf16: 2 bytes each).
- shift 3: Wan's default for 480p (diffusers' Wan scheduler default).
"""
    model = ("apply", 0)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 1240), title="Read me: what to download and where"),
        *_wan_loaders(WAN21_T2V_14B, C1, shift=3.0),
        Node("photo1", "LoadImage", C1, {"image": "iad_reference_1.png"}, title="Reference photo", size=(320, 340)),
        *_prompts(C2, "a young woman laughs, then turns her head to the left and waves at someone off-screen, "
                      "walking along a sunny beach promenade, handheld camera"),
        *_face_and_identity(C3, C5, ("photo1", 0), r.id_adapter, decoupling="none", strength=1.0, irse50=True),
        _apply("apply", C4, ("shift", 0), weight=1.0, start=0.0, end=1.0, uncond="null identity (Lynx)",
               title=f"IaD Apply (Lynx {folder.split('_')[1]} ID adapter, every step)"),
        Node("latent", "EmptyHunyuanLatentVideo", C5, {"width": 832, "height": 480, "length": r.frames, "batch_size": 1},
             title=f"Video size: 832x480, {r.frames} frames (Lynx)", size=(360, 130)),
    ]
    if r.ref:
        after_prompts = next(i for i, n in enumerate(nodes) if n.key == "negative") + 1
        nodes[after_prompts:after_prompts] = [Node("ref_text", "CLIPTextEncode", C2, {"text": "image of a face"}, links={"clip": ("clip", 0)},
                           title="Lynx's reference text (keep it)", size=(420, 100))]
        nodes += [
            Node("ref", "IaDLynxRefAdapter", C4,
                 {"ref_layers": LYNX_REF_LAYERS, "ref_scale": 1.0, "start_percent": 0.0, "end_percent": 1.0, "dtype": "bf16"},
                 links={"model": ("apply", 0), "vae": ("vae", 0), "face_analysis": ("face_loader", 0),
                        "image": ("photo1", 0), "ref_text": ("ref_text", 0)},
                 color=IAD_COLOR, bgcolor=IAD_BG, size=(360, 250), title="IaD Lynx Ref Adapter (Lynx full)"),
            Node("ref_crop", "PreviewImage", C7, links={"images": ("ref", 1)},
                 title="Preview: Lynx's 256 px reference crop", size=(300, 300)),
        ]
        model = ("ref", 0)
    if r.three_pass:
        nodes += [
            Node("guider", "IaDLynxGuider", C4, {"cfg": 5.0, "cfg_identity": 2.0},
                 links={"model": model, "positive": ("positive", 0), "negative": ("negative", 0)},
                 color=IAD_COLOR, bgcolor=IAD_BG, size=(360, 130)),
            Node("noise", "RandomNoise", C5, {"noise_seed": 42, "control_after_generate": "fixed"}, size=(320, 82)),
            Node("sampler_select", "KSamplerSelect", C5, {"sampler_name": "uni_pc"}, size=(320, 60)),
            Node("scheduler", "BasicScheduler", C5, {"scheduler": "simple", "steps": 50, "denoise": 1.0},
                 links={"model": model}, size=(320, 106), title="BasicScheduler (50 steps, Lynx)"),
            Node("sampler", "SamplerCustomAdvanced", C6,
                 links={"noise": ("noise", 0), "guider": ("guider", 0), "sampler": ("sampler_select", 0),
                        "sigmas": ("scheduler", 0), "latent_image": ("latent", 0)}, size=(340, 330)),
        ]
    else:
        nodes.append(_sampler("sampler", C6, model, seed=42, steps=50, cfg=5.0, title="KSampler (50 steps, cfg 5: Lynx lite)"))
    save = _save("save", C7, ("decode", 0), f"iad/{r.name}", title=f"Identity video ({r.fps:g} fps)")
    save.widgets["fps"] = r.fps
    nodes += [
        note("tips", tips, C6, size=(460, 560), title="Settings"),
        Node("decode", "VAEDecode", C7, links={"samples": ("sampler", 0), "vae": ("vae", 0)}),
        save,
    ]
    lynx_nodes = ["apply"] + (["ref"] if r.ref else []) + (["guider"] if r.three_pass else [])
    groups = [
        Group("Wan 2.1 T2V 14B", ["unet", "shift", "clip", "vae"]),
        Group(f"Lynx {folder.split('_')[1]}: ID adapter", ["face_loader", "irse50", "face_embed", "iad_loader", "identity"], "#335"),
        Group("Lynx: " + (" + ".join(["injection"] + (["ref-adapter"] if r.ref else []) + (["three-pass guidance"] if r.three_pass else []))),
              lynx_nodes, "#335"),
    ]
    return Workflow(r.name, nodes, groups)


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


def _template_identity_nodes(adapter: ModelFile, readme: str, readme_size: tuple[int, int]) -> list[Node]:
    """The IaD part of a template workflow: read-me, photo, faces -> identity, IaD Apply on the
    template's model (``@anchor``), laid out in columns below the template."""
    photos, images = _photos(C1, ["iad_reference_1.png"], C2)
    return [
        note("readme", readme, (C0, 0), size=readme_size, title="Read me: IaD on the official template"),
        *photos,
        *_face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0),
        _apply("apply", C4, ("@anchor", "MODEL"), weight=1.0, title="IaD Apply (feeds everything the model fed)"),
        note("tips", VARIANT_TIPS, C4, size=(420, 260), title="IaD settings"),
    ]


def ltx2_t2v_template() -> TemplateWorkflow:
    files = [LTX2_19B_FP8, GEMMA3_FP4, LTX2_DISTILLED_LORA, LTX2_CAMERA_LORA, LTX2_UPSCALER]
    readme = _readme(
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
        "ltx2_19b_t2v_iad_single_photo", _template_identity_nodes(IAD_LTX2, readme, (460, 1240)),
        [Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity", "apply"], "#335")],
        template="video_ltx2_t2v.json",
        anchor={"type": "CheckpointLoaderSimple", "widget": ["ckpt_name", LTX2_19B_FP8.name], "output": "MODEL"},
        requires="LTX-2 (ComfyUI 0.7 or newer)")


def hunyuan_video15_t2v_template() -> TemplateWorkflow:
    files = [HV15_720P_T2V, QWEN25_VL_FP8, BYT5_GLYPH, HV15_VAE, HV15_SR, HV15_UPSAMPLER]
    readme = _readme(
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
        "hunyuan_video_1.5_720p_t2v_iad_single_photo", _template_identity_nodes(IAD_HV15, readme, (460, 1240)),
        [Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity", "apply"], "#335")],
        template="video_hunyuan_video_1.5_720p_t2v.json",
        anchor={"type": "UNETLoader", "widget": ["unet_name", HV15_720P_T2V.name], "output": "MODEL"},
        requires="HunyuanVideo 1.5 (ComfyUI 0.3.75 or newer)")


def all_workflows() -> list[Workflow]:
    return [wan21_1_3b_single_photo(), wan21_14b_multi_reference(), wan22_a14b_multi_reference(), wan21_14b_lynx(),
            *(lynx_release(key) for key in LYNX_RELEASES), wan21_ab_comparison(), hunyuan_video_single_photo(), ltxv_single_photo(), ltx2_t2v_template(),
            hunyuan_video15_t2v_template()]
