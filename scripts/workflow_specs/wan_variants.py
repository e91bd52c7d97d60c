"""The Wan variants where people put a person, each from ComfyUI's own template: Animate, S2V, HuMo,
InfiniteTalk, SCAIL-2, VACE reference-to-video, Dancer and the causal model. Each is the template as
shipped (subgraphs holding the model unpacked), with the identity nodes below it and an IaD Apply on
every loader of its model. The 14B variants get Lynx full's ID adapter (the identity adapter you can
download for Wan 14B) with IaD's decoupling in front; the 1.3B causal model an IaD adapter of its width.

Each template's model files are listed here (names, folders and URLs as the template's own metadata
gives them), so every workflow's Read-me note names every file it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import HF, Group, ModelFile, Node, TemplateWorkflow, download_list, note
from .parts import (ANTELOPEV2_HELP, C0, C1, C2, C3, C4, IAD_WAN21_1_3B, IRSE50, LYNX_FACE_HELP, LYNX_FULL, PHOTO_HELP,
                    apply_node, face_and_identity, photo_nodes)

WAN21 = f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
WAN22 = f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
KIJAI = f"{HF}/Kijai/WanVideo_comfy/resolve/main"


def _file(name: str, folder: str, url: str) -> ModelFile:
    return ModelFile(name, folder, url)


UMT5_FP8 = _file("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders",
                 f"{WAN21}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors")
UMT5_FP16 = _file("umt5_xxl_fp16.safetensors", "text_encoders", f"{WAN21}/text_encoders/umt5_xxl_fp16.safetensors")
WAN_VAE = _file("wan_2.1_vae.safetensors", "vae", f"{WAN22}/vae/wan_2.1_vae.safetensors")
WAN_VAE_BF16 = _file("Wan2_1_VAE_bf16.safetensors", "vae", f"{KIJAI}/Wan2_1_VAE_bf16.safetensors")
CLIP_VISION_H = _file("clip_vision_h.safetensors", "clip_vision", f"{WAN21}/clip_vision/clip_vision_h.safetensors")
LIGHTX2V_I2V = _file("lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", "loras",
                     f"{KIJAI}/Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors")

LYNX_FILES = [IRSE50]
LYNX_NOTE = """\
Identity adapter: Lynx full's ID adapter (bytedance/lynx, Apache-2.0), the identity adapter you can
download for Wan 14B: put the folder lynx_full from https://huggingface.co/ByteDance/lynx so that you have
  models/iad/lynx_full/resampler.safetensors and models/iad/lynx_full/ip_layers.safetensors
It reads facexlib's IR-SE50 face embedding (the IaD IR-SE50 Face Embedder node). An IaD adapter trained
for Wan 14B (width 5120) works the same: pick it in IaD Model Loader and remove the IR-SE50 node."""


@dataclass(frozen=True)
class Variant:
    name: str                  # the workflow's file name
    template: str              # ComfyUI's template it is built from
    title: str
    model: tuple[str, ...]     # the template's diffusion-model file(s): IaD Apply on every active loader of them
    files: tuple[ModelFile, ...]
    photo: str                 # the template's own reference photo (IaD reads the face in it by default)
    what: str                  # what the template does, and what drives the motion and expression
    start: float = 0.5         # IaD Apply's start_percent (few-step templates: the last half of the steps)
    lynx: bool = True
    remove: tuple[int, ...] = ()
    replace: tuple = ()        # (template node id, spec node key, output) for removed nodes
    extra_nodes: tuple = ()    # spec nodes that replace removed template nodes
    caveat: str = ""


def _readme(v: Variant, adapter_note: str) -> str:
    files = list(v.files) + (LYNX_FILES if v.lynx else [IAD_WAN21_1_3B])
    return f"""
IaD identity - {v.title}: ComfyUI's own template ({v.template}) + the identity of the person in
'Face photo'.

{v.what.strip()}

IaD adds that person's identity to the video's tokens only (the reference, pose, audio and motion
streams reach the model unchanged) and decouples it from the photo's expression and pose, so the
driving signal, not the photo, decides them (docs/patching.md, "Wan variants").
{v.caveat}
Steps
1. Download the files below (the template's own, plus the identity adapter).
2. Load the person's photo in 'Face photo' (by default the template's own reference image).
3. Run (Ctrl+Enter).

Model files (the 'Missing Models' dialog offers the same download links)
{download_list(files)}

{adapter_note}

{LYNX_FACE_HELP if v.lynx else ANTELOPEV2_HELP}
({"buffalo_l finds and aligns the face; IR-SE50 embeds it for Lynx" if v.lynx else "antelopev2 finds and aligns the face"}.)

