"""Lynx extras: the IR-SE50 face recognizer Lynx was trained on, and Lynx's three-pass guidance.

- IaD IR-SE50 Face Embedder: a FACE_ANALYSIS whose identity embeddings come from facexlib's
  IR-SE50 ArcFace (torch) on the same insightface detection + 5-point alignment. Lynx adapters
  need it: IaD Identity refuses a Lynx adapter with insightface (antelopev2) embeddings.
- IaD Lynx Guider: Lynx's guidance with a separate identity scale, as a native GUIDER for
  SamplerCustomAdvanced (docs/lynx.md, "Three-pass guidance").
- IaD Lynx Ref Adapter: Lynx full's second adapter (``ref_layers.safetensors``), reference-face
  features in every block's self-attention (docs/lynx.md, "Ref-adapter"; ``iad/patching/wan_ref.py``).
"""

from __future__ import annotations

import os
import threading

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.samplers
import folder_paths
import numpy as np
import torch

from ..iad.face_analysis import FaceAnalysisError, as_rgb_uint8
from ..iad.lynx import REF_LAYERS_FILE, LynxFormatError
from ..iad.lynx_ref import REF_PROMPT, ZERO_IMAGE_VALUE, load_ref_layers, reference_crop
from ..iad.patching import UnsupportedModelError, architecture_of, step_gate
from ..iad.patching.wan_ref import IMAGE, ZERO, ReferenceEntry, apply_reference
from ..iad.recognizers.irse50 import IRSE50_EMBEDDER, KNOWN_FILENAMES, IRSE50Recognizer, analyzer_with_irse50, load_irse50
from .comfy_api_compat import io
from .iad_nodes import STORAGE_DTYPES
from .model_paths import FACEXLIB_FOLDER, IAD_FOLDER
from .validation import check_inputs, require_valid, step_range_check

_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
_RECOGNIZERS: dict[tuple, IRSE50Recognizer] = {}
_RECOGNIZERS_LOCK = threading.Lock()


def _one_per_file(cache: dict, lock, path: str, variant, build):
    """``build()`` for ``path`` (as it is now on disk, and ``variant``), kept until another file or
    variant is asked for: one set of these weights in memory at a time."""
    key = (os.path.realpath(path), os.path.getmtime(path), variant)
    with lock:
        cached = cache.get(key)
        if cached is None:
            cache.clear()
            cached = cache[key] = build()
    return cached


def _registered_folders(key: str) -> list[str]:
    try:
        return list(folder_paths.get_folder_paths(key))
    except KeyError:  # pack entry point not run (e.g. imported by a script)
        return [os.path.join(folder_paths.models_dir, key)]


def irse50_folders() -> list[str]:
    """Where IR-SE50 weights are looked for: the facexlib folders (including any the user's
    extra_model_paths.yaml adds), then the iad folders."""
    return _registered_folders(FACEXLIB_FOLDER) + _registered_folders(IAD_FOLDER)


def irse50_options() -> list[str]:
    names = [KNOWN_FILENAMES[0]]
    facexlib_folders = set(_registered_folders(FACEXLIB_FOLDER))
    for folder in irse50_folders():
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            # Any weight file in a facexlib folder; only facexlib's known names among the adapters.
            accepted = folder in facexlib_folders or name in KNOWN_FILENAMES
            if name.lower().endswith(_WEIGHT_SUFFIXES) and accepted and name not in names:
                names.append(name)
    return names


def _find(name: str) -> str | None:
    for folder in irse50_folders():
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _recognizer(path: str) -> IRSE50Recognizer:
    """IR-SE50 (~175 MB, one file at a time) under ComfyUI's model management: kept on the offload device
    inside a ModelPatcher that every embedding loads onto the torch device, so that ComfyUI counts it,
    offloads it when a model needs the room and frees it with Unload Models, like any model."""
    def build():
        offload = comfy.model_management.unet_offload_device()
        recognizer = IRSE50Recognizer(load_irse50(path), device=offload)
        patcher = comfy.model_patcher.ModelPatcher(recognizer.net, load_device=comfy.model_management.get_torch_device(),
                                                   offload_device=offload)
        recognizer.prepare = lambda: comfy.model_management.load_models_gpu([patcher])
        return recognizer

    return _one_per_file(_RECOGNIZERS, _RECOGNIZERS_LOCK, path, "managed", build)


