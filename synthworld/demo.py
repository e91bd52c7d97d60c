"""What `make demo` needs to show a recognisable person doing what the prompt says.

``demo_models()`` maps ComfyUI model folders to the shipped world files (the shape
``tests/harness/comfy_server.ComfyServer(models=...)`` takes: ``{folder: {name: path}}``; the face
pack is a folder, linked as ``models/insightface/models/synthworld``). ``demo_prompt()`` is the API
prompt (POST /prompt) of a native graph that shows the claim: one person's photos (``DEMO_PHOTOS``:
smiling, head turned) and the prompt "a person frowns at the beach", through naive injection and
through IaD, side by side:

    for each photo: IaD Synthetic-World Person (a held-out person) -> IaD Face Embed (IaD Face
        Analysis Loader: the synthworld pack)
    Load Diffusion Model (tiny world Wan) -> ModelSamplingSD3 (shift 3)
    for naive injection and for IaD: [LoraLoaderModelOnly: the base delta trained with the adapter,
        where the world has one] and IaD Model Loader; then per photo (the same seed):
        IaD Identity -> IaD Apply -> KSampler (euler/simple)
        -> IaD Synthetic-World Decode (the exact codec the experiment judges; layout strip)
        -> VAE Decode (Load VAE: the world's Wan 2.1 VAE; 33 frames of 64x64) [-> Upscale Image By]
    Stitch Images -> SaveImage: one PNG strip (per photo a naive row, then an IaD row: the photo, then the 9 frames)
    Stitch Images -> SaveAnimatedWEBP: one video, per photo a row [photo | naive | IaD], 32 fps (the world's
        8 fps, 4 video frames each)
    IaD's 9 frames of the first photo also -> SaveImage (one PNG per frame)
"""

from __future__ import annotations

from pathlib import Path

from . import assets, build, diffusion

DEMO_TEXT = "a person frowns at the beach"
VIDEO_FPS = 32.0
VIDEO_NODE = "17"           # SaveAnimatedWEBP: per photo a row [photo | naive injection's video | IaD's video]
STRIP_NODE = "19"           # SaveImage: one PNG, per photo a naive row and an IaD row, each the photo then the 9 frames
DEMO_SYSTEMS = {"naive": "6", "iad": "7"}     # adapter -> the first digit of its nodes' ids
# The person's two reference photos: the smile the prompt contradicts, and a head turn (what the
# world's recognizer leaks most, and what naive injection copies most: docs/results.md)
DEMO_PHOTOS = ("smile", "turn_left")


def demo_models(folder: Path = assets.WORLD_DIR) -> dict[str, dict[str, Path]]:
    files = assets.world_files(folder)
    return {
        "diffusion_models": {build.WAN_FILE: files["diffusion_models"]},
        "vae": {build.VAE_FILE: files["vae"]},
        "iad": {build.ADAPTER_FILES[k]: files[key] for k, key in (("naive", "iad_naive"), ("iad", "iad"),
                                                                  ("naive_tf", "iad_naive_tf"))},
        "insightface/models": {build.PACK_NAME: files["insightface_pack"]},
        # the base's change trained jointly with each adapter (where the world has one)
        "loras": {path.name: path for path in (build.base_delta_path(folder, k) for k in build.BASE_DELTA_FILES) if path},
    }


