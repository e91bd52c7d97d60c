"""What `make demo` needs to show a recognisable person doing what the prompt says.

``demo_models()`` maps ComfyUI model folders to the shipped world files (the shape
``tests/harness/comfy_server.ComfyServer(models=...)`` takes: ``{folder: {name: path}}``; the face
pack is a folder, linked as ``models/insightface/models/synthworld``). ``demo_prompt()`` is the API
prompt (POST /prompt) of a native graph:

    IaD Synthetic-World Person (a held-out person, smiling photo)
        -> IaD Face Analysis Loader (synthworld pack) -> IaD Face Embed -> IaD Identity
    Load Diffusion Model (tiny world Wan) -> ModelSamplingSD3 (shift 3) -> IaD Apply (IaD adapter)
        -> KSampler (euler/simple)
    IaD Synthetic-World Text Encode (the prompt, and "" for the negative)
    EmptyHunyuanLatentVideo 64x64x33 (= 8x8x9 latent, the world's 9 frames)
    -> IaD Synthetic-World Decode (the exact codec the experiment judges) -> SaveImage (the 9 frames)
    -> VAE Decode (Load VAE: the world's Wan 2.1 VAE; 33 frames of 64x64) [-> Upscale Image By]
       -> SaveAnimatedWEBP (the video, 32 fps: the world's 8 fps, 4 video frames each)
"""

from __future__ import annotations

from pathlib import Path

from . import assets, build, diffusion

DEMO_TEXT = "a person frowns at the beach"
VIDEO_FPS = 32.0
VIDEO_NODE = "17"


def demo_models(folder: Path = assets.WORLD_DIR) -> dict[str, dict[str, Path]]:
    files = assets.world_files(folder)
    return {
        "diffusion_models": {build.WAN_FILE: files["diffusion_models"]},
        "vae": {build.VAE_FILE: files["vae"]},
        "iad": {build.ADAPTER_FILES[k]: files[key] for k, key in (("naive", "iad_naive"), ("iad", "iad"),
                                                                  ("naive_tf", "iad_naive_tf"))},
        "insightface/models": {build.PACK_NAME: files["insightface_pack"]},
    }


def demo_prompt(text: str = DEMO_TEXT, person: int = 3, expression: str = "smile", adapter: str = "iad",
                seed: int = 0, steps: int = 12, cfg: float = 3.0, filename_prefix: str = "iad_synthworld_demo",
                scale: int = 4, video_scale: int = 2) -> tuple[dict, str]:
    """(API prompt, id of the SaveImage node of the frames; ``VIDEO_NODE`` saves the video).
    ``adapter``: "iad", "naive" or "naive_tf"; ``scale``: nearest-neighbour upscale of the 32x32
    photo and frames; ``video_scale``: of the VAE's 64x64 video (1: none)."""
    def node(class_type, **inputs):
        return {"class_type": class_type, "inputs": inputs}

    p = {
        "1": node("UNETLoader", unet_name=build.WAN_FILE, weight_dtype="default"),
        "2": node("IaDSynthWorldPerson", person=person, expression=expression, scale=scale),
        "3": node("IaDFaceAnalysisLoader", model_pack=build.PACK_NAME, provider="auto", det_size=160),
        "4": node("IaDFaceEmbed", face_analysis=["3", 0], images=["2", 0], policy="largest", face_index=0, min_score=0.5,
                  same_person_threshold=0.3),
        "5": node("IaDModelLoader", adapter_name=build.ADAPTER_FILES[adapter]),
        "6": node("IaDIdentity", iad_model=["5", 0], face_embeds=["4", 0], decoupling="auto", strength=1.0),
        # the world's adapters were trained with the identity active at every step
        "7": node("IaDApply", model=["14", 0], iad_model=["5", 0], identity=["6", 0], weight=1.0, start_percent=0.0,
                  end_percent=1.0, uncond_identity="none"),
        "8": node("IaDSynthWorldTextEncode", text=text),
        "9": node("IaDSynthWorldTextEncode", text=""),
        "10": node("EmptyHunyuanLatentVideo", width=64, height=64, length=33, batch_size=1),
        "11": node("KSampler", model=["7", 0], positive=["8", 0], negative=["9", 0], latent_image=["10", 0], seed=seed,
                   steps=steps, cfg=cfg, sampler_name="euler", scheduler="simple", denoise=1.0),
        # the world's 9 frames, exactly as the experiment decodes them
        "12": node("IaDSynthWorldDecode", samples=["11", 0], scale=scale),
        "13": node("SaveImage", images=["12", 0], filename_prefix=filename_prefix),
        # the world's model is trained with flow shift 3 (synthworld.diffusion.SHIFT), not Wan's default 8
        "14": node("ModelSamplingSD3", model=["1", 0], shift=diffusion.SHIFT),
        # the same latent as a video through the native VAE path (the world's Wan 2.1 VAE)
        "15": node("VAELoader", vae_name=build.VAE_FILE),
        "18": node("VAEDecode", samples=["11", 0], vae=["15", 0]),
    }
    if video_scale > 1:
        p["16"] = node("ImageScaleBy", image=["18", 0], upscale_method="nearest-exact", scale_by=float(video_scale))
    p[VIDEO_NODE] = node("SaveAnimatedWEBP", images=["16", 0] if video_scale > 1 else ["18", 0],
                         filename_prefix=f"{filename_prefix}_video", fps=VIDEO_FPS, lossless=True, quality=100, method="default")
    return p, "13"
