"""Hand-made Wan 2.1 / 2.2 text-to-video workflows: one photo, several photos, the A/B comparison and
Wan 2.2 A14B's two experts.
"""

from __future__ import annotations

from .model import IAD_BG, IAD_COLOR, Group, Node, Workflow, note
from .parts import (C0, C1, C2, C3, C4, C5, C6, C7, C8, IAD_WAN21_14B, IAD_WAN21_1_3B, UMT5_FP8,
                    WAN21_T2V_14B, WAN21_T2V_1_3B, WAN21_VAE, WAN22_T2V_HIGH, WAN22_T2V_LOW, apply_node,
                    face_and_identity, latent_node, photo_nodes, prompt_nodes, readme_text, sampler_node,
                    save_node, wan_loaders)


def wan21_1_3b_single_photo() -> Workflow:
    adapter = IAD_WAN21_1_3B
    readme = readme_text(
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
    photos, images = photo_nodes(C1, ["iad_reference_1.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 980), title="Read me: what to download and where"),
        *wan_loaders(WAN21_T2V_1_3B, C1),
        *photos,
        *prompt_nodes(C2, "a young woman laughs out loud, then turns her head to the left and waves, "
                      "walking through a sunny park, handheld camera"),
        *face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0),
        apply_node("apply", C3, ("shift", 0), weight=1.0),
        latent_node(C3),
        sampler_node("sampler", C4, ("apply", 0), seed=42),
        note("tips", tips, C4, size=(420, 440), title="IaD settings"),
        Node("decode", "VAEDecode", C5, links={"samples": ("sampler", 0), "vae": ("vae", 0)}),
        save_node("save", C5, ("decode", 0), "iad/wan2.1_1.3B_identity", title="Identity video"),
    ]
    groups = [
        Group("Wan 2.1 T2V 1.3B", ["unet", "shift", "clip", "vae"]),
        Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("wan2.1_t2v_1.3B_iad_single_photo", nodes, groups)


def wan21_14b_multi_reference() -> Workflow:
    adapter = IAD_WAN21_14B
    readme = readme_text(
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
    photos, images = photo_nodes(C1, ["iad_reference_1.png", "iad_reference_2.png", "iad_reference_3.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 1120), title="Read me: what to download and where"),
        *wan_loaders(WAN21_T2V_14B, C1),
        *photos,
        *prompt_nodes(C2, "a middle-aged man frowns in concentration, then breaks into a wide grin and nods, "
                      "sitting at a wooden desk in a dim workshop, cinematic lighting"),
        *face_and_identity(C3, C4, images, adapter, decoupling="training-free", strength=0.8),
        apply_node("apply", C4, ("shift", 0), weight=1.0, title="IaD Apply (late steps only: last quarter)"),
        latent_node(C4),
        sampler_node("sampler", C5, ("apply", 0), seed=7),
        note("tips", tips, C5, size=(440, 440), title="IaD settings"),
        Node("decode", "VAEDecode", C6, links={"samples": ("sampler", 0), "vae": ("vae", 0)}),
        save_node("save", C6, ("decode", 0), "iad/wan2.1_14B_identity", title="Identity video"),
    ]
    groups = [
        Group("Wan 2.1 T2V 14B", ["unet", "shift", "clip", "vae"]),
        Group("Identity from several photos (IaD)", ["face_loader", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("wan2.1_t2v_14B_iad_multi_reference", nodes, groups)


def wan21_ab_comparison() -> Workflow:
    adapter = IAD_WAN21_1_3B
    readme = readme_text(
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
    photos, images = photo_nodes(C1, ["iad_reference_1.png", "iad_reference_2.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(460, 1060), title="Read me: what to download and where"),
        *wan_loaders(WAN21_T2V_1_3B, C1),
        *photos,
        *prompt_nodes(C2, "a woman bursts out laughing, eyes closed, head tilted back, then looks to the right, "
                      "standing on a windy beach at sunset"),
        *face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0),
        Node("identity_raw", "IaDIdentity", C2, {"decoupling": "none", "strength": 1.0},
             links={"iad_model": ("iad_loader", 0), "face_embeds": ("face_embed", 0)},
             title="IaD Identity (decoupling OFF)", color=IAD_COLOR, bgcolor=IAD_BG, size=(380, 110)),
        latent_node(C3),
        apply_node("apply", C3, ("shift", 0), weight=1.0, title="IaD Apply (B: decoupled)"),
        apply_node("apply_raw", C3, ("shift", 0), weight=1.0, identity="identity_raw",
               title="IaD Apply (C: decoupling off)"),
        sampler_node("sampler_base", C4, ("shift", 0), seed=1234, title="A: plain Wan (no IaD)"),
        sampler_node("sampler_iad", C4, ("apply", 0), seed=1234, title="B: IaD (decoupled)"),
        sampler_node("sampler_raw", C4, ("apply_raw", 0), seed=1234, title="C: IaD, decoupling off"),
        Node("decode_base", "VAEDecode", C5, links={"samples": ("sampler_base", 0), "vae": ("vae", 0)}, title="Decode A"),
        Node("decode_iad", "VAEDecode", C5, links={"samples": ("sampler_iad", 0), "vae": ("vae", 0)}, title="Decode B"),
        Node("decode_raw", "VAEDecode", C5, links={"samples": ("sampler_raw", 0), "vae": ("vae", 0)}, title="Decode C"),
        Node("stitch_ab", "ImageStitch", C5, {"direction": "right", "match_image_size": True, "spacing_width": 0,
                                              "spacing_color": "white"},
             links={"image1": ("decode_base", 0), "image2": ("decode_iad", 0)}, title="A | B"),
        Node("stitch_abc", "ImageStitch", C5, {"direction": "right", "match_image_size": True, "spacing_width": 0,
                                               "spacing_color": "white"},
             links={"image1": ("stitch_ab", 0), "image2": ("decode_raw", 0)}, title="A | B | C"),
        save_node("save", C6, ("stitch_abc", 0), "iad/ab_side_by_side", title="Side by side: A plain | B IaD | C IaD, no decoupling"),
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


def wan22_a14b_multi_reference() -> Workflow:
    """Wan 2.2 A14B: a high-noise expert for the early steps and a low-noise expert for the late
    ones. IaD goes on the low-noise expert only: late-step injection by construction."""
    adapter = IAD_WAN21_14B
    readme = readme_text(
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
    photos, images = photo_nodes(C1, ["iad_reference_1.png", "iad_reference_2.png"], C2)
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
        *prompt_nodes(C2, "an elderly woman with silver hair smiles warmly, then laughs and claps her hands, "
                      "in a cozy kitchen with morning light, slow camera push-in"),
        *face_and_identity(C3, C4, images, adapter, decoupling="training-free", strength=0.8),
        apply_node("apply", C4, ("shift", 0), weight=1.0, title="IaD Apply (low-noise expert, last quarter)"),
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
        save_node("save", C6, ("decode", 0), "iad/wan2.2_A14B_identity", title="Identity video"),
    ]
    groups = [
        Group("Wan 2.2 T2V A14B (two experts)", ["unet_high", "shift_high", "unet", "shift", "clip", "vae"]),
        Group("Identity from several photos (IaD)", ["face_loader", "face_embed", "iad_loader", "identity"], "#335"),
    ]
    return Workflow("wan2.2_t2v_A14B_iad_multi_reference", nodes, groups)
