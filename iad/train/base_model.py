"""The frozen base model for training: loaded through ComfyUI, checked, and patched.

The identity enters the base model exactly as at inference: the family's own IaD Apply patch
(``iad/patching/``: Wan's and LTX's text cross-attention, HunyuanVideo (1.5)'s residual identity
attention) on a ModelPatcher *clone*, with a ``TrainingEntry`` in place of the inference entry. The
only difference: identity K/V are recomputed (with gradients) from the current tokens on every call,
passed in ``transformer_options["iad_train"]``. Gradient checkpointing (Wan) uses ComfyUI's own
``patches_replace["dit"]`` block replacement. Also: the default adapter layout for a base, and which
base parameters train (``mode: base``, ``base_trainable``). ComfyUI is imported lazily.
"""

from __future__ import annotations

import torch
from torch import nn

from ..adapter import AdapterConfig, IdentityAdapter
from ..comfy_runtime import training_mode
from ..patching.apply import FAMILY_PATCHES
from ..patching.arch import UnsupportedModelError, check_adapter_fits, detect_architecture
from .config import ConfigError, TrainConfig

TRAIN_KEY = "iad_train"
# The Wan models the trainer builds inputs for: text-to-video (Wan 2.1 1.3B/14B, Wan 2.2 A14B's experts
# and TI2V 5B). I2V and the other Wan variants also read streams a prepared dataset does not hold.
PLAIN_WAN_T2V_CONFIGS = ("WAN21_T2V", "WAN22_T2V")
VARIANT_TRAINING_NOTE = (
    "Training builds a model's inputs from the prepared dataset (video latents, captions, faces); this variant "
    "also reads streams the dataset does not hold (start image and CLIP-vision features, audio features, reference "
    "and motion latents, pose and face videos, VACE or camera conditioning), so iad.prepare would have to store them per clip first. Train on the "
    "Wan T2V model of the same width instead (wan2.1_t2v_14B for the 14B variants): the adapter then applies to the "
    "variant with IaD Apply, which adds the identity to the variant's video tokens only (docs/patching.md).")


class IncompatibleBaseModelError(ConfigError):
    """The base model cannot be trained with this trainer/adapter."""


class TrainingEntry:
    """What the inference patches ask an ``IdentityEntry`` (``iad.patching.identity``), answered for
    training: active in every model call that carries ``transformer_options["iad_train"]``, on every
    row, with K/V computed from that call's tokens (with gradients, never cached)."""

    def __init__(self, adapter: IdentityAdapter, weight: float):
        self.adapter, self.weight = adapter, float(weight)
        self.key_norm = bool(adapter.config.identity_key_norm)

    def __deepcopy__(self, memo):
        return self

    def passes(self, transformer_options: dict, batch: int):
        ident = transformer_options.get(TRAIN_KEY)
        return False if ident is None else [(ident, None)]

    def kv(self, block_index: int, device, dtype, ident: dict) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = ident["adapter"].block_kv(block_index, ident["tokens"])
        return k.to(device, dtype), v.to(device, dtype)

    def notify(self, block_index: int, transformer_options: dict, rows, tokens) -> None:
        pass


class CheckpointedBlock:
    """``patches_replace["dit"]`` entry: Wan block ``index`` under activation checkpointing.

    The block is called directly rather than through ``extra["original_block"]``: ComfyUI's
    ``block_wrap`` closure reads its loop variable late, so when the checkpoint recomputes it
    during backward it would run the *last* block's weights (wrong gradients). The identity
    tokens are an explicit checkpoint input."""

    def __init__(self, block, index: int):
        self.block, self.index = block, int(index)

    def __deepcopy__(self, memo):
        return self

    def __call__(self, args, extra):
        from torch.utils.checkpoint import checkpoint

        options = args["transformer_options"]
        ident = options.get(TRAIN_KEY)

        def run(img, tokens):
            opts = options if ident is None else {**options, TRAIN_KEY: {**ident, "tokens": tokens}}
            # The recomputation during backward runs outside forward's training_mode: set it again.
            with training_mode(torch.is_grad_enabled()):
                return self.block(img, context=args["txt"], e=args["vec"], freqs=args["pe"], context_img_len=None,
                                  transformer_options=opts)

        tokens = None if ident is None else ident["tokens"]
        return {"img": checkpoint(run, args["img"], tokens, use_reentrant=False)}