{PHOTO_HELP}
"""


TIPS = """
IaD settings
- IaD Apply weight 1.0; start_percent {start}: the identity acts in the last {share} of the
  denoising. This template samples in a few distilled steps, so the last quarter would be a single
  step: {start} gives the identity the last half. Raise it if the video copies the photo's
  expression; lower it (or raise the weight) if the likeness is weak.
- IaD Identity decoupling 'auto' (training-free for Lynx): removes the photo's expression and pose
  from the identity. Several photos of the person (batched) make the split cleaner.
- uncond_identity 'null identity (Lynx)': only matters with cfg above 1.
- IaD Apply leaves the template's reference, pose, audio and motion streams untouched.
"""


def _identity_nodes(v: Variant) -> list[Node]:
    adapter = LYNX_FULL if v.lynx else IAD_WAN21_1_3B
    adapter_note = LYNX_NOTE if v.lynx else (
        "Identity adapter: an IaD adapter for Wan 2.1 1.3B (width 1536): put it in models/iad/. There is no public\n"
        "download: train one with `python -m iad.train` (docs/training.md).")
    photos, images = photo_nodes(C1, [v.photo], C2)
    photos[0].title = "Face photo (the person whose identity the video gets)"
    share = "half" if v.start == 0.5 else f"{round(100 * (1 - v.start))} %"
    return [
        note("readme", _readme(v, adapter_note), (C0, 0), size=(480, 1300), title="Read me: IaD on the official template"),
        *photos,
        *face_and_identity(C2, C3, images, adapter, decoupling="auto", strength=1.0, irse50=v.lynx),
        apply_node("apply", C4, ("@anchor", "MODEL"), weight=1.0, start=v.start,
                   uncond="null identity (Lynx)" if v.lynx else "none",
                   title="IaD Apply (on the template's model, video tokens only)"),
        note("tips", TIPS.format(start=v.start, share=share), C4, size=(440, 300), title="IaD settings"),
        *v.extra_nodes,
    ]


def _workflow(v: Variant) -> TemplateWorkflow:
    members = ["photo1", "face_loader", *(["irse50"] if v.lynx else []), "face_embed", "iad_loader", "identity", "apply"]
    return TemplateWorkflow(
        v.name, _identity_nodes(v), [Group("Identity (IaD)", members, "#335")], template=v.template,
        anchor={"type": "UNETLoader", "widget": ["unet_name", list(v.model)], "output": "MODEL"},
        requires=v.title, remove=v.remove, replace={i: (key, out) for i, key, out in v.replace})


# -- the templates ---------------------------------------------------------------------------------
ANIMATE_14B = _file("Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", "diffusion_models",
                    f"{HF}/Kijai/WanVideo_comfy_fp8_scaled/resolve/main/Wan22Animate/Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors")
ANIMATE_RELIGHT = _file("WanAnimate_relight_lora_fp16.safetensors", "loras",
                        f"{KIJAI}/LoRAs/Wan22_relight/WanAnimate_relight_lora_fp16.safetensors")
# The template's pose and face extraction (controlnet_aux's DWPreprocessor) and character mask
# (segment-anything-2, KJNodes) are custom node packs; the workflow reads a pose video and a face
# video instead, and animates the reference character with the driving motion ("Move" mode).
ANIMATE_INPUTS = (
    Node("pose_video", "LoadVideo", C1, {"file": "iad_animate_pose_video.mp4"}, title="Pose video (DWPose skeletons)",
         size=(320, 340)),
    Node("pose_frames", "GetVideoComponents", C1, links={"video": ("pose_video", 0)}, title="Pose frames", size=(320, 80)),
    Node("face_video", "LoadVideo", C2, {"file": "iad_animate_face_video.mp4"}, title="Face video (the driver's face crops)",
         size=(320, 340)),
    Node("face_frames", "GetVideoComponents", C2, links={"video": ("face_video", 0)}, title="Face frames", size=(320, 80)),
)
ANIMATE_CAVEAT = """
The official template extracts the pose and face videos with controlnet_aux's DWPreprocessor and masks
the character with segment-anything-2 and KJNodes (custom node packs). Here the pose video (DWPose
skeletons of the driving video) and the face video (crops of the driver's face) are loaded directly
(two Load Video nodes below the template): make them with any tool. The template's mask nodes are left
out, so Wan Animate animates the reference character ("Move" mode); for character replacement ("Mix"),
connect a background video and a character mask to WanAnimateToVideo as the template does.
"""

S2V_14B = _file("wan2.2_s2v_14B_fp8_scaled.safetensors", "diffusion_models",
                f"{WAN22}/diffusion_models/wan2.2_s2v_14B_fp8_scaled.safetensors")
S2V_FILES = (S2V_14B, UMT5_FP8, WAN_VAE,
             _file("wav2vec2_large_english_fp16.safetensors", "audio_encoders",
                   f"{WAN22}/audio_encoders/wav2vec2_large_english_fp16.safetensors"),
             _file("wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors", "loras",
                   f"{WAN22}/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors"))
HUMO_17B = _file("humo_17B_fp8_e4m3fn.safetensors", "diffusion_models",
                 f"{HF}/Comfy-Org/HuMo_ComfyUI/resolve/main/split_files/diffusion_models/humo_17B_fp8_e4m3fn.safetensors")
WHISPER = _file("whisper_large_v3_fp16.safetensors", "audio_encoders",
                f"{HF}/Comfy-Org/HuMo_ComfyUI/resolve/main/split_files/audio_encoders/whisper_large_v3_fp16.safetensors")
I2V_14B_KJ = _file("Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors", "diffusion_models",
                   f"{HF}/Kijai/WanVideo_comfy_fp8_scaled/resolve/main/I2V/Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors")
INFINITETALK_PATCH = _file("wan2.1_infiniteTalk_multi_fp16.safetensors", "model_patches",
                           f"{WAN21}/model_patches/wan2.1_infiniteTalk_multi_fp16.safetensors")
WAV2VEC2_CHINESE = _file("wav2vec2-chinese-base_fp16.safetensors", "audio_encoders",
                         f"{HF}/Kijai/wav2vec2_safetensors/resolve/main/wav2vec2-chinese-base_fp16.safetensors")
SCAIL2_14B = _file("wan2.1_14B_SCAIL_2_fp16.safetensors", "diffusion_models",
                   f"{HF}/Comfy-Org/SCAIL-2/resolve/main/diffusion_models/wan2.1_14B_SCAIL_2_fp16.safetensors")
SCAIL2_FILES = (SCAIL2_14B, _file("wan2.1_SCAIL_2_DPO_lora_bf16.safetensors", "loras",
                                  f"{HF}/Comfy-Org/SCAIL-2/resolve/main/loras/wan2.1_SCAIL_2_DPO_lora_bf16.safetensors"),
                LIGHTX2V_I2V, UMT5_FP8, WAN_VAE_BF16, CLIP_VISION_H,
                _file("sam3.1_multiplex_fp16.safetensors", "checkpoints",
                      f"{HF}/Comfy-Org/sam3.1/resolve/main/checkpoints/sam3.1_multiplex_fp16.safetensors"))
VACE_14B = _file("wan2.1_vace_14B_fp16.safetensors", "diffusion_models", f"{WAN21}/diffusion_models/wan2.1_vace_14B_fp16.safetensors")
VACE_FILES = (VACE_14B, _file("Wan21_CausVid_14B_T2V_lora_rank32.safetensors", "loras",
                              f"{KIJAI}/Wan21_CausVid_14B_T2V_lora_rank32.safetensors"),
              UMT5_FP16, WAN_VAE,
              _file("wan2.1_vace_1.3B_fp16.safetensors", "diffusion_models",
                    f"{WAN21}/diffusion_models/wan2.1_vace_1.3B_fp16.safetensors"),
              _file("Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors", "loras",
                    f"{KIJAI}/Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors"), UMT5_FP8)
DANCER_GLOBAL = _file("wan2.2_dancer_14b_global_fp8_scaled.safetensors", "diffusion_models",
                      f"{HF}/Comfy-Org/Wan-Dancer/resolve/main/diffusion_models/wan2.2_dancer_14b_global_fp8_scaled.safetensors")
DANCER_LOCAL = _file("wan2.2_dancer_14b_local_fp8_scaled.safetensors", "diffusion_models",
                     f"{HF}/Comfy-Org/Wan-Dancer/resolve/main/diffusion_models/wan2.2_dancer_14b_local_fp8_scaled.safetensors")
CAUSAL_1_3B = _file("causal_forcing-framewise.safetensors", "diffusion_models",
                    f"{HF}/TalmajM/causal_forcing_framewise_ComfyUI_repackaged/resolve/main/split_files/diffusion_models/"
                    "causal_forcing-framewise.safetensors")

VARIANTS = [
    Variant("wan2.2_14B_animate_lynx_iad", "video_wan2_2_14B_animate.json", "Wan 2.2 Animate 14B (character animation)",
            (ANIMATE_14B.name,), (ANIMATE_14B, ANIMATE_RELIGHT, LIGHTX2V_I2V, UMT5_FP8, WAN_VAE, CLIP_VISION_H),
            "video_wan2_2_14B_animate_reference_image.png",
            "Wan Animate moves the reference character with the driving video's pose and face motion (6\n"
            "distilled steps, cfg 1).",
            remove=(158, 100, 101, 108, 229, 107, 274, 275, 276, 124, 127, 212),
            replace=((100, "face_frames", "images"), (101, "pose_frames", "images")), extra_nodes=ANIMATE_INPUTS,
            caveat=ANIMATE_CAVEAT),
    Variant("wan2.2_14B_s2v_lynx_iad", "video_wan2_2_14B_s2v.json", "Wan 2.2 S2V 14B (speech to video)", (S2V_14B.name,),
            S2V_FILES, "video_wan2_2_14B_s2v_reference_image.jpg",
            "Wan 2.2 S2V makes the person in the reference image speak (or sing) the audio, in chunks of 77\n"
            "frames extended one after the other (4 distilled steps, cfg 1)."),
    Variant("wan_humo_17B_lynx_iad", "video_humo.json", "Wan HuMo 17B (audio- and image-driven human video)",
            (HUMO_17B.name,), (HUMO_17B, LIGHTX2V_I2V, UMT5_FP8, WAN_VAE, WHISPER), "video_humo_reference_image.png",
            "HuMo makes the person in the reference image act out the prompt, lip-synced to the audio (6\n"
            "distilled steps, cfg 1)."),
    Variant("wan2.1_14B_infinitetalk_lynx_iad", "video_wan2_1_infinitetalk.json", "Wan 2.1 InfiniteTalk 14B (talking video)",
            (I2V_14B_KJ.name,), (I2V_14B_KJ, INFINITETALK_PATCH, WAV2VEC2_CHINESE, LIGHTX2V_I2V, UMT5_FP8, WAN_VAE_BF16),
            "two_character_talking.png",
            "InfiniteTalk makes the people in the image talk to the audio, a base chunk and an extension (6\n"
            "distilled steps, cfg 1). Both chunks' models get the identity.",
            caveat="\nThis template animates TWO speakers; IaD gives the whole video ONE identity (the largest face in\n"
                   "'Face photo'). For one person, set WanInfiniteTalkToVideo's mode to single_speaker in both\n"
                   "chunks and load a one-person photo.\n"),
    Variant("wan2.1_14B_scail2_character_replacement_lynx_iad", "video_wan21_scail2_character_replacement.json",
            "Wan 2.1 SCAIL-2 14B (character replacement)", (SCAIL2_14B.name,), SCAIL2_FILES,
            "reference_streetwear_character.png",
            "SCAIL-2 replaces the dancer in the driving video with the reference character, following the\n"
            "driving pose (SAM 3.1 masks the people), a base chunk and an extension (6 distilled steps, cfg 1)."),
    Variant("wan2.1_14B_vace_ref2v_lynx_iad", "video_wan_vace_14B_ref2v.json", "Wan VACE 14B (reference to video)",
            (VACE_14B.name,), VACE_FILES, "video_wan_vace_14B_ref2v_reference_image.jpg",
            "VACE makes a video of the reference image's subject following the prompt (4 CausVid steps, cfg 1;\n"
            "a bypassed 1.3B branch and a first-frame control are in the template too)."),
    Variant("wan2.2_14B_dancer_lynx_iad", "video_wan_dancer.json", "Wan 2.2 Dancer 14B (dance to music)",
            (DANCER_GLOBAL.name, DANCER_LOCAL.name), (DANCER_GLOBAL, DANCER_LOCAL, LIGHTX2V_I2V, UMT5_FP16,
                                                      WAN_VAE_BF16, CLIP_VISION_H), "blue_dancer.png",
            "Wan Dancer makes the person in the image dance to the music: a global model lays out key frames,\n"
            "a local model renders the video (6 distilled steps each, cfg 1). Both models get the identity."),
    Variant("wan2.1_1.3B_causal_forcing_i2v_iad", "video_causal_forcing_i2v.json",
            "causal Wan 2.1 1.3B (Causal Forcing, frame by frame)", (CAUSAL_1_3B.name,),
            (CAUSAL_1_3B, UMT5_FP8, WAN_VAE), "girl_riding_a_wolf.png",
            "Causal Forcing streams the video frame by frame from the start image (4 steps per frame, cfg 1).",
            lynx=False,
            caveat="\nLynx is made for Wan 14B; this 1.3B model needs an IaD adapter of its width.\n"),
]


def wan_variant_workflows() -> list[TemplateWorkflow]:
    return [_workflow(v) for v in VARIANTS]
