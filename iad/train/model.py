"""The frozen base model (loaded through ComfyUI), the training patch, and the training objective.

The identity enters the base model exactly as at inference: the family's own IaD Apply patch
(``iad/patching/``: Wan's and LTX's text cross-attention, HunyuanVideo (1.5)'s residual identity
attention) on a ModelPatcher *clone*, with a ``TrainingEntry`` in place of the inference entry. The
only difference: identity K/V are recomputed (with gradients) from the current tokens on every call,
passed in ``transformer_options["iad_train"]``. The model is called as ComfyUI's samplers call it:
``apply_model`` with the conditioning the model's own ``extra_conds`` builds (LTX-2 runs its text
connectors there, HunyuanVideo 1.5 gets its image-condition channels). Gradient checkpointing (Wan)
uses ComfyUI's own ``patches_replace["dit"]`` block replacement. ComfyUI is imported lazily.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import AdapterConfig, IdentityAdapter
from ..comfy_runtime import training_forward, training_mode
from ..decoupling import Decoupler
from ..losses import (ActionTextProjector, identity_consistency_reward, identity_decoupling_loss,
                      prompt_following_loss, sample_frame_indices, semantic_consistency_reward, text_alignment_loss)
from ..patching.apply import FAMILY_PATCHES
from ..patching.arch import UnsupportedModelError, check_adapter_fits, detect_architecture
from .config import ConfigError, TrainConfig
from .data import pad_text, sample_generator

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


# Families whose ComfyUI blocks update their hidden states in place after an op saved them for
# backward (LTX's ``x.addcmul_``/``vx.add_``, HunyuanVideo's ``img += ...`` after its norms): harmless
# at inference, but once the identity makes those states require gradients autograd refuses them.
IN_PLACE_BLOCK_FAMILIES = ("ltxv", "ltx2", "hunyuan_video15")


@contextlib.contextmanager
def saved_activation_copies():
    """Within the block: autograd saves a copy of each activation instead of the tensor itself, so a
    later in-place update inside ComfyUI's block cannot change what backward reads. Parameters
    (the frozen weights, the bulk of what is saved) are never copied. Scoped to one model call; no
    module is patched."""
    def pack(t):
        return t if isinstance(t, nn.Parameter) else t.clone()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def shifted_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """ComfyUI's ``time_snr_shift``: the sigma of flow time ``u`` under ``shift``."""
    return u if shift == 1.0 else shift * u / (1 + (shift - 1) * u)


