"""Long videos in ComfyUI's own context windows: the official Wan 2.2 14B text-to-video and LTX-2
templates (the templates package ComfyUI v0.28.2 pins), made long with the template's own length
widget, with IaD Apply on the template's model(s) and core's context-windows node after it on the
way to everything the model fed (``TemplateWorkflow.chain``).

Core runs the model once per window and fuses the windows' outputs; IaD's patches run inside each
call with the same identity tokens and the same K/V, and the step range is resolved against the
sampled model in every window. The node order (IaD Apply before or after the windows node) gives the
same video bit for bit (tests/test_long_video_server.py).
"""

from __future__ import annotations

from .model import Group, ModelFile, Node, TemplateWorkflow, download_list, note
from .parts import (ANTELOPEV2_HELP, ADAPTER_HELP, LYNX_FACE_HELP, C0, C1, C2, C3, C4, C6, IRSE50, LYNX_FULL, PHOTO_HELP, WAN22_REPO,
                    WAN22_T2V_HIGH, WAN22_T2V_LOW, apply_node, face_and_identity, photo_nodes)
from .templates import GEMMA3_FP4, IAD_LTX2, LTX2_19B_FP8, LTX2_CAMERA_LORA, LTX2_DISTILLED_LORA, LTX2_UPSCALER
from .wan_variants import LYNX_NOTE, UMT5_FP8, WAN_VAE

WAN22_LIGHTX2V_HIGH = ModelFile("wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors", "loras",
                                f"{WAN22_REPO}/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors")
WAN22_LIGHTX2V_LOW = ModelFile("wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors", "loras",
                               f"{WAN22_REPO}/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors")

# Wan 2.2: the template's 'Float (Duration)' in seconds at its 16 fps -> floor(16 * 15) + 1 = 241 frames.
WAN_SECONDS, WAN_FPS = 15.0, 16
WAN_FRAMES = int(WAN_FPS * WAN_SECONDS) + 1
WAN_WINDOW, WAN_OVERLAP = 81, 30       # frames: Wan 2.2's own clip length (5 s), and WanContextWindowsManual's default overlap
# LTX-2: the template's 'Length' (121 frames, 5 s at 24 fps) -> 481 frames, 20 s; windows of 145 frames (6 s), overlap 40.
LTX2_FRAMES, LTX2_FPS = 481, 24
LTX2_WINDOW, LTX2_OVERLAP = 145, 40

WINDOWS_COMMON = {"context_schedule": "standard_uniform", "fuse_method": "pyramid", "freenoise": True}


def _windows_node(node_type: str, window: int, overlap: int, title: str) -> Node:
    return Node("windows", node_type, C4, {"context_length": window, "context_overlap": overlap, **WINDOWS_COMMON},
                title=title, size=(360, 250), color="#233", bgcolor="#355")


def _readme(title: str, body: str, files: list[ModelFile], adapter_note: str, face_help: str = ANTELOPEV2_HELP) -> str:
    return f"""
{title}

{body.strip()}

Model files (the 'Missing Models' dialog offers the same download links)
{download_list(files)}

{adapter_note}

{face_help}

{PHOTO_HELP}
"""


WINDOWS_TIPS = """
Long video: context windows
- {frames} frames ({seconds:g} s at {fps} fps): the template's '{length}' set from {was}.
- {node} (core, after IaD Apply on {models}): the model sees {window}-frame
  windows overlapping by {overlap} frames, one after the other at every step, and core fuses
  them (pyramid weights): the model's memory per call is that of one window. Schedule
  standard_uniform (the windows
  shift from step to step, so no seam stays in place), FreeNoise on (overlapping windows start from
  related noise). Core's defaults for this node.
- Every window gets the same identity: IaD Apply's tokens and K/V are made once per run and reused
  in every window; start_percent counts in the whole schedule in every window.
- IaD Apply before or after the windows node makes the same video. To make the video shorter or
  longer, change '{length}'; a video no longer than one window is sampled in one pass.

IaD settings
- IaD Apply weight 1.0, start_percent 0.75: identity only in the last quarter of the denoising
  (the early steps fix layout, motion and expression from the prompt). Earlier = stronger identity,
  more copying of the photo.
- IaD Identity decoupling 'auto': removes the photo's expression and pose from the identity.
{extra}"""


