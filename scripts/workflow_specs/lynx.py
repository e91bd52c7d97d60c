"""Lynx on native Wan 2.1 14B: with IaD decoupling, and each released variant as released.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import IAD_BG, IAD_COLOR, Group, ModelFile, Node, Workflow, download_list, note
from .parts import (C0, C1, C2, C3, C4, C5, C6, C7, IRSE50, LYNX_FACE_HELP, LYNX_FULL, PHOTO_HELP, UMT5_FP8,
                    WAN21_T2V_14B, WAN21_VAE, apply_node, face_and_identity, latent_node, photo_nodes,
                    prompt_nodes, sampler_node, save_node, wan_loaders)


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

{LYNX_FACE_HELP}
(buffalo_l only finds and aligns the faces here; IR-SE50 embeds them.)

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
    photos, images = photo_nodes(C1, ["iad_reference_1.png", "iad_reference_2.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 1180), title="Read me: what to download and where"),
        *wan_loaders(WAN21_T2V_14B, C1),
        *photos,
        *prompt_nodes(C2, "a young man raises his eyebrows in surprise, then laughs and turns to look at the camera, "
                      "standing in a crowded train station, natural light"),
        *face_and_identity(C3, C4, images, LYNX_FULL, decoupling="training-free", strength=0.6, irse50=True),
        apply_node("apply", C4, ("shift", 0), weight=1.0, uncond="null identity (Lynx)",
               title="IaD Apply (Lynx adapter, last quarter)"),
        latent_node(C4),
        sampler_node("sampler", C5, ("apply", 0), seed=11, steps=30, cfg=5.0),
        note("tips", tips, C5, size=(440, 480), title="Settings"),
        Node("decode", "VAEDecode", C6, links={"samples": ("sampler", 0), "vae": ("vae", 0)}),
        save_node("save", C6, ("decode", 0), "iad/wan2.1_14B_lynx_identity", title="Identity video"),
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

{LYNX_FACE_HELP}
(buffalo_l finds the face and its keypoints; IR-SE50 embeds it for the ID adapter"""
    readme += ("; the ref-adapter reads Lynx's 256 px face crop through the Wan VAE.)" if r.ref else ".)") + f"""

{PHOTO_HELP}
"""
    guidance = ("IaD Lynx Guider: Lynx full's three passes per step, cfg 5 (prompt) and\n"
                "  cfg_identity 2 (identity)." if r.three_pass else
                "CFGGuider cfg 5: Lynx lite's plain CFG; its negative pass gets Lynx's null identity.")
    ref_tip = ("- IaD Lynx Ref Adapter: ref_scale 1.0 (Lynx), every step; ref_text is Lynx's 'image of a face'.\n"
               "  One extra single-frame model pass per run (face and zero image).\n" if r.ref else
               "- Lynx full's ref-adapter adds fine facial detail: see the 'Lynx lite ID + full ref' workflow.\n")
    tips = f"""
What each Lynx part does here
- IaD Apply (ID adapter): weight 1.0 = Lynx ip_scale; start 0 / end 1 = every step, as Lynx;
  uncond_identity 'null identity (Lynx)' = Lynx's negative pass (resampler on an all-zero face).
  IaD Identity decoupling 'none' = exactly Lynx's embedding of one photo.
{ref_tip}- {guidance}
- uni_pc_bh2 + BasicScheduler simple, 50 steps: Lynx's UniPC (diffusers' default bh2 solver),
  its sigmas within 4e-4. (KSampler's uni_pc drops the penultimate sigma: 5e-2 off.)
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
        *wan_loaders(WAN21_T2V_14B, C1, shift=3.0),
        Node("photo1", "LoadImage", C1, {"image": "iad_reference_1.png"}, title="Reference photo", size=(320, 340)),
        *prompt_nodes(C2, "a young woman laughs, then turns her head to the left and waves at someone off-screen, "
                      "walking along a sunny beach promenade, handheld camera"),
        *face_and_identity(C3, C5, ("photo1", 0), r.id_adapter, decoupling="none", strength=1.0, irse50=True),
        apply_node("apply", C4, ("shift", 0), weight=1.0, start=0.0, end=1.0, uncond="null identity (Lynx)",
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
    guider = (Node("guider", "IaDLynxGuider", C4, {"cfg": 5.0, "cfg_identity": 2.0}, color=IAD_COLOR, bgcolor=IAD_BG,
                   links={"model": model, "positive": ("positive", 0), "negative": ("negative", 0)}, size=(360, 130))
              if r.three_pass else
              Node("guider", "CFGGuider", C5, {"cfg": 5.0}, title="CFGGuider (cfg 5: Lynx lite)", size=(320, 100),
                   links={"model": model, "positive": ("positive", 0), "negative": ("negative", 0)}))
    # SamplerCustomAdvanced for both: KSampler's uni_pc would drop the penultimate of Lynx's 50 sigmas
    nodes += [
        guider,
        Node("noise", "RandomNoise", C5, {"noise_seed": 42, "control_after_generate": "fixed"}, size=(320, 82)),
        Node("sampler_select", "KSamplerSelect", C5, {"sampler_name": "uni_pc_bh2"}, size=(320, 60),
             title="KSamplerSelect (UniPC bh2, Lynx)"),
        Node("scheduler", "BasicScheduler", C5, {"scheduler": "simple", "steps": 50, "denoise": 1.0},
             links={"model": model}, size=(320, 106), title="BasicScheduler (50 steps, Lynx)"),
        Node("sampler", "SamplerCustomAdvanced", C6,
             links={"noise": ("noise", 0), "guider": ("guider", 0), "sampler": ("sampler_select", 0),
                    "sigmas": ("scheduler", 0), "latent_image": ("latent", 0)}, size=(340, 330)),
    ]
    save = save_node("save", C7, ("decode", 0), f"iad/{r.name}", title=f"Identity video ({r.fps:g} fps)")
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
