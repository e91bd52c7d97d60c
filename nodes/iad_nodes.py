"""IaD Model Loader, IaD Identity, IaD Apply: identity adapters on a native ComfyUI MODEL."""

from __future__ import annotations

import os

import comfy.ops
import folder_paths
import torch

from ..iad.adapter import IdentityAdapter
from ..iad.checkpoint import check_compatible
from ..iad.decoupling import Decoupler, TrainingFreeDecoupler
from ..iad.face_types import FaceEmbeds
from ..iad import patching
from ..iad.lynx import REF_LAYERS_FILE, is_lynx_path, load_adapter_or_lynx
from ..iad.patching import UnsupportedModelError
from .comfy_api_compat import io
from .model_paths import IAD_FOLDER
from .validation import check_inputs, require_valid, step_range_check

IAD_MODEL = "IAD_MODEL"
LOADER_DTYPES = ["auto", "bf16", "fp16", "fp32"]
STORAGE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def loader_dtype(path: str, choice: str | None) -> torch.dtype | None:
    """The storage dtype IaD Model Loader gives an adapter: None keeps the file's. "auto" is bf16 for
    Lynx's released files, the precision bytedance/lynx loads them at (its pipeline's bfloat16)."""
    if choice in (None, "auto"):
        return torch.bfloat16 if is_lynx_path(path) else None
    return STORAGE_DTYPES[choice]
IAD_IDENTITY = "IAD_IDENTITY"
DECOUPLING_CHOICES = ["auto", "trained", "training-free", "none"]

# PersonalVideo (arXiv 2411.17048): inject identity only in the LAST QUARTER of denoising. The early,
# high-noise steps fix layout, motion and expression; identity injected late resolves the face while
# keeping the prompt's action. An earlier start gives a stronger identity and more copying of the photo.
DEFAULT_START_PERCENT = 0.75
DEFAULT_END_PERCENT = 1.0


def adapter_file_problem(adapter_name) -> str | None:
    """Why ``adapter_name`` cannot be loaded from models/iad (None when it can), with the folder to
    put files in. Checked at validation (before the prompt runs) and again when the node runs."""
    if adapter_name is not None and os.path.basename(adapter_name) == REF_LAYERS_FILE:
        return (f"IaD Model Loader: '{adapter_name}' is Lynx full's ref-adapter, not an identity adapter. Load it with "
                "IaD Lynx Ref Adapter, and pick resampler.safetensors or ip_layers.safetensors of that folder here.")
    if adapter_name is None or folder_paths.get_full_path(IAD_FOLDER, adapter_name) is not None:
        return None
    folders = folder_paths.get_folder_paths(IAD_FOLDER)
    available = folder_paths.get_filename_list(IAD_FOLDER)
    where = " or ".join(folders)
    if not available:
        return (f"IaD Model Loader: adapter_name '{adapter_name}' not found: there is no adapter in models/iad "
                f"({where}). Put the adapter file (.safetensors, or Lynx's lynx_full / lynx_lite folder) there, "
                "then refresh (R) and pick it.")
    shown = ", ".join(available[:8]) + (" ..." if len(available) > 8 else "")
    return (f"IaD Model Loader: adapter_name '{adapter_name}' is not in models/iad ({where}); found: {shown}. Put "
            "the file there (or in a folder your extra_model_paths.yaml lists under 'iad'), then refresh (R), or "
            "pick one of those.")


class IaDModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDModelLoader",
            display_name="IaD Model Loader",
            category="IaD",
            description="Loads an IaD identity adapter (.safetensors) from models/iad. ComfyUI's model management "
                        "loads and offloads it together with the video model it is applied to. Lynx adapters load "
                        "directly: put the lynx_full or lynx_lite folder (resampler.safetensors + ip_layers.safetensors) "
                        "in models/iad and pick either file.",
            inputs=[
                io.Combo.Input("adapter_name", options=folder_paths.get_filename_list(IAD_FOLDER),
                               tooltip="An IaD adapter checkpoint in ComfyUI/models/iad (made for one model family "
                                       "and size, e.g. Wan 2.1 14B)."),
                # Optional: API prompts written before this input existed still run (with "auto").
                io.Combo.Input("dtype", options=LOADER_DTYPES, default="auto", optional=True,
                               tooltip="Precision the adapter weights are kept in; they run at the video model's "
                                       "compute dtype. auto: bf16 for Lynx files (what Lynx uses), the stored "
                                       "precision for IaD checkpoints. fp32 doubles a bf16 adapter's memory."),
            ],
            outputs=[io.Custom(IAD_MODEL).Output(display_name="iad_model")],
        )

    @classmethod
    def validate_inputs(cls, adapter_name=None, dtype=None) -> bool | str:
        problem = adapter_file_problem(adapter_name)
        return check_inputs(cls, {"dtype": dtype}) if problem is None else problem

    @classmethod
    def execute(cls, adapter_name: str, dtype: str | None = None) -> io.NodeOutput:
        problem = adapter_file_problem(adapter_name)
        if problem is not None:
            raise ValueError(problem)
        require_valid(cls, {"dtype": dtype})
        path = folder_paths.get_full_path(IAD_FOLDER, adapter_name)
        # IaD checkpoints, or Lynx's released files directly; ComfyUI's casting layers, as its own models use
        adapter = load_adapter_or_lynx(path, dtype=loader_dtype(path, dtype), operations=comfy.ops.manual_cast)
        return io.NodeOutput(patching.IaDModel.wrap(adapter, name=adapter_name))