def _load_resident(comfy_sd, path: str, options: dict):
    """``comfy.sd.load_diffusion_model`` with every weight resident on its device. ComfyUI v0.2x
    loads models on a GPU through ``ModelPatcherDynamic`` (dynamic VRAM): weights stream in per
    layer at inference and ``patch_model`` may not load them, which training (the optimizer holds
    the weights, autograd keeps the activations) cannot work with. Where the loader offers
    ``disable_dynamic`` it is used, and a dynamic patcher is swapped for its plain delegate."""
    import inspect

    kwargs = {}
    if "disable_dynamic" in inspect.signature(comfy_sd.load_diffusion_model).parameters:
        kwargs["disable_dynamic"] = True
    patcher = comfy_sd.load_diffusion_model(path, model_options=options, **kwargs)
    if getattr(patcher, "is_dynamic", lambda: False)():
        patcher = patcher.get_non_dynamic_delegate()
    return patcher


def load_base(config: TrainConfig, device: torch.device):
    """The base through ``comfy.sd.load_diffusion_model``, frozen; returns (patcher, arch). With
    ``mode: base`` its weights load in fp32 (the optimizer's master weights; bf16 is then autocast)."""
    from ..comfy_runtime import import_comfy

    import_comfy(config.comfyui_dir, cpu=True if device.type == "cpu" else None)
    import comfy.sd

    bf16_weights = config.precision == "bf16" and config.mode == "adapter"
    options = {"dtype": torch.bfloat16} if bf16_weights else {"dtype": torch.float32}
    try:
        patcher = _load_resident(comfy.sd, config.base_model, options)
    except RuntimeError as exc:
        raise IncompatibleBaseModelError(f"base_model {config.base_model}: ComfyUI could not load it ({exc})") from None
    base = patcher.model
    config_name = type(base.model_config).__name__
    try:
        arch = detect_architecture(base.diffusion_model, config_name)
    except UnsupportedModelError as exc:
        raise IncompatibleBaseModelError(f"base_model {config.base_model}: {exc}") from None
    is_wan_t2v = arch.family == "wan" and config_name in PLAIN_WAN_T2V_CONFIGS
    if arch.family == "wan" and not is_wan_t2v:
        raise IncompatibleBaseModelError(
            f"base_model {config.base_model} is {arch.variant}. {VARIANT_TRAINING_NOTE}")
    if config.mode == "adapter" and arch.family == "hunyuan_video":
        raise IncompatibleBaseModelError(
            f"base_model {config.base_model} is {arch.variant}, which also needs the CLIP-L pooled text vector that "
            "prepared datasets do not store. Adapters train on Wan T2V, LTX-Video, LTX-2 and HunyuanVideo 1.5.")
    # Adapters train on every family IaD Apply patches (HunyuanVideo 1.0 refused above); the model itself on Wan T2V.
    if not (is_wan_t2v or (config.mode == "adapter" and arch.family != "wan")):
        raise IncompatibleBaseModelError(
            f"base_model {config.base_model} is {arch.variant}; mode '{config.mode}' trains Wan 2.1/2.2 text-to-video "
            "models (the T2V model of the size you will use, e.g. wan2.1_t2v_1.3B or 14B). Adapters (mode 'adapter') "
            "train on Wan T2V, LTX-Video, LTX-2 and HunyuanVideo 1.5.")
    if config.gradient_checkpointing and arch.family != "wan":
        raise IncompatibleBaseModelError(
            f"gradient_checkpointing is implemented for Wan; base_model {config.base_model} is {arch.variant}. "
            "Set gradient_checkpointing: false (or lower batch_size / the clip size to fit memory).")
    if type(base.model_sampling).__name__.find("Flow") < 0 and not hasattr(base.model_sampling, "shift"):
        raise IncompatibleBaseModelError(f"base_model {config.base_model} is not a flow-matching model")
    base.requires_grad_(False)
    base.eval()
    return patcher, arch


# The default identity layout (docs/training.md, "Adapter size"): identity tokens a sixth of the
# base's width (a multiple of 64), so every block's identity K/V projection is a sixth of a square
# one, and a resampler with a 1x feed-forward (its width, depth and heads, which carry the identity,
# unchanged). Wan 2.1 1.3B: 69.9 M parameters, 4.9 % of the base; 14B: 388 M, 2.7 % (the layout
# before: 16.1 % and 6.5 %), by benchmarks/bench_adapter_memory.py --sizes-only. In the synthetic
# world's experiment the same cuts keep IaD's identity and copy rate (+0.4 and +0.4 points, paired);
# an adapter without a decoupler (naive injection) loses 9.3 points of identity there.
TOKEN_WIDTH_DIVISOR = 6
RESAMPLER_FF_MULT = 1.0