def demo_prompt(text: str = DEMO_TEXT, person: int = 3, expressions: tuple[str, ...] = DEMO_PHOTOS, seed: int = 0,
                steps: int = 12, cfg: float = 3.0, filename_prefix: str = "iad_synthworld_demo", scale: int = 4,
                video_scale: int = 2, folder: Path = assets.WORLD_DIR) -> tuple[dict, str]:
    """(API prompt, id of the SaveImage node of IaD's frames for the first photo). One graph runs
    naive injection and IaD from the same prompt and seed, once per reference photo of one person
    (``expressions``: what each photo shows), and saves them side by side: ``STRIP_NODE`` one PNG
    (per photo a naive row, then an IaD row; each the photo, then the 9 frames), ``VIDEO_NODE`` one
    video (per photo a row: the photo, naive, IaD). ``scale``: nearest-neighbour upscale of the 32x32
    photo and frames; ``video_scale``: of the VAE's 64x64 videos (1: none). Where the world's
    adapters trained the base with them (``build.BASE_DELTA_FILES``), each branch applies its
    adapter's base delta with ComfyUI's LoraLoaderModelOnly before IaD Apply."""
    def node(class_type, **inputs):
        return {"class_type": class_type, "inputs": inputs}

    p = {
        "1": node("UNETLoader", unet_name=build.WAN_FILE, weight_dtype="default"),
        "3": node("IaDFaceAnalysisLoader", model_pack=build.PACK_NAME, provider="auto", det_size=160),
        "8": node("IaDSynthWorldTextEncode", text=text),
        "9": node("IaDSynthWorldTextEncode", text=""),
        "10": node("EmptyHunyuanLatentVideo", width=64, height=64, length=33, batch_size=1),
        # the world's model is trained with flow shift 3 (synthworld.diffusion.SHIFT), not Wan's default 8
        "14": node("ModelSamplingSD3", model=["1", 0], shift=diffusion.SHIFT),
        # the latents as videos through the native VAE path (the world's Wan 2.1 VAE)
        "15": node("VAELoader", vae_name=build.VAE_FILE),
    }
    models = {}
    for system, first in DEMO_SYSTEMS.items():      # each adapter (and its base delta) is loaded once
        model = ["14", 0]
        delta = build.base_delta_path(folder, system)
        if delta is not None:
            p[f"{first}97"] = node("LoraLoaderModelOnly", model=model, lora_name=delta.name, strength_model=1.0)
            model = [f"{first}97", 0]
        p[f"{first}90"] = node("IaDModelLoader", adapter_name=build.ADAPTER_FILES[system])
        models[system] = (model, [f"{first}90", 0])
    strip_rows, video_rows, first_frames = [], [], None
    for j, expression in enumerate(expressions):
        photo, embeds = ("2", "4") if j == 0 else (f"5{j}2", f"5{j}4")
        p[photo] = node("IaDSynthWorldPerson", person=person, expression=expression, scale=scale)
        p[embeds] = node("IaDFaceEmbed", face_analysis=["3", 0], images=[photo, 0], policy="largest", face_index=0,
                         min_score=0.5, same_person_threshold=0.3)
        videos = {}
        for system, first in DEMO_SYSTEMS.items():
            b = f"{first}{j}"                # this photo's branch: node ids b1..b6, b8
            model, iad_model = models[system]
            p[f"{b}1"] = node("IaDIdentity", iad_model=iad_model, face_embeds=[embeds, 0], decoupling="auto", strength=1.0)
            # the world's adapters were trained with the identity active at every step
            p[f"{b}2"] = node("IaDApply", model=model, iad_model=iad_model, identity=[f"{b}1", 0], weight=1.0,
                              start_percent=0.0, end_percent=1.0, uncond_identity="none")
            p[f"{b}3"] = node("KSampler", model=[f"{b}2", 0], positive=["8", 0], negative=["9", 0],
                              latent_image=["10", 0], seed=seed, steps=steps, cfg=cfg, sampler_name="euler",
                              scheduler="simple", denoise=1.0)
            # the world's 9 frames, exactly as the experiment decodes them, side by side after the photo
            p[f"{b}4"] = node("IaDSynthWorldDecode", samples=[f"{b}3", 0], scale=scale, layout="strip")
            strip_rows.append(_stitch(p, f"{b}8", [f"{b}4", 0], [photo, 0], "left"))
            p[f"{b}5"] = node("VAEDecode", samples=[f"{b}3", 0], vae=["15", 0])
            videos[system] = [f"{b}5", 0]
            if video_scale > 1:
                p[f"{b}6"] = node("ImageScaleBy", image=[f"{b}5", 0], upscale_method="nearest-exact",
                                  scale_by=float(video_scale))
                videos[system] = [f"{b}6", 0]
            if j == 0 and system == "iad":
                first_frames = [f"{b}3", 0]
        # the video row: [photo | naive | IaD]; the photo is resized to the video's height, repeated on every frame
        left = _stitch(p, f"8{j}1", videos["naive"], [photo, 0], "left")
        video_rows.append(_stitch(p, f"8{j}2", left, videos["iad"], "right", spacing=4))
    p["12"] = node("IaDSynthWorldDecode", samples=first_frames, scale=scale, layout="frames")
    p["13"] = node("SaveImage", images=["12", 0], filename_prefix=filename_prefix)
    p[STRIP_NODE] = node("SaveImage", images=_stack(p, "85", strip_rows), filename_prefix=f"{filename_prefix}_naive_vs_iad")
    p[VIDEO_NODE] = node("SaveAnimatedWEBP", images=_stack(p, "86", video_rows),
                         filename_prefix=f"{filename_prefix}_naive_vs_iad_video", fps=VIDEO_FPS, lossless=True,
                         quality=100, method="default")
    return p, "13"


def _stack(p: dict, prefix: str, rows: list[list]) -> list:
    """Rows one under the other, 4 px apart (Stitch Images, direction down)."""
    out = rows[0]
    for k, row in enumerate(rows[1:]):
        out = _stitch(p, f"{prefix}{k}", out, row, "down", spacing=4)
    return out


def _stitch(p: dict, node_id: str, image1: list, image2: list, direction: str, spacing: int = 0) -> list:
    """ComfyUI's own Stitch Images: ``image2`` on the ``direction`` side of ``image1``, resized to its
    height (or width); a single image is repeated across a video's frames."""
    p[node_id] = {"class_type": "ImageStitch", "inputs": {"image1": image1, "image2": image2, "direction": direction,
                                                          "match_image_size": True, "spacing_width": spacing,
                                                          "spacing_color": "white"}}
    return [node_id, 0]
