"""IaD Evaluate Video: identity, expression-copy, motion (and CLIP-T) metrics of a generated
video, as a JSON report and a plot of the per-frame curves. The metrics live in ``iad.metrics``
and ``iad.eval``; this module only converts ComfyUI values and wires CLIP models in."""

from __future__ import annotations

import importlib

import numpy as np
import torch

from ..iad.eval.analysis import ReferenceFaces
from ..iad.eval.evaluate import SAMPLING_ALL, SAMPLING_CONSISID, evaluate_video
from ..iad.metrics.clip_score import clip_text_score
from ..iad.plotting import image_to_array, plot_report
from .comfy_api_compat import API_MODULE, io
from .validation import check_inputs, require_valid

FaceAnalysis = io.Custom("FACE_ANALYSIS")
FaceEmbeds = io.Custom("FACE_EMBEDS")

SAMPLING_CHOICES = {"all frames": SAMPLING_ALL, "ConsisID (16 uniform frames)": SAMPLING_CONSISID}
CLIP_BATCH = 16


def images_to_uint8(images: torch.Tensor, what: str) -> np.ndarray:
    """ComfyUI IMAGE ([B, H, W, C] float 0-1) -> (B, H, W, 3) uint8 RGB, with clear errors."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what}: expected an IMAGE batch, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what}: expected IMAGE frames [frames, height, width, channels], got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what}: the frames contain NaN/inf values: check the node that produced them (VAE decode)")
    images = images.detach().to("cpu", torch.float32)
    if images.shape[-1] == 1:
        images = images.expand(-1, -1, -1, 3)
    return (images[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def projected_text_embedding(clip, prompt: str) -> torch.Tensor:
    """CLIP's text embedding of ``prompt`` in the joint text-image space.

    ComfyUI's SD1 text encoders return the *unprojected* pooled output by default (others the
    projected one), so we always ask for the unprojected one and apply the encoder's own
    ``text_projection``: the one whose input width matches the pooled output."""
    tokens = clip.tokenize(prompt)
    _, pooled = clip.encode_from_tokens(tokens, return_pooled="unprojected")
    if pooled is None:
        raise ValueError("CLIP-T: this text encoder gives no pooled embedding: load a CLIP text encoder "
                         "(clip_l / clip_g) with Load CLIP")
    pooled = pooled.reshape(pooled.shape[0], -1)[0].detach().to("cpu", torch.float32)
    model = getattr(clip, "cond_stage_model", None)
    projections = [m for name, m in (model.named_modules() if model is not None else [])
                   if name.endswith("text_projection") and getattr(m, "weight", None) is not None
                   and m.weight.ndim == 2 and m.weight.shape[1] == pooled.shape[0]]
    if len(projections) != 1:
        raise ValueError(
            f"CLIP-T: cannot find the text projection of this text encoder ({type(model).__name__}, pooled width "
            f"{pooled.shape[0]}): connect a single CLIP text encoder (Load CLIP with clip_l, or clip_g) and the "
            "matching CLIP vision model")
    weight = projections[0].weight.detach().to("cpu", torch.float32)
    return pooled @ weight.T


def make_clip_scorer(clip, clip_vision):
    """CLIP-T from ComfyUI's own CLIP (text encoder) and CLIP_VISION (``image_embeds``) objects."""

    def score(frames: np.ndarray, prompt: str):
        text = projected_text_embedding(clip, prompt)
        pixels = torch.from_numpy(frames).float() / 255.0
        embeds = [clip_vision.encode_image(pixels[i:i + CLIP_BATCH])["image_embeds"].detach().to("cpu", torch.float32)
                  for i in range(0, len(pixels), CLIP_BATCH)]
        return clip_text_score(text, torch.cat(embeds),
                               text_model=type(getattr(clip, "cond_stage_model", clip)).__name__,
                               image_model=type(getattr(clip_vision, "model", clip_vision)).__name__)

    return score


def _window_check(values: dict) -> list[str]:
    """Windows only where there are windows, and an overlap smaller than a window."""
    frames, overlap = values.get("window_frames"), values.get("window_overlap")
    if frames is None or overlap is None:
        return []
    if int(frames) == 0 and int(overlap) > 0:
        return [f"IaD Evaluate Video: window_overlap is {int(overlap)} but window_frames is 0 (no windows). Set "
                "window_frames to the video frames of one window, or window_overlap to 0."]
    if int(frames) > 0 and int(overlap) >= int(frames):
        return [f"IaD Evaluate Video: window_overlap {int(overlap)} must be below window_frames {int(frames)} "
                "(neighbouring windows share fewer frames than a window has)."]
    return []


class IaDEvaluateVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDEvaluateVideo",
            display_name="IaD Evaluate Video",
            category="IaD/evaluation",
            description=(
                "Measures a generated video against the reference face: FaceSim (identity per frame, with the share "
                "of frames where a face was found), identity stability, expression copy (does the face copy the "
                "photo's expression and head pose, or follow the prompt?), motion (Farneback optical flow and a "
                "VBench-style dynamic degree), identity drift over time (first against last second, slope per "
                "second with its interval, the worst window of a video made in windows) and, when CLIP models are "
                "connected, CLIP-T. Outputs a JSON report and a plot of the per-frame curves. Definitions: "
                "docs/metrics.md."),
            is_output_node=True,
            inputs=[
                io.Image.Input("video", tooltip="The generated video frames (IMAGE batch, e.g. from VAE Decode)."),
                FaceAnalysis.Input("face_analysis", tooltip="Face detector/recognizer from IaD Face Analysis Loader; "
                                   "its recognizer is named in the report."),
                FaceEmbeds.Input("reference_embeds", optional=True,
                                 tooltip="Reference identity from IaD Face Embed (made with the same face pack). "
                                         "Give this or reference_image."),
                io.Image.Input("reference_image", optional=True,
                               tooltip="Reference photo(s) of the person; used when reference_embeds is not connected."),
                io.String.Input("prompt", default="", multiline=True, optional=True,
                                tooltip="The prompt the video was generated from (for CLIP-T and the report)."),
                io.Float.Input("fps", default=16.0, min=1.0, max=240.0, step=1.0,
                               tooltip="Frame rate of the video (Wan: 16, Wan 2.2 5B: 24); sets the dynamic-degree "
                                       "frame sampling and threshold."),
                io.Combo.Input("frame_sampling", options=list(SAMPLING_CHOICES), default="all frames",
                               tooltip="Evaluate faces on every frame, or on ConsisID's 16 uniformly sampled frames "
                                       "(cosines clipped at 0, as ConsisID reports FaceSim-Arc)."),
                io.Float.Input("flow_scale", default=1.0, min=0.1, max=1.0, step=0.05,
                               tooltip="Resolution factor for the optical flow: 1 = full resolution; 0.5 is ~4x faster "
                                       "and reports magnitudes in full-resolution pixels."),
                io.Int.Input("window_frames", default=0, min=0, max=100000, optional=True,
                             tooltip="For a long video made in windows (context windows) or by extension: the frames of "
                                     "one window, in video frames (Wan: 4 x latent frames - 3; a context_length of 21 "
                                     "latent frames is 81 video frames). The drift then reports each window's identity "
                                     "and the worst window. 0: not made in windows."),
                io.Int.Input("window_overlap", default=0, min=0, max=100000, optional=True,
                             tooltip="Frames two neighbouring windows share, in video frames (Wan: 4 x the latent "
                                     "context_overlap). Must be below window_frames."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Optional CLIP text encoder (Load CLIP, e.g. clip_l) for CLIP-T; needs clip_vision too."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="Optional CLIP vision model (Load CLIP Vision) of the same CLIP as `clip`."),
            ],
            outputs=[
                io.String.Output(display_name="report", tooltip="The evaluation as JSON (docs/metrics.md)."),
                io.Image.Output(display_name="plot", tooltip="Per-frame curves: identity, expression distance to the "
                                                             "reference, motion."),
            ],
        )

    @classmethod
    def validate_inputs(cls, fps=None, flow_scale=None, window_frames=None, window_overlap=None) -> bool | str:
        return check_inputs(cls, {"fps": fps, "flow_scale": flow_scale, "window_frames": window_frames,
                                  "window_overlap": window_overlap}, [_window_check])

    @classmethod
    def execute(cls, video, face_analysis, reference_embeds=None, reference_image=None, prompt: str = "",
                fps: float = 16.0, frame_sampling: str = "all frames", flow_scale: float = 1.0, window_frames: int = 0,
                window_overlap: int = 0, clip=None, clip_vision=None) -> io.NodeOutput:
        require_valid(cls, {"fps": fps, "flow_scale": flow_scale, "window_frames": window_frames,
                            "window_overlap": window_overlap}, [_window_check])
        if not hasattr(face_analysis, "detect"):
            raise ValueError("IaD Evaluate Video: face_analysis must come from IaD Face Analysis Loader")
        frames = images_to_uint8(video, "IaD Evaluate Video: video")
        if reference_embeds is not None:
            reference = ReferenceFaces.from_face_embeds(reference_embeds)
        elif reference_image is not None:
            photos = images_to_uint8(reference_image, "IaD Evaluate Video: reference_image")
            reference = ReferenceFaces.from_images(face_analysis, list(photos),
                                                   [f"reference_image {i}" for i in range(len(photos))])
        else:
            raise ValueError("IaD Evaluate Video needs the reference face: connect reference_embeds (IaD Face Embed) "
                             "or reference_image (the photo).")
        if frame_sampling not in SAMPLING_CHOICES:
            raise ValueError(f"IaD Evaluate Video: frame_sampling must be one of {list(SAMPLING_CHOICES)}")
        scorer, clip_note = None, None
        if clip is not None and clip_vision is not None:
            scorer = make_clip_scorer(clip, clip_vision)
        elif clip is not None or clip_vision is not None:
            missing = "clip_vision" if clip_vision is None else "clip"
            clip_note = f"CLIP-T skipped: {missing} is not connected (CLIP-T needs both a CLIP text encoder and a CLIP vision model)"
        report = evaluate_video(frames, face_analysis, reference, fps, prompt=prompt or None,
                                sampling=SAMPLING_CHOICES[frame_sampling], clip_scorer=scorer, source="video",
                                flow_scale=flow_scale, window_frames=int(window_frames), window_overlap=int(window_overlap))
        if clip_note:
            report.clip_skipped = clip_note
        text = report.to_json()
        plot = torch.from_numpy(image_to_array(plot_report(report)).astype(np.float32) / 255.0)[None]
        # Shown on the node itself (an output node): the plot as a preview and the report as text.
        ui = importlib.import_module(API_MODULE).ui
        return io.NodeOutput(text, plot, ui={"images": ui.PreviewImage(plot, cls=cls).as_dict()["images"], "text": [text]})


NODES = [IaDEvaluateVideo]