def default_token_dim(model_dim: int) -> int:
    """Identity-token width of the default layout: ``model_dim / 6`` rounded down to a multiple of 64
    (at least 64, at most ``model_dim``)."""
    return min(model_dim, max(64, model_dim // TOKEN_WIDTH_DIVISOR // 64 * 64))


def default_adapter_fields(model_dim: int) -> dict:
    """The layout fields ``adapter_config_for`` fills in when a config's ``adapter:`` leaves them out."""
    return {"token_dim": default_token_dim(model_dim), "resampler_ff_mult": RESAMPLER_FF_MULT}


def wide_adapter_fields(model_dim: int) -> dict:
    """The layout that was the default before (``adapter:`` fields of a training config): tokens
    min(width, 2048) wide and a 4x resampler feed-forward, 3.3x the default's parameters on 1.3B.
    No gain for IaD in the synthetic world; an adapter without a decoupler keeps more identity with
    it (docs/training.md, "Adapter size")."""
    return {"token_dim": min(model_dim, 2048), "resampler_ff_mult": 4.0}


def adapter_config_for(config: TrainConfig, arch, embedder: str | None) -> AdapterConfig:
    fields = dict(config.adapter)
    fields.setdefault("family", {"wan": "wan2.1"}.get(arch.family, arch.family))
    fields.setdefault("model_dim", arch.model_dim)
    fields.setdefault("blocks", list(range(arch.num_blocks)))
    for name, value in default_adapter_fields(arch.model_dim).items():
        fields.setdefault(name, value)
    fields.setdefault("decoupler_kind", "trained")
    if embedder:
        fields.setdefault("embedder", embedder)
    try:
        adapter_config = AdapterConfig.from_dict(fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"adapter: {exc}") from None
    try:
        check_adapter_fits(arch, adapter_config, "the adapter configured in 'adapter'")
    except UnsupportedModelError as exc:
        raise IncompatibleBaseModelError(str(exc)) from None
    if embedder and adapter_config.embedder != embedder:
        raise ConfigError(f"adapter.embedder is {adapter_config.embedder!r} but the dataset's face embeddings come from "
                          f"{embedder!r}; remove adapter.embedder or re-prepare the data with that recognizer.")
    return adapter_config


def install_patches(patcher, arch, adapter: IdentityAdapter | None, gradient_checkpointing: bool, weight: float = 1.0):
    """A clone of ``patcher`` with the family's IaD Apply patch on every adapter block, driven by a
    ``TrainingEntry`` (none when the base itself trains), and activation checkpointing (Wan)."""
    patched = patcher.clone()
    diffusion_model = patched.model.diffusion_model
    if gradient_checkpointing:   # first: a HunyuanVideo identity patch would wrap it as its inner block
        for i in range(arch.num_blocks):
            patched.set_model_patch_replace(CheckpointedBlock(diffusion_model.blocks[i], i), "dit", "double_block", i)
    if adapter is not None:
        FAMILY_PATCHES[arch.family](patched, arch, adapter.config.blocks, TrainingEntry(adapter, weight))
    return patched


def select_trainable(model: nn.Module, patterns: list[str], base_model: str, exclude: list[str] = (),
                     key: str = "trainable") -> list[str]:
    """Mark the parameters whose names match a glob in ``patterns`` (and none in ``exclude``)
    trainable, the rest frozen; returns their names. Refuses a selection that matches nothing or
    weights stored in a format that cannot train (fp8 and other quantised files: the optimizer
    needs float weights). ``key``: the config key named in errors."""
    import fnmatch

    model.requires_grad_(False)
    chosen = []
    for name, p in model.named_parameters():
        if (any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
                and not any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)):
            if not p.dtype.is_floating_point or p.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                raise IncompatibleBaseModelError(
                    f"base_model {base_model}: parameter {name} is stored as {p.dtype}; training the base needs a "
                    "bf16/fp16/fp32 file (not an fp8 or otherwise quantised one)")
            p.requires_grad_(True)
            chosen.append(name)
    if not chosen:
        names = [n for n, _ in model.named_parameters()]
        minus = f" minus {list(exclude)}" if exclude else ""
        raise ConfigError(f"{key} {patterns}{minus} matches none of the model's {len(names)} parameters "
                          f"(they are named like {names[0]!r}, {names[len(names) // 2]!r}); fix the patterns")
    return chosen


def base_delta_key(name: str) -> str:
    """The key of a base parameter's change in ComfyUI's LoRA format (``comfy.lora.load_lora``'s
    ``.diff`` / ``.diff_b`` entries): LoraLoaderModelOnly adds it to the model's weight as a patch."""
    if name.endswith(".weight"):
        return f"diffusion_model.{name[:-len('.weight')]}.diff"
    if name.endswith(".bias"):
        return f"diffusion_model.{name[:-len('.bias')]}.diff_b"
    return f"diffusion_model.{name}.diff"