class FlowObjective(nn.Module):
    """What both training modes share: the base model's flow-matching objective as ComfyUI computes
    it (``apply_model`` of the patched clone), seeded sigmas and noise, caption dropout."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self._runtime: dict = {}

    def attach(self, patched, base_patcher, shift: float, gather=None, prompt_bank=None, icr=None, family: str = "wan") -> None:
        self._runtime = {"patched": patched, "base": base_patcher, "shift": shift, "gather": gather, "family": family,
                         "prompt_bank": prompt_bank, "icr": icr}

    def _model_call(self, x_t, sigma, context, tokens):
        patched = self._runtime["patched"]
        options = dict(patched.model_options.get("transformer_options", {}))
        if tokens is not None:
            options[TRAIN_KEY] = {"adapter": self.adapter, "tokens": tokens, "weight": self.config.identity_weight}
        # bf16: only the base-model call runs under autocast; the decoupler, resampler and losses stay fp32.
        autocast = (torch.autocast(x_t.device.type, dtype=torch.bfloat16) if self.config.precision == "bf16"
                    else contextlib.nullcontext())
        copies = (saved_activation_copies() if self._runtime["family"] in IN_PLACE_BLOCK_FAMILIES and torch.is_grad_enabled()
                  else contextlib.nullcontext())
        with autocast, copies:
            denoised = patched.model.apply_model(x_t, sigma, transformer_options=options, **self._conds(x_t, context))
        return (x_t - denoised.to(x_t.dtype)) / sigma.view(-1, *([1] * (x_t.dim() - 1)))   # velocity

    def _conds(self, x_t: torch.Tensor, context: torch.Tensor) -> dict:
        """The model inputs ComfyUI's sampler would give for this text: the model's own
        ``extra_conds`` (Wan T2V: the text only; LTX-2: its text connectors' output and frame rate;
        HunyuanVideo 1.5: the empty image-condition channels and guidance), batched as the sampler does."""
        base = self._runtime["patched"].model
        # One sample at a time, then batched with the conds' own concat, as the sampler batches
        # conditionings (LTX-2's text connectors take one prompt per call). ``latent_shapes`` as the
        # v0.2x sampler passes it (LTX-2 unpacks its input by it); older ComfyUI ignores it.
        extra = {}
        if self._runtime["family"] == "ltxv":
            # LTX-Video takes T5's attention mask; captions are zero-padded, so the mask is their non-zero rows.
            extra["attention_mask"] = (context.abs().sum(-1) != 0).long()
        rows = [{name: cond.process_cond(batch_size=1, area=None) for name, cond in
                 base.extra_conds(noise=x_t[i:i + 1], cross_attn=context[i:i + 1], device=x_t.device, pooled_output=None,
                                  latent_shapes=[x_t.shape], **{k: v[i:i + 1] for k, v in extra.items()}).items()}
                for i in range(x_t.shape[0])]
        return {name: cond.concat([row[name] for row in rows[1:]]) for name, cond in rows[0].items()}

    def sample_sigma_noise(self, positions, step: int, shape, device) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.config.timesteps
        top = 1.0 - t.start_percent if t.late_steps_only else 1.0
        sigmas, noises = [], []
        for position in positions:
            g = sample_generator(self.config.seed, 0, position, salt=2)
            u = torch.rand((), generator=g) * top
            sigmas.append(shifted_sigma(u, self._runtime["shift"]).clamp_min(t.min_sigma))
            noises.append(torch.randn(shape, generator=g))
        return torch.stack(sigmas).to(device), torch.stack(noises).to(device)

    def noised(self, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x0, noise, sigma, x_t, context) of a batch: ComfyUI's flow convention
        ``x_t = sigma * noise + (1 - sigma) * x0`` on the model's own latent format."""
        x0 = self._runtime["patched"].model.process_latent_in(batch["latents"].to(device))
        sigma, noise = self.sample_sigma_noise(batch["positions"], 0, x0.shape[1:], device)
        x_t = sigma.view(-1, 1, 1, 1, 1) * noise + (1 - sigma.view(-1, 1, 1, 1, 1)) * x0
        context = batch["context"].to(device)
        if self.config.caption_dropout > 0:
            context = self._drop_captions(context, batch["positions"])
        return x0, noise, sigma, x_t, context

    def _drop_captions(self, context: torch.Tensor, positions: list[int]) -> torch.Tensor:
        """Caption dropout: each sample, with probability ``caption_dropout`` (seeded by its position),
        trains with the empty caption (the prompt bank's null text, what ComfyUI's negative "" gives),
        as text-to-video models are trained for classifier-free guidance. Only the identity (if any)
        then conditions the sample. The padded length does not depend on which samples drop."""
        null = self._runtime["prompt_bank"][2]
        dropped = [float(torch.rand((), generator=sample_generator(self.config.seed, 0, position, salt=5)))
                   < self.config.caption_dropout for position in positions]
        texts = [null if drop else row for row, drop in zip(context.cpu(), dropped)]
        return pad_text(texts, max(context.shape[1], null.shape[0])).to(context)


