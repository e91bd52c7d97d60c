"""IaD Face Analysis Loader and IaD Face Embed: the ComfyUI face of ``iad.face_analysis``.

The nodes only translate: ComfyUI model folders and IMAGE tensors in, ``FaceAnalyzer`` /
``FaceEmbeds`` / crops / masks out. Errors from the library already say what, where and how to
fix; they are re-raised with the node's name (``from None``: the message is complete, a second
traceback of the library's exception would only bury it in the log).
"""

from __future__ import annotations

import folder_paths
import numpy as np
import torch

from ..iad import face_analysis as fa
from .comfy_api_compat import io
from .model_paths import INSIGHTFACE_FOLDER
from .validation import check_inputs, require_valid

FaceAnalysisSocket = io.Custom("FACE_ANALYSIS")
FaceEmbedsSocket = io.Custom("FACE_EMBEDS")

# The loader's choices for the detector's input colour order -> iad.face_analysis.DETECTOR_ORDERS.
DETECTOR_ORDER_CHOICES = {"BGR (insightface's convention)": "BGR", "RGB (as Lynx's pipeline)": "RGB"}
DEFAULT_DETECTOR_ORDER = "BGR (insightface's convention)"


def insightface_roots() -> list[str]:
    """Every folder registered under ``insightface`` (the user's extra_model_paths first)."""
    try:
        return list(folder_paths.get_folder_paths(INSIGHTFACE_FOLDER))
    except KeyError:  # the pack's folders are registered at start-up; be safe if they were not
        import os

        return [os.path.join(folder_paths.models_dir, INSIGHTFACE_FOLDER)]


def pack_options() -> list[str]:
    """Packs found on disk plus the two well-known names (so a workflow that names a missing pack
    still validates and the loader can say exactly where the files should go)."""
    names: list[str] = []
    for name in [fa.DEFAULT_PACK, "buffalo_l", *fa.list_packs(insightface_roots())]:
        if name not in names:
            names.append(name)
    return names


class IaDFaceAnalysisLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDFaceAnalysisLoader",
            display_name="IaD Face Analysis Loader",
            category="IaD/face",
            description=(
                "Loads an insightface model pack (detector + ArcFace recognizer, plus landmarks when present) from "
                "ComfyUI/models/insightface/models/<pack>/. Never downloads anything; a missing or incomplete pack "
                "gets a message naming the folder and the files it needs. Loaded once per settings."
            ),
            inputs=[
                io.Combo.Input(
                    "model_pack", options=pack_options(), default=fa.DEFAULT_PACK,
                    tooltip="The pack folder under ComfyUI/models/insightface/models/. antelopev2 is what PuLID, InstantID "
                            "and IaD use; buffalo_l also works (its embeddings are not interchangeable with antelopev2's).",
                ),
                io.Combo.Input(
                    "provider", options=fa.provider_choices(), default="auto",
                    tooltip="onnxruntime execution provider. 'auto' picks the GPU provider when onnxruntime has one, else "
                            "CPU. Only providers your onnxruntime reports are listed. On a GPU the loaded sessions stay "
                            "there, outside ComfyUI's model management (Unload Models does not free them): on a card "
                            "short of memory pick CPU; face analysis runs once per prompt.",
                ),
                io.Int.Input(
                    "det_size", default=640, min=128, max=2048, step=32,
                    tooltip="Detector input size in pixels (square). 640 suits photos; faces that fill the frame are "
                            "retried automatically at smaller sizes and with padding.",
                ),
                io.Combo.Input(
                    "detector_colour_order", options=list(DETECTOR_ORDER_CHOICES), default=DEFAULT_DETECTOR_ORDER,
                    optional=True,
                    tooltip="The channel order the face detector is handed. BGR is insightface's convention (the default, "
                            "what IaD adapters were trained with). 'RGB (as Lynx's pipeline)' reproduces bytedance/lynx, "
                            "which hands insightface an RGB photo: use it with buffalo_l for Lynx's adapters. Only where "
                            "the face and its keypoints are found changes; crops and embeddings are made as always.",
                ),
            ],
            outputs=[FaceAnalysisSocket.Output(display_name="FACE_ANALYSIS")],
        )

    @classmethod
    def validate_inputs(cls, model_pack=None, detector_colour_order=None) -> bool | str:
        problem = check_inputs(cls, {"detector_colour_order": detector_colour_order})
        if problem is not True:
            return problem
        # The pack must be on disk now (the message names the folder), not only when the prompt runs.
        if model_pack is not None:
            try:
                fa.locate_pack(model_pack, insightface_roots())
            except fa.FaceAnalysisError as exc:
                return f"IaD Face Analysis Loader: {exc}"
        return True

    @classmethod
    def fingerprint_inputs(cls, model_pack: str, provider: str = "auto", det_size: int = 640,
                           detector_colour_order: str = DEFAULT_DETECTOR_ORDER):
        # Re-run when the pack's files change (the user fixed a missing or nested folder), not
        # only when the widgets change: ComfyUI would otherwise replay a cached error or analyzer.
        return fa.pack_fingerprint(model_pack, insightface_roots())

    @classmethod
    def execute(cls, model_pack: str, provider: str = "auto", det_size: int = 640,
                detector_colour_order: str = DEFAULT_DETECTOR_ORDER) -> io.NodeOutput:
        require_valid(cls, {"detector_colour_order": detector_colour_order})
        try:
            analyzer = fa.FaceAnalyzer.load(model_pack, insightface_roots(), provider=provider, det_size=det_size,
                                            detector_order=DETECTOR_ORDER_CHOICES[detector_colour_order])
        except fa.FaceAnalysisError as exc:
            raise RuntimeError(f"IaD Face Analysis Loader: {exc}") from None
        text = "\n".join([analyzer.describe(), *analyzer.notes])
        return io.NodeOutput(analyzer, ui={"text": [text]})


