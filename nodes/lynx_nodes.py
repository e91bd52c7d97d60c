"""Lynx extras: the IR-SE50 face recognizer Lynx was trained on, and Lynx's three-pass guidance.

- IaD IR-SE50 Face Embedder: a FACE_ANALYSIS whose identity embeddings come from facexlib's
  IR-SE50 ArcFace (torch) on the same insightface detection + 5-point alignment. Lynx adapters
  need it: IaD Identity refuses a Lynx adapter with insightface (antelopev2) embeddings.
- IaD Lynx Guider: Lynx's guidance with a separate identity scale, as a native GUIDER for
  SamplerCustomAdvanced (docs/lynx.md, "Three-pass guidance").
"""

from __future__ import annotations

import os
import threading

import comfy.model_management
import comfy.samplers
import folder_paths

from ..iad.recognizers.irse50 import IRSE50_EMBEDDER, KNOWN_FILENAMES, IRSE50Recognizer, analyzer_with_irse50, load_irse50
from .comfy_api_compat import io
from .model_paths import FACEXLIB_FOLDER, IAD_FOLDER
from .validation import check_inputs, require_valid

_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
_RECOGNIZERS: dict[tuple, IRSE50Recognizer] = {}
_RECOGNIZERS_LOCK = threading.Lock()


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
    device = comfy.model_management.get_torch_device()
    key = (os.path.realpath(path), os.path.getmtime(path), str(device))
    with _RECOGNIZERS_LOCK:
        cached = _RECOGNIZERS.get(key)
        if cached is None:
            _RECOGNIZERS.clear()  # one set of IR-SE50 weights at a time (~175 MB)
            cached = IRSE50Recognizer(load_irse50(path), device=device)
            _RECOGNIZERS[key] = cached
    return cached


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


NODES = [IaDIRSE50FaceEmbedder, IaDLynxGuider]