class BaseTrainable(FlowObjective):
    """``mode: base``: the base model's own parameters (those ``trainable`` selects) with its
    flow-matching loss and no identity -- pre-training or fine-tuning a (tiny or real) Wan T2V model.
    The diffusion model is a submodule here, so the optimizer, DDP and FSDP see its parameters; it is
    still run through the ModelPatcher clone, exactly as a workflow runs it."""

    def __init__(self, diffusion_model: nn.Module, config: TrainConfig):
        super().__init__(config)
        self.diffusion_model = diffusion_model

    @training_forward
    def forward(self, batch: dict, step: int, with_extras: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = next(self.diffusion_model.parameters()).device
        x0, noise, sigma, x_t, context = self.noised(batch, device)
        v_pred = self._model_call(x_t, sigma, context, None)
        diffusion = (v_pred.float() - (noise - x0).float()).pow(2).flatten(1).mean(1).mean()
        total = self.config.losses.diffusion * diffusion
        return total, {"diffusion": diffusion, "total": total}


def load_vae(config: TrainConfig, device: torch.device):
    """``mode: vae``: the Wan VAE through ComfyUI's own VAE loader (what *Load VAE* builds), its
    module in fp32 master weights; returns (module, latent_format)."""
    from ..comfy_runtime import import_comfy

    import_comfy(config.comfyui_dir, cpu=True if device.type == "cpu" else None)
    import comfy.latent_formats

    from ..prepare.encoders import ComfyVAE

    try:
        vae = ComfyVAE(config.base_model, config.comfyui_dir).vae
    except Exception as exc:   # ComfyUI raises several kinds for a file that is not a VAE
        raise IncompatibleBaseModelError(
            f"base_model {config.base_model}: ComfyUI could not load it as a VAE ({exc})") from None
    module = vae.first_stage_model
    if type(module).__module__.split(".")[-2:-1] != ["wan"]:
        raise IncompatibleBaseModelError(
            f"base_model {config.base_model} is a {type(module).__module__}.{type(module).__name__}; mode 'vae' trains "
            "Wan 2.1/2.2 VAEs (ComfyUI/models/vae/wan_2.1_vae.safetensors or wan2.2_vae.safetensors)")
    channels = getattr(module, "z_dim", 16)
    latent_format = comfy.latent_formats.Wan22() if channels == 48 else comfy.latent_formats.Wan21()
    module.float().to(device).requires_grad_(False)
    module.eval()
    return module, latent_format


class VAETrainable(nn.Module):
    """``mode: vae``: the Wan VAE's parameters (those ``trainable`` selects). The decoder learns to
    turn a clip's latents into its frames (pixel MSE, ComfyUI's [-1, 1] VAE space) and the encoder
    to turn the frames into the latents (MSE in the model's whitened latent space, where every
    channel has unit scale), on windows of ``vae.window`` latent frames."""

    def __init__(self, vae: nn.Module, latent_format, config: TrainConfig):
        super().__init__()
        self.vae = vae
        self.latent_format = latent_format
        self.config = config
        self._runtime: dict = {"gather": None}   # (nothing to gather: no batch-level terms)

    def windows(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw latents [B, C, w, h, w], video [B, 3, s(w-1)+1, H, W] in [-1, 1]) of each sample's window."""
        cfg = self.config.vae
        latents, pixels = batch["latents"], batch["pixels"]       # [B, C, T', h, w], [B, T, H, W, 3] uint8
        frames, latent_frames = pixels.shape[1], latents.shape[2]
        stride = (frames - 1) // (latent_frames - 1) if latent_frames > 1 else 1
        if latent_frames > 1 and stride * (latent_frames - 1) + 1 != frames:
            raise ValueError(f"{frames} stored frames do not match {latent_frames} latent frames (expected "
                             f"{stride}k+1); re-prepare the dataset with store_pixels: true")
        size = cfg.window if 0 < cfg.window < latent_frames else latent_frames
        lat, vid = [], []
        for b, position in enumerate(batch["positions"]):
            start = 0
            if cfg.random_start and size < latent_frames:
                g = sample_generator(self.config.seed, 0, position, salt=6)
                start = int(torch.randint(latent_frames - size + 1, (1,), generator=g))
            lat.append(latents[b, :, start:start + size])
            vid.append(pixels[b, stride * start: stride * (start + size - 1) + 1])
        video = torch.stack(vid).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        return torch.stack(lat).float(), video

    @training_forward
    def forward(self, batch: dict, step: int, with_extras: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config.vae
        device = next(self.vae.parameters()).device
        latents, video = (t.to(device) for t in self.windows(batch))
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if self.config.precision == "bf16"
                    else contextlib.nullcontext())
        parts: dict[str, torch.Tensor] = {}
        with autocast:
            if cfg.decode > 0:
                parts["vae_decode"] = F.mse_loss(self.vae.decode(latents).float(), video)
            if cfg.encode > 0:
                encoded = self.vae.encode(video).float()
                parts["vae_encode"] = F.mse_loss(self.latent_format.process_in(encoded),
                                                  self.latent_format.process_in(latents))
        total = cfg.decode * parts.get("vae_decode", 0.0) + cfg.encode * parts.get("vae_encode", 0.0)
        parts["total"] = total
        return total, parts


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


class IaDTrainable(FlowObjective):
    """The trained parameters (adapter: decoupler + resampler + K/V; the TAL projector) and the
    objective. The frozen base is held outside the module tree, so DDP/FSDP see only these."""

    def __init__(self, adapter: IdentityAdapter, config: TrainConfig, text_dim: int = 4096):
        super().__init__(config)
        self.adapter = adapter
        self.base_model = None          # the diffusion model, when base_trainable trains part of it (attach_base)
        self.projector = (ActionTextProjector(adapter.config.decoupler_act_dim, text_dim)
                          if isinstance(adapter.decoupler, Decoupler) else None)

    def attach_base(self, diffusion_model: nn.Module) -> None:
        """Make the base's diffusion model a submodule, so that the optimizer, DDP and the training
        state see the base parameters ``base_trainable`` selected (the rest stay frozen)."""
        self.base_model = diffusion_model

    def identity_tokens(self, references: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.adapter.identity_embedding(r) for r in references])  # decoupler.fuse, as IaD Identity does
        return self.adapter.identity_tokens(z)

    # -- the objective ---------------------------------------------------------------------------
    @training_forward
    def forward(self, batch: dict, step: int, with_extras: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.config.losses
        device = next(self.adapter.parameters()).device
        base = self._runtime["patched"].model
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=device)

        x0, noise, sigma, x_t, context = self.noised(batch, device)
        tokens = self.identity_tokens(batch["references"].to(device))
        v_pred = self._model_call(x_t, sigma, context, tokens)
        per_sample = (v_pred.float() - (noise - x0).float()).pow(2).flatten(1).mean(1)
        parts["diffusion"] = per_sample.mean()
        total = total + w.diffusion * parts["diffusion"]

        if self.projector is not None and (w.identity_decoupling > 0 or w.text_alignment > 0):
            gather = self._runtime["gather"] or (lambda t: t)
            e = gather(batch["frame_embeddings"].to(device))
            persons = gather(batch["frame_person"].to(device))
            actions = gather(batch["frame_action"].to(device))
            action_text = gather(batch["frame_action_text"].to(device))
            z_id, z_act = self.adapter.decoupler(e)
            recon = self.adapter.decoupler.reconstruct(z_id, z_act)
            idl = identity_decoupling_loss(z_id, z_act, persons, e, recon, temperature=w.temperature,
                                           w_decorrelation=w.decorrelation, w_reconstruction=w.reconstruction)
            parts.update(idl.parts)
            parts["identity_decoupling"] = idl.total
            a, t = self.projector(z_act, action_text)
            parts["text_alignment"] = text_alignment_loss(a, t, actions, w.temperature)
            total = total + w.identity_decoupling * idl.total + w.text_alignment * parts["text_alignment"]

        if with_extras and w.prompt_following.weight > 0 and step % w.prompt_following.every == 0:
            parts["prompt_following"] = self._prompt_following(batch, step, x_t, sigma, tokens, device)
            total = total + w.prompt_following.weight * parts["prompt_following"]
        if with_extras and w.scr.weight > 0 and step % w.scr.every == 0:
            with torch.no_grad():
                v_frozen = self._model_call(x_t, sigma, context, None)
            target = (noise - x0).float()
            frame_scores = lambda v: -(v.float() - target).pow(2).mean(dim=(1, 3, 4))   # noqa: E731  [B, T']
            parts["scr"] = semantic_consistency_reward(frame_scores(v_frozen), frame_scores(v_pred), w.scr.temperature)
            total = total + w.scr.weight * parts["scr"]
        if with_extras and w.icr.weight > 0 and step % w.icr.every == 0:
            s = sigma.view(-1, 1, 1, 1, 1)
            x0_pred = x_t - s * v_pred
            parts["icr"] = self._icr(batch, step, base.process_latent_out(x0_pred), device)
            total = total + w.icr.weight * parts["icr"]
        parts["total"] = total
        return total, parts

    def _prompt_following(self, batch, step, x_t, sigma, tokens, device) -> torch.Tensor:
        """Simulated prompt augmentation: prompts from the bank (or the caption) must steer the model
        the same with and without the identity (docs/training.md, L_PF)."""
        prompts, bank, null = self._runtime["prompt_bank"]
        pf = self.config.losses.prompt_following
        texts = []
        for i, position in enumerate(batch["positions"]):
            g = sample_generator(self.config.seed, 0, position, salt=3)
            if float(torch.rand((), generator=g)) < pf.bank_probability:
                texts.append(bank[int(torch.randint(len(bank), (1,), generator=g))])
            else:
                texts.append(batch["context"][i])
        length = max(t.shape[0] for t in bank + [null, batch["context"][0]])   # fixed: independent of the batch
        prompt = pad_text(texts, length).to(device)
        nulls = pad_text([null] * len(texts), length).to(device)
        text_id = self._model_call(x_t, sigma, prompt, tokens)
        null_id = self._model_call(x_t, sigma, nulls, tokens)
        with torch.no_grad():
            text_base = self._model_call(x_t, sigma, prompt, None)
            null_base = self._model_call(x_t, sigma, nulls, None)
        return prompt_following_loss(text_id, null_id, text_base, null_base)

    def _icr(self, batch, step, latent_pred, device) -> torch.Tensor:
        """PersonalVideo ICR: decode the predicted clean latent with the Wan VAE, crop the face at the
        target's tracked box, embed with a differentiable recognizer, compare with the reference."""
        vae, recognizer = self._runtime["icr"]
        pixels = vae.first_stage_model.decode(latent_pred.to(next(vae.first_stage_model.parameters()).dtype))
        pixels = pixels.float().clamp(-1, 1)                      # [B, 3, T, H, W]
        crops, refs, valid = [], [], []
        boxes_all = batch["target_boxes"]
        for b in range(pixels.shape[0]):
            boxes = boxes_all[b]
            g = sample_generator(self.config.seed, 0, batch["positions"][b], salt=4)
            for f in sample_frame_indices(boxes.shape[0], self.config.losses.icr.frames, g).tolist():
                f_pix = min(f, pixels.shape[2] - 1) if boxes.shape[0] == pixels.shape[2] else round(f * (pixels.shape[2] - 1) / max(boxes.shape[0] - 1, 1))
                box = boxes[f]
                ok = bool(torch.isfinite(box).all())
                crops.append(_crop_face(pixels[b, :, f_pix], box if ok else None))
                valid.append(ok)
            refs.append(batch["reference_crops"][b])
        frame_emb = recognizer(torch.stack(crops))                # RGB [-1, 1] -> unit embeddings
        ref = torch.stack(refs).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            ref_emb = recognizer(F.interpolate(ref, size=(112, 112), mode="bilinear", align_corners=False))
        return identity_consistency_reward(ref_emb, frame_emb, torch.tensor(valid, device=device))


def _crop_face(image: torch.Tensor, box: torch.Tensor | None, size: int = 112) -> torch.Tensor:
    """A square crop around ``box`` (1.2x, clamped to the frame) resized to ``size`` (differentiable)."""
    _, h, w = image.shape
    if box is None:
        region = image
    else:
        x1, y1, x2, y2 = (float(v) for v in box)
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 0.6 * max(x2 - x1, y2 - y1)
        left, top = int(max(0, cx - half)), int(max(0, cy - half))
        right, bottom = int(min(w, cx + half)), int(min(h, cy + half))
        region = image[:, top:max(bottom, top + 1), left:max(right, left + 1)]
    return F.interpolate(region[None], size=(size, size), mode="bilinear", align_corners=False)[0]


class TorchRecognizer(nn.Module):
    """IR-SE50 as the differentiable recognizer for ICR: RGB [-1, 1] crops -> unit embeddings."""

    def __init__(self, path: str):
        super().__init__()
        from ..recognizers import load_irse50

        self.net = load_irse50(path)
        self.net.requires_grad_(False)
        self.net.eval()

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        net = getattr(self.net, "net", self.net)
        return F.normalize(net(rgb.flip(1)).float(), dim=-1)   # IR-SE50 takes BGR