def _z_id(adapter: IdentityAdapter, embeddings: torch.Tensor, decoupling: str, strength: float) -> tuple[torch.Tensor, str, list[str]]:
    """One identity embedding [1, D] from N references, and how it was decoupled."""
    own = adapter.decoupler
    if decoupling == "auto":
        decoupling = "trained" if isinstance(own, Decoupler) else "training-free"
    if decoupling == "trained":
        if not isinstance(own, Decoupler):
            raise ValueError(
                f"IaD Identity: decoupling='trained' needs an adapter with a trained decoupler, but this adapter has "
                f"decoupler_kind='{adapter.config.decoupler_kind}'. Choose 'training-free' (or 'auto')."
            )
        return own.fuse(embeddings.to(own.id_head[0].weight), strength=strength).unsqueeze(0), f"trained (strength {strength})", []
    if decoupling == "training-free":
        prior = own.basis if isinstance(own, TrainingFreeDecoupler) else None
        decoupler = TrainingFreeDecoupler.fit(embeddings, prior=prior, strength=strength)
        return decoupler.fuse(embeddings).unsqueeze(0), f"training-free (rank {decoupler.rank}, strength {strength})", list(decoupler.notes)
    mean = embeddings.mean(0)
    return (mean / mean.norm().clamp_min(1e-8) * embeddings.norm(dim=-1).mean()).unsqueeze(0), "none (mean of the references)", []


class IaDIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDIdentity",
            display_name="IaD Identity",
            category="IaD",
            description="Turns the reference faces into identity tokens for IaD Apply, once per run. Decoupling keeps "
                        "who the person is and drops the photo's expression and pose, so the prompt decides those.",
            inputs=[
                io.Custom(IAD_MODEL).Input("iad_model", tooltip="The adapter from IaD Model Loader; its resampler makes the tokens."),
                io.Custom("FACE_EMBEDS").Input("face_embeds", tooltip="Reference faces of ONE person from IaD Face Embed; "
                                                                      "several photos give a more robust identity."),
                io.Combo.Input("decoupling", options=DECOUPLING_CHOICES, default="auto",
                               tooltip="auto: the adapter's trained decoupler when it has one, else training-free. "
                                       "trained: the adapter's learned identity/action split. training-free: remove the "
                                       "directions in which the references differ (expression, pose). none: plain mean."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="How much of the expression/pose component to remove (0 = keep the raw embedding)."),
            ],
            outputs=[io.Custom(IAD_IDENTITY).Output(display_name="identity")],
        )

    @classmethod
    def validate_inputs(cls, strength=None) -> bool | str:
        return check_inputs(cls, {"strength": strength})

    @classmethod
    def execute(cls, iad_model, face_embeds: FaceEmbeds, decoupling: str = "auto", strength: float = 1.0) -> io.NodeOutput:
        require_valid(cls, {"strength": strength})
        adapter: IdentityAdapter = iad_model.adapter
        config = adapter.config
        # Duck-typed: iad is importable under two names (iad / <pack>.iad), so isinstance would lie.
        if not all(hasattr(face_embeds, a) for a in ("embeddings", "dim", "embedder")):
            raise ValueError("IaD Identity: face_embeds must come from IaD Face Embed (FACE_EMBEDS).")
        if face_embeds.dim != config.embed_dim:
            raise ValueError(
                f"IaD Identity: the faces were embedded as {face_embeds.dim}-d vectors by '{face_embeds.embedder}', but "
                f"adapter '{iad_model.name}' expects {config.embed_dim}-d embeddings from '{config.embedder}'."
            )
        # The recognizer decides the embedding space; the pack folder it was found in does not.
        if config.embedder.rsplit("/", 1)[-1] != str(face_embeds.embedder).rsplit("/", 1)[-1]:
            check_compatible(config, f"IaD adapter '{iad_model.name}'", expected_embedder=face_embeds.embedder)
        with torch.inference_mode():
            embeddings = face_embeds.embeddings()
            z_id, how, notes = _z_id(adapter, embeddings, decoupling, strength)
            param = next(adapter.resampler.parameters())
            tokens = adapter.identity_tokens(z_id.to(param.device, param.dtype)).float().cpu()
        identity = patching.IaDIdentity(tokens=tokens.clone(), adapter_id=id(adapter), adapter_name=iad_model.name,
                                         decoupling=how, num_references=len(face_embeds), notes=notes)
        return io.NodeOutput(identity)


class IaDApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IaDApply",
            display_name="IaD Apply",
            category="IaD",
            description="Adds the identity to a native video MODEL as extra attention on identity tokens: Wan 2.1/2.2 "
                        "T2V, I2V, TI2V 5B and the Wan variants (VACE, Fun Camera/Control, S2V, HuMo, Animate, SCAIL, "
                        "Dancer, Phantom, InfiniteTalk, the causal model; the video's tokens only, never the reference, "
                        "pose, audio or motion streams), LTX-Video, LTX-2 (video stream only), HunyuanVideo, HunyuanVideo "
                        "1.5. Patches a copy: chain it with LoRAs, ModelSamplingSD3 and other patches in any order. By "
                        "default the identity acts only in the last quarter of the denoising (PersonalVideo): the "
                        "prompt (or the driving video, pose or audio) decides layout, motion and expression first.",
            inputs=[
                io.Model.Input("model", tooltip="The video model from Load Diffusion Model (GGUF/fp8 loaders work too); "
                                                "for a Wan variant, before or after its own conditioning node "
                                                "(WanInfiniteTalkToVideo, ARVideoI2V) alike."),
                io.Custom(IAD_MODEL).Input("iad_model", tooltip="The adapter from IaD Model Loader, made for this model family and size."),
                io.Custom(IAD_IDENTITY).Input("identity", tooltip="Identity tokens from IaD Identity (computed with the same adapter)."),
                io.Float.Input("weight", default=1.0, min=-2.0, max=3.0, step=0.05,
                               tooltip="Strength of the identity attention. 0 returns the model untouched."),
                io.Float.Input("start_percent", default=DEFAULT_START_PERCENT, min=0.0, max=1.0, step=0.01,
                               tooltip="Where in the denoising the identity starts (0 = first step). Default 0.75: only "
                                       "the last quarter of the steps, as PersonalVideo found: the early steps fix "
                                       "layout, motion and expression, so identity injected late keeps the prompt's "
                                       "action. An earlier start gives a stronger identity but copies more of the "
                                       "photo (pose, expression)."),
                io.Float.Input("end_percent", default=DEFAULT_END_PERCENT, min=0.0, max=1.0, step=0.01,
                               tooltip="Where the identity stops (1 = last step); must be after start_percent. Both are "
                                       "turned into noise levels when sampling starts, with the sampled model's own "
                                       "percent_to_sigma: shift nodes count, in whatever order they are chained."),
                # Optional: API prompts written before this input existed still run (with "none").
                io.Combo.Input("uncond_identity", options=patching.UNCOND_CHOICES, default=patching.UNCOND_NONE,
                               optional=True,
                               tooltip="What the negative (unconditional) pass gets. none: no identity, so CFG also "
                                       "pushes towards it (stronger likeness). same as cond: the identity in both "
                                       "passes (milder). null identity (Lynx): the adapter's tokens for an all-zero "
                                       "face, as Lynx's negative pass (use with Lynx adapters and IaD Lynx Guider). "
                                       "No effect at cfg 1, where there is no negative pass."),
            ],
            outputs=[io.Model.Output()],
        )

    RANGE_CHECKS = [step_range_check("IaD Apply")]

    @classmethod
    def validate_inputs(cls, weight=None, start_percent=None, end_percent=None) -> bool | str:
        return check_inputs(cls, {"weight": weight, "start_percent": start_percent, "end_percent": end_percent},
                            cls.RANGE_CHECKS)

    @classmethod
    def execute(cls, model, iad_model, identity, weight: float = 1.0, start_percent: float = DEFAULT_START_PERCENT,
                end_percent: float = DEFAULT_END_PERCENT, uncond_identity: str | bool | None = None) -> io.NodeOutput:
        require_valid(cls, {"weight": weight, "start_percent": start_percent, "end_percent": end_percent},
                      cls.RANGE_CHECKS)
        try:
            patched = patching.apply_identity(model, iad_model, identity, weight, start_percent, end_percent,
                                               patching.UNCOND_NONE if uncond_identity is None else uncond_identity)
        except UnsupportedModelError as exc:
            raise ValueError(f"IaD Apply: {exc}") from None
        return io.NodeOutput(patched)


NODES = [IaDModelLoader, IaDIdentity, IaDApply]