def weights_file_problem(weights) -> str | None:
    """Why the IR-SE50 weights cannot be found (None when they can), with the folder to put them in."""
    if weights is None or _find(weights) is not None:
        return None
    return (f"IaD IR-SE50 Face Embedder: weights '{weights}' not found in {', '.join(irse50_folders())}. Download "
            f"facexlib's {KNOWN_FILENAMES[0]} and put it in {irse50_folders()[0]}, then refresh (R).")


class IaDIRSE50FaceEmbedder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDIRSE50FaceEmbedder",
            display_name="IaD IR-SE50 Face Embedder (Lynx)",
            category="IaD/face",
            description="Makes IaD Face Embed compute identity embeddings with facexlib's IR-SE50 ArcFace, the "
                        "recognizer Lynx adapters were trained on, on the same insightface detection and alignment. "
                        f"Its embeddings are tagged '{IRSE50_EMBEDDER}'. Weights: ComfyUI/models/facexlib/"
                        f"{KNOWN_FILENAMES[0]} (facexlib's release file).",
            inputs=[
                io.Custom("FACE_ANALYSIS").Input(
                    "face_analysis", tooltip="From IaD Face Analysis Loader: its detector finds and aligns the faces."),
                io.Combo.Input(
                    "weights", options=irse50_options(), default=KNOWN_FILENAMES[0],
                    tooltip="facexlib's IR-SE50 weights (recognition_arcface_ir_se50.pth or a .safetensors export) in "
                            "ComfyUI/models/facexlib (or models/iad). Read as a plain state dict; never unpickled."),
            ],
            outputs=[io.Custom("FACE_ANALYSIS").Output(display_name="FACE_ANALYSIS")],
        )

    @classmethod
    def validate_inputs(cls, weights=None) -> bool | str:
        problem = weights_file_problem(weights)
        return True if problem is None else problem

    @classmethod
    def execute(cls, face_analysis, weights: str) -> io.NodeOutput:
        problem = weights_file_problem(weights)
        if problem is not None:
            raise ValueError(problem)
        path = _find(weights)
        try:
            recognizer = _recognizer(path)
        except (ValueError, FileNotFoundError) as exc:
            raise ValueError(f"IaD IR-SE50 Face Embedder: {exc}") from exc
        try:
            analyzer = analyzer_with_irse50(face_analysis, recognizer)
        except TypeError as exc:
            raise ValueError(f"IaD IR-SE50 Face Embedder: {exc}") from exc
        return io.NodeOutput(analyzer, ui={"text": [analyzer.describe()]})


class LynxGuider(comfy.samplers.CFGGuider):
    """Lynx's guidance (bytedance/lynx LynxWanPipeline):

        out = uncond + cfg_identity * (neg_with_identity - uncond) + cfg * (pos_with_identity - neg_with_identity)

    On a model patched by IaD Apply, ComfyUI's first batch chunk (index 0, "cond") gets the
    identity and the others get what ``uncond_identity`` says: with "null identity (Lynx)" the null
    tokens, exactly Lynx's unconditional pass; with "none" no identity. So [positive, negative] in
    one batched call give pos_with_identity and uncond, and [negative] alone gives neg_with_identity.
    """

    def set_cfg(self, cfg: float, cfg_identity: float = 2.0) -> None:
        self.cfg = float(cfg)
        self.cfg_identity = float(cfg_identity)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        positive = self.conds.get("positive")
        negative = self.conds.get("negative")
        pos_id, uncond = comfy.samplers.calc_cond_batch(self.inner_model, [positive, negative], x, timestep, model_options)
        neg_id = comfy.samplers.calc_cond_batch(self.inner_model, [negative], x, timestep, model_options)[0]
        # cfg_function applies any post-CFG hooks (e.g. RescaleCFG) to the identity-guidance part, as DualCFGGuider does.
        guided = comfy.samplers.cfg_function(self.inner_model, neg_id, uncond, self.cfg_identity, x, timestep,
                                             model_options=model_options, cond=negative, uncond=negative)
        return guided + self.cfg * (pos_id - neg_id)


class IaDLynxGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDLynxGuider",
            display_name="IaD Lynx Guider (three-pass)",
            category="IaD",
            description="Lynx's three-pass guidance for SamplerCustomAdvanced: identity and prompt get separate scales. "
                        "Per step it runs the positive prompt with the identity, the negative prompt with the identity "
                        "and the negative prompt without it (3 model passes instead of 2).",
            inputs=[
                io.Model.Input("model", tooltip="The model from IaD Apply with uncond_identity 'null identity (Lynx)' "
                                                "(Lynx's unconditional pass) or 'none' (no identity there); not 'same "
                                                "as cond', which would make the identity guidance vanish."),
                io.Conditioning.Input("positive", tooltip="The prompt: what happens in the video."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (also used, with the identity, for the identity pass)."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Prompt guidance: pos_with_identity vs neg_with_identity. Lynx uses 5.0."),
                io.Float.Input("cfg_identity", default=2.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Identity guidance: neg_with_identity vs the pass without identity. Lynx uses 2.0; "
                                       "1.0 adds the identity without extra guidance towards it."),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def validate_inputs(cls, cfg=None, cfg_identity=None) -> bool | str:
        return check_inputs(cls, {"cfg": cfg, "cfg_identity": cfg_identity})

    @classmethod
    def execute(cls, model, positive, negative, cfg: float = 5.0, cfg_identity: float = 2.0) -> io.NodeOutput:
        require_valid(cls, {"cfg": cfg, "cfg_identity": cfg_identity})
        guider = LynxGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg, cfg_identity)
        return io.NodeOutput(guider)


LYNX_DTYPE = "bf16"   # bytedance/lynx loads its adapters at the pipeline dtype, bfloat16
_REF_LAYERS: dict[tuple, "comfy.model_patcher.ModelPatcher"] = {}
_REF_LAYERS_LOCK = threading.Lock()


def ref_layers_options() -> list[str]:
    """Every ``ref_layers.safetensors`` under models/iad (Lynx full's folder), the expected one first when none."""
    names = [n for n in folder_paths.get_filename_list(IAD_FOLDER) if os.path.basename(n) == REF_LAYERS_FILE]
    return names or [f"lynx_full/{REF_LAYERS_FILE}"]


def ref_layers_problem(name) -> str | None:
    if name is None or folder_paths.get_full_path(IAD_FOLDER, name) is not None:
        return None
    return (f"IaD Lynx Ref Adapter: ref_layers '{name}' not found in {' or '.join(folder_paths.get_folder_paths(IAD_FOLDER))}. "
            f"Put Lynx full's {REF_LAYERS_FILE} in models/iad/lynx_full/ (next to its resampler and ip_layers), then "
            "refresh (R).")


def _ref_layers_patcher(path: str, dtype: str):
    """The ref layers inside a ModelPatcher (model management loads them with the MODEL), one file at a time."""
    def build():
        layers = load_ref_layers(path, dtype=STORAGE_DTYPES[dtype], operations=comfy.ops.manual_cast)
        return comfy.model_patcher.ModelPatcher(layers, load_device=comfy.model_management.get_torch_device(),
                                                offload_device=comfy.model_management.unet_offload_device())

    return _one_per_file(_REF_LAYERS, _REF_LAYERS_LOCK, path, dtype, build)


def _context_of(ref_text) -> torch.Tensor:
    if not ref_text or not isinstance(ref_text[0][0], torch.Tensor) or ref_text[0][0].ndim != 3:
        raise ValueError("IaD Lynx Ref Adapter: ref_text must be a CONDITIONING from CLIP Text Encode (the Wan text "
                         f"encoder) of Lynx's reference prompt '{REF_PROMPT}'.")
    return ref_text[0][0][:1].detach().float().cpu()


class IaDLynxRefAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDLynxRefAdapter",
            display_name="IaD Lynx Ref Adapter",
            category="IaD",
            description="Lynx full's reference adapter: features of the reference face, from one pass of the model "
                        "over its VAE latent, added to every block's self-attention. They carry fine facial detail. "
                        "Combine it with IaD Apply (Lynx full or lite ID adapter) in either order. Wan 2.1 T2V 14B "
                        "(and other 5120-wide Wan T2V models, Phantom's graph included); Wan variants that read more "
                        "than the video latent (I2V, Animate, S2V, HuMo, VACE, ...) are refused, saying why. One extra "
                        "single-frame model pass per run and kind.",
            inputs=[
                io.Model.Input("model", tooltip="The Wan T2V model (Load Diffusion Model; LoRAs and IaD Apply may come "
                                                "before or after this node)."),
                io.Combo.Input("ref_layers", options=ref_layers_options(),
                               tooltip=f"Lynx full's {REF_LAYERS_FILE} in ComfyUI/models/iad/lynx_full/."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (wan_2.1_vae.safetensors): it encodes the reference face "
                                            "into the latent the reference pass reads."),
                io.Custom("FACE_ANALYSIS").Input(
                    "face_analysis", tooltip="From IaD Face Analysis Loader: finds the face and its 5 keypoints for "
                                             "Lynx's 256 px extended face crop."),
                io.Image.Input("image", tooltip="ONE reference photo (the largest face is used)."),
                io.Conditioning.Input("ref_text", tooltip=f"CLIP Text Encode (Wan's text encoder) of '{REF_PROMPT}', "
                                                          "Lynx's text for the reference pass."),
                io.Float.Input("ref_scale", default=1.0, min=0.0, max=3.0, step=0.05,
                               tooltip="Strength of the reference attention (Lynx's ref_scale, 1.0). 0 returns the "
                                       "model untouched."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Where in the denoising the reference starts. Lynx: 0 (every step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Where it stops (1 = last step); must be after start_percent. Resolved when "
                                       "sampling starts, after any shift node."),
                io.Combo.Input("dtype", options=list(STORAGE_DTYPES), default=LYNX_DTYPE, optional=True,
                               tooltip="Precision the ref weights are kept in (they run at the model's compute dtype). "
                                       "bf16 is what Lynx uses; fp32 doubles their memory (4.2 GB -> 8.4 GB for 14B)."),
            ],
            outputs=[io.Model.Output(), io.Image.Output(display_name="reference_crop")],
        )

    RANGE_CHECKS = [step_range_check("IaD Lynx Ref Adapter")]

    @classmethod
    def validate_inputs(cls, ref_layers=None, ref_scale=None, start_percent=None, end_percent=None,
                        dtype=None) -> bool | str:
        problem = ref_layers_problem(ref_layers)
        if problem is not None:
            return problem
        return check_inputs(cls, {"ref_scale": ref_scale, "start_percent": start_percent, "end_percent": end_percent,
                                  "dtype": dtype}, cls.RANGE_CHECKS)

    @classmethod
    def execute(cls, model, ref_layers: str, vae, face_analysis, image, ref_text, ref_scale: float = 1.0,
                start_percent: float = 0.0, end_percent: float = 1.0, dtype: str | None = None) -> io.NodeOutput:
        dtype = dtype or LYNX_DTYPE
        require_valid(cls, {"ref_scale": ref_scale, "start_percent": start_percent, "end_percent": end_percent,
                            "dtype": dtype}, cls.RANGE_CHECKS)
        problem = ref_layers_problem(ref_layers)
        if problem is not None:
            raise ValueError(problem)
        if vae is None:
            raise ValueError("IaD Lynx Ref Adapter: connect a VAE (the Wan 2.1 VAE, wan_2.1_vae.safetensors in "
                             "models/vae): the reference face is VAE-encoded for the reference pass.")
        dm = cls._wan_t2v(model)
        crop = cls._crop(face_analysis, image)
        pixels = torch.from_numpy(crop).float().div(255.0)[None]
        if ref_scale == 0.0 or start_percent >= end_percent:   # nothing to add: the model as it is, nothing loaded
            return io.NodeOutput(model, pixels)
        path = folder_paths.get_full_path(IAD_FOLDER, ref_layers)
        try:
            patcher = _ref_layers_patcher(path, dtype)
        except LynxFormatError as exc:
            raise ValueError(f"IaD Lynx Ref Adapter: {exc}") from None
        layout = patcher.model.layout
        if layout.dim != dm.dim or layout.num_blocks != len(dm.blocks):
            raise ValueError(
                f"IaD Lynx Ref Adapter: {ref_layers} has {layout.num_blocks} blocks of width {layout.dim}, but the model "
                f"has {len(dm.blocks)} blocks of width {dm.dim}. Lynx's ref adapter is made for Wan 2.1 T2V 14B (40 blocks, "
                "width 5120); load that model (or Wan 2.2 A14B T2V).")
        latents = {}
        channels = dm.patch_embedding.weight.shape[1]
        for kind, px in ((IMAGE, pixels), (ZERO, torch.full_like(pixels, ZERO_IMAGE_VALUE))):
            latent = vae.encode(px)
            if latent.ndim != 5 or latent.shape[1] != channels:
                raise ValueError(
                    f"IaD Lynx Ref Adapter: the VAE gives latents of shape {list(latent.shape)}, but the model reads "
                    f"{channels}-channel video latents. Connect the Wan 2.1 VAE (wan_2.1_vae.safetensors).")
            latents[kind] = model.model.process_latent_in(latent).float().cpu()
        entry = ReferenceEntry(patcher, latents, _context_of(ref_text), ref_scale, start_percent, end_percent,
                               step_gate(model, start_percent, end_percent))
        patched = apply_reference(model, entry, len(dm.blocks))
        return io.NodeOutput(patched, pixels, ui={"text": [
            f"reference: {crop.shape[0]} px face crop -> latent {list(latents[IMAGE].shape)}; {layout.num_blocks} blocks "
            f"x {layout.dim}, {dtype}; ref_scale {ref_scale}, steps {start_percent:g}-{end_percent:g}"]})

    @staticmethod
    def _wan_t2v(model):
        """The Wan diffusion model, where Lynx's reference pass is defined: the model alone on the face's
        16-channel latent (Wan text-to-video layouts; Phantom's reference images stay untouched)."""
        try:
            arch = architecture_of(model)
        except UnsupportedModelError as exc:
            raise ValueError(f"IaD Lynx Ref Adapter: {exc}") from None
        dm = model.model.diffusion_model
        why = arch.wan_variant.ref_adapter if arch.family == "wan" else "it is not a Wan model"
        if why is None and dm.patch_embedding.weight.shape[1] != model.model.latent_format.latent_channels:
            why = ("its input is the video latent plus control or image channels, and Lynx's reference pass defines "
                   "only the face's latent")
        if why is not None:
            raise ValueError(f"IaD Lynx Ref Adapter: Lynx's ref-adapter cannot run on {arch.variant}: {why}. Lynx's ID "
                             "adapter (IaD Model Loader + IaD Apply) works on it; the ref-adapter on Wan text-to-video "
                             "models (Wan 2.1 T2V 14B, Wan 2.2 A14B T2V, Phantom's T2V graph).")
        return dm

    @staticmethod
    def _crop(face_analysis, image) -> np.ndarray:
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] != 1:
            count = image.shape[0] if isinstance(image, torch.Tensor) and image.ndim == 4 else "?"
            raise ValueError(f"IaD Lynx Ref Adapter: image must be ONE reference photo; it has {count}. Pick one with "
                             "ImageFromBatch (Lynx takes a single reference).")
        try:
            faces = face_analysis.embed_images(image, policy="largest", landmarks=False, same_person_threshold=None)
        except FaceAnalysisError as exc:
            raise ValueError(f"IaD Lynx Ref Adapter: {exc}") from None
        return reference_crop(as_rgb_uint8(image[0], 0, 1), faces.faces[0].kps)


NODES = [IaDIRSE50FaceEmbedder, IaDLynxGuider, IaDLynxRefAdapter]