class IaDFaceEmbed(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDFaceEmbed",
            display_name="IaD Face Embed",
            category="IaD/face",
            description=(
                "Finds one face in each reference photo (one or several photos of ONE person), aligns it and computes "
                "its L2-normalised ArcFace identity embedding (batched). Outputs the embeddings with boxes, keypoints "
                "and landmarks, a preview of the aligned crops, a mask of the face regions and a report."
            ),
            inputs=[
                FaceAnalysisSocket.Input("face_analysis", tooltip="From IaD Face Analysis Loader."),
                io.Image.Input("images", tooltip="One or several photos of the same person (a batch). Each must show the face."),
                io.Combo.Input(
                    "policy", options=list(fa.SELECTION_POLICIES), default="largest",
                    tooltip="Which face to use when a photo shows several: the largest, the most confident detection, or "
                            "the one at face_index counted from the left.",
                ),
                io.Int.Input("face_index", default=0, min=0, max=63,
                             tooltip="With policy 'index': which face, counting from 0 at the left of the photo."),
                io.Float.Input("min_score", default=0.5, min=0.05, max=0.99, step=0.01,
                               tooltip="Minimum detection score. Lower it for hard photos (profile, blur); raise it to "
                                       "ignore small background faces."),
                io.Float.Input("same_person_threshold", default=fa.SAME_PERSON_THRESHOLD, min=-1.0, max=1.0, step=0.01,
                               tooltip="Photos whose face embedding has a cosine similarity below this with the others are "
                                       "reported as probably not the same person (a warning, not an error)."),
            ],
            outputs=[
                FaceEmbedsSocket.Output(display_name="FACE_EMBEDS"),
                io.Image.Output(display_name="aligned_faces"),
                io.Mask.Output(display_name="face_mask"),
                io.String.Output(display_name="info"),
            ],
        )

    @classmethod
    def validate_inputs(cls, min_score=None, same_person_threshold=None) -> bool | str:
        return check_inputs(cls, {"min_score": min_score, "same_person_threshold": same_person_threshold})

    @classmethod
    def execute(cls, face_analysis, images, policy: str = "largest", face_index: int = 0, min_score: float = 0.5,
                same_person_threshold: float = fa.SAME_PERSON_THRESHOLD) -> io.NodeOutput:
        require_valid(cls, {"min_score": min_score, "same_person_threshold": same_person_threshold})
        if not hasattr(face_analysis, "embed_images"):  # duck-typed: wrappers (e.g. another recognizer) qualify
            raise ValueError("IaD Face Embed: 'face_analysis' must come from IaD Face Analysis Loader, got "
                             f"{type(face_analysis).__name__}.")
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"IaD Face Embed: 'images' must be an IMAGE batch [B, H, W, C], got "
                             f"{getattr(images, 'shape', type(images).__name__)}.")
        try:
            embeds = face_analysis.embed_images(images, policy=policy, min_score=min_score, face_index=face_index,
                                                same_person_threshold=same_person_threshold)
        except fa.FaceImageError as exc:
            raise ValueError(f"IaD Face Embed: {exc}") from None
        except fa.FaceAnalysisError as exc:
            raise RuntimeError(f"IaD Face Embed: {exc}") from None
        crops = torch.from_numpy(np.stack([f.aligned_crop for f in embeds.faces])).float() / 255.0
        batch, height, width = images.shape[0], images.shape[1], images.shape[2]
        # np.zeros is calloc-backed (untouched pages cost nothing; torch.zeros writes all of a video's
        # mask up front); the ellipses are drawn straight into the MASK batch through the shared view.
        mask_view = np.zeros((batch, height, width), dtype=np.float32)
        mask = torch.from_numpy(mask_view)
        for face in embeds.faces:
            fa.face_mask(face.bbox, height, width, out=mask_view[face.image_index])
        device = getattr(face_analysis, "device", "unknown device")
        header = f"{embeds.embedder} on {device}: {len(embeds)} face(s) from {batch} image(s), policy '{policy}'"
        info = "\n".join([header, *embeds.info, *getattr(face_analysis, "notes", [])])
        return io.NodeOutput(embeds, crops, mask, info, ui={"text": [info]})


NODES = [IaDFaceAnalysisLoader, IaDFaceEmbed]