def wan22_14b_t2v_long() -> TemplateWorkflow:
    files = [WAN22_T2V_HIGH, WAN22_T2V_LOW, WAN22_LIGHTX2V_HIGH, WAN22_LIGHTX2V_LOW, UMT5_FP8, WAN_VAE, IRSE50]
    readme = _readme(
        f"IaD identity video, LONG - Wan 2.2 14B text-to-video, {WAN_FRAMES} frames ({WAN_SECONDS:g} s at {WAN_FPS} fps) "
        "in context windows: ComfyUI's own template (video_wan2_2_14B_t2v) + the identity of the person in "
        "'Reference photo'.",
        f"""
Above: ComfyUI's own Wan 2.2 14B text-to-video template (two experts: high noise, then low noise),
unchanged except that its subgraph is unpacked, its 'Float (Duration)' is {WAN_SECONDS:g} s instead of 5 s
({WAN_FRAMES} frames instead of 81), and each expert's model goes through IaD Apply and then 'Wan
Context Windows' before the template's Lightning LoRA switch and shift. Wan 2.2 makes 81-frame
(5 s) clips; the windows node samples the long video in overlapping 81-frame windows.

Steps
1. Download the files below (the Lightning LoRAs only matter with 'Enable Lightning LoRA' on).
2. Load the person's photo in 'Reference photo'.
3. Write what the person does in the prompt (the template's positive prompt); Run (Ctrl+Enter).
""", files + [LYNX_FULL], LYNX_NOTE, LYNX_FACE_HELP)
    extra = ("- uncond_identity 'null identity (Lynx)': the negative pass gets Lynx's null tokens (cfg 3.5).\n"
             "- Both experts get IaD Apply; with start_percent 0.75 of the whole schedule only the low-noise\n"
             "  expert (steps 10-20 of 20) reaches it: steps 15-20. Below 0.5 the high-noise expert gets it too.\n")
    tips = WINDOWS_TIPS.format(frames=WAN_FRAMES, seconds=WAN_SECONDS, fps=WAN_FPS, length="Float (Duration)",
                               was="5 to 15 s", node="Wan Context Windows", models="both experts",
                               window=WAN_WINDOW, overlap=WAN_OVERLAP, extra=extra)
    photos, images = photo_nodes(C1, ["iad_reference_1.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(480, 1300), title="Read me: IaD on the official template, long video"),
        *photos,
        *face_and_identity(C2, C3, images, LYNX_FULL, decoupling="auto", strength=1.0, irse50=True),
        apply_node("apply", C4, ("@anchor", "MODEL"), weight=1.0, uncond="null identity (Lynx)",
                   title="IaD Apply (on the template's model)"),
        _windows_node("WanContextWindowsManual", WAN_WINDOW, WAN_OVERLAP,
                      f"Wan Context Windows ({WAN_WINDOW}-frame windows, overlap {WAN_OVERLAP})"),
        note("tips", tips, C6, size=(520, 560), title="Long video and IaD settings"),
    ]
    return TemplateWorkflow(
        "wan2.2_14B_t2v_long_context_windows_lynx_iad", nodes,
        [Group("Identity (IaD)", ["photo1", "face_loader", "irse50", "face_embed", "iad_loader", "identity", "apply"], "#335")],
        template="video_wan2_2_14B_t2v.json",
        anchor={"type": "UNETLoader", "widget": ["unet_name", [WAN22_T2V_HIGH.name, WAN22_T2V_LOW.name]], "output": "MODEL"},
        requires="Wan 2.2 14B T2V (ComfyUI v0.28: the template's switch and math nodes)",
        chain=("windows",), settings=((("PrimitiveFloat", "Float (Duration)"), {"value": WAN_SECONDS}),))


def ltx2_t2v_long() -> TemplateWorkflow:
    files = [LTX2_19B_FP8, GEMMA3_FP4, LTX2_DISTILLED_LORA, LTX2_CAMERA_LORA, LTX2_UPSCALER]
    readme = _readme(
        f"IaD identity video, LONG - LTX-2 19B text-to-video with audio, {LTX2_FRAMES} frames ({LTX2_FRAMES // LTX2_FPS} s "
        f"at {LTX2_FPS} fps) in context windows: ComfyUI's official template (video_ltx2_t2v) + IaD, one reference photo.",
        f"""
Above: ComfyUI's own LTX-2 text-to-video template, unchanged except that its subgraph is unpacked,
its 'Length' is {LTX2_FRAMES} frames instead of 121, and its model goes through IaD Apply and then
'LTXV Context Windows' before the LoRAs and both sampling stages. The windows node samples video
and sound in overlapping windows ({LTX2_WINDOW} video frames; the audio in the matching stretch).
IaD adds the identity to the VIDEO stream's text cross-attention only; the audio stream is never
patched.

Needs ComfyUI with LTX-2 and LTXV Context Windows (v0.28 or newer).

Steps
1. Download the files below (the LTX-2 checkpoint goes to models/checkpoints/: model, VAEs and the
   text projection in one file).
2. Load your photo in 'Reference photo'.
3. Write what the person does (and says) in the prompt (CLIP Text Encode, top); Run (Ctrl+Enter).
""", files + [IAD_LTX2], ADAPTER_HELP + "\nThe IaD adapter must be made for LTX-2 (video width 4096).")
    tips = WINDOWS_TIPS.format(frames=LTX2_FRAMES, seconds=LTX2_FRAMES // LTX2_FPS, fps=LTX2_FPS, length="Length",
                               was="121 to 481 frames", node="LTXV Context Windows", models="the model",
                               window=LTX2_WINDOW, overlap=LTX2_OVERLAP,
                               extra="- Both stages (half size, then the upscaled one) sample in windows with the identity.\n")
    photos, images = photo_nodes(C1, ["iad_reference_1.png"], C2)
    nodes = [
        note("readme", readme, (C0, 0), size=(480, 1300), title="Read me: IaD on the official template, long video"),
        *photos,
        *face_and_identity(C2, C3, images, IAD_LTX2, decoupling="auto", strength=1.0),
        apply_node("apply", C4, ("@anchor", "MODEL"), weight=1.0, title="IaD Apply (feeds the context windows)"),
        _windows_node("LTXVContextWindows", LTX2_WINDOW, LTX2_OVERLAP,
                      f"LTXV Context Windows ({LTX2_WINDOW}-frame windows, overlap {LTX2_OVERLAP})"),
        note("tips", tips, C6, size=(520, 520), title="Long video and IaD settings"),
    ]
    return TemplateWorkflow(
        "ltx2_19b_t2v_long_context_windows_iad", nodes,
        [Group("Identity (IaD)", ["photo1", "face_loader", "face_embed", "iad_loader", "identity", "apply"], "#335")],
        template="video_ltx2_t2v.json",
        anchor={"type": "CheckpointLoaderSimple", "widget": ["ckpt_name", LTX2_19B_FP8.name], "output": "MODEL"},
        requires="LTX-2 and LTXVContextWindows (ComfyUI v0.28 or newer)",
        chain=("windows",), settings=((("PrimitiveInt", "Length"), {"value": LTX2_FRAMES}),))


def long_video_workflows() -> list[TemplateWorkflow]:
    return [wan22_14b_t2v_long(), ltx2_t2v_long()]
