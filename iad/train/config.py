"""Training configuration: a JSON (or TOML) file validated into dataclasses with clear errors.

Every section and key is checked: unknown keys are refused with the closest known name, paths
must exist, values must be in range. Whether the base model fits (a Wan T2V model whose width
matches the adapter) is checked when the model is loaded (``iad.train.base_model.load_base``).
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """An invalid training configuration; the message names the key and how to fix it."""


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    decay: str = "none"                 # after warmup: none (constant lr) | cosine (to min_lr_ratio * lr at the last step)
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0              # max global gradient norm (0: off)
    base_lr: float | None = None        # mode adapter with base_trainable: peak lr of the base's parameters (None: lr)


@dataclass
class PromptFollowingConfig:
    weight: float = 0.0                 # lambda_pf; 0 disables the term and its extra forward passes
    every: int = 1                      # compute it every n-th step (it costs 3 extra model calls)
    bank_probability: float = 1.0       # chance that the prompt is drawn from the prompt bank (else the caption)


@dataclass
class ICRConfig:
    weight: float = 0.0                 # PersonalVideo Identity Consistency Reward (needs vae + recognizer)
    vae: str | None = None              # Wan VAE file: decodes the predicted clean latent
    recognizer: str | None = None       # IR-SE50 weights (facexlib) as the differentiable recognizer
    frames: int = 2                     # decoded frames sampled per clip
    every: int = 1


@dataclass
class SCRConfig:
    weight: float = 0.0                 # PersonalVideo Semantic Consistency Reward against the frozen model
    temperature: float = 1.0
    every: int = 1


@dataclass
class LossConfig:
    diffusion: float = 1.0              # the base model's own flow-matching loss, adapter active
    identity_decoupling: float = 0.1    # IDL on the decoupler (InfoNCE + decorrelation + reconstruction)
    text_alignment: float = 0.1         # TAL between z_act and the action phrase embedding
    temperature: float = 0.1
    decorrelation: float = 1.0
    reconstruction: float = 1.0
    prompt_following: PromptFollowingConfig = field(default_factory=PromptFollowingConfig)
    icr: ICRConfig = field(default_factory=ICRConfig)
    scr: SCRConfig = field(default_factory=SCRConfig)


@dataclass
class TimestepConfig:
    shift: float | None = None          # None: the base model's own sampling shift
    late_steps_only: bool = False       # train (and later apply) the identity only late in denoising
    start_percent: float = 0.75         # with late_steps_only: sigma <= percent_to_sigma(start_percent); IaD Apply's default
    min_sigma: float = 0.002


@dataclass
class DistributedConfig:
    strategy: str = "auto"              # auto (ddp under torchrun, else none) | none | ddp | fsdp
    backend: str = "auto"               # auto (nccl on CUDA, else gloo) | nccl | gloo
    fsdp_shard_base: bool = False       # FSDP: also shard the frozen base model's blocks


@dataclass
class VAETrainConfig:
    decode: float = 1.0                 # pixel MSE of decode(latents) against the clip's frames
    encode: float = 1.0                 # MSE of encode(frames) against the latents, in the model's whitened latent space
    window: int = 0                     # latent frames per training window (0: the whole clip)
    random_start: bool = False          # windows anywhere in the clip (only where every latent frame stands alone)


@dataclass
class TrainConfig:
    base_model: str                     # Wan diffusion model file (ComfyUI/models/diffusion_models); mode vae: the Wan VAE file
    data: str                           # folder written by python -m iad.prepare
    output_dir: str                     # checkpoints, logs, training state
    mode: str = "adapter"               # adapter: an IaD adapter on the frozen base | base: the base model itself | vae: the VAE
    trainable: list[str] = field(default_factory=lambda: ["*"])   # modes base/vae: glob patterns of the parameter names to train
    # mode adapter: base parameters trained jointly with the adapter (globs, e.g. ["blocks.*.cross_attn.*"]), minus
    # base_frozen; saved as a base-delta file that ComfyUI's LoraLoaderModelOnly applies (docs/training.md)
    base_trainable: list[str] = field(default_factory=list)
    base_frozen: list[str] = field(default_factory=list)
    vae: VAETrainConfig = field(default_factory=VAETrainConfig)   # mode vae: the objective
    adapter: dict = field(default_factory=dict)    # AdapterConfig fields; family/model_dim/blocks default to the base
    init_from: str | None = None        # start from an existing IaD adapter checkpoint
    name: str = "iad-adapter"           # checkpoint file prefix
    steps: int = 1000
    batch_size: int = 1                 # per process
    grad_accum: int = 1
    num_references: int = 2             # reference embeddings fused into z_id per sample
    identity_weight: float = 1.0        # the patch weight during training (IaD Apply's 'weight')
    caption_dropout: float = 0.0        # share of samples trained with the empty caption (the prompt bank's null text)
    seed: int = 0
    precision: str = "fp32"             # fp32 | bf16 (base weights and autocast; adapter master weights fp32)
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    cpu_threads: int = 0                # torch intra-op threads (0: torch's default); 1 is fastest for tiny models
    data_in_memory: str | bool = "auto"  # read the training tensors into memory once: true | false | auto (<= 2 GiB)
    gradient_checkpointing: bool = False
    log_every: int = 10
    eval_every: int = 0                 # fixed-noise evaluation loss every n steps (0: start and end only)
    checkpoint_every: int = 500
    keep_checkpoints: int = 3           # adapter checkpoints kept (the newest); 0 keeps all
    save_dtype: str = "float32"         # dtype of the adapter checkpoint: float32 | bfloat16 | float16
    resume: str | bool = "auto"         # auto: newest state in output_dir | false | a state file
    comfyui_dir: str | None = None
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    timesteps: TimestepConfig = field(default_factory=TimestepConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'the config'} must be an object/table, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown key '{where}{key}'{hint}")
    kwargs = {}
    for name, f in known.items():
        if name not in data:
            continue
        value = data[name]
        default = f.default_factory() if f.default_factory is not Any and callable(f.default_factory) else None  # type: ignore[misc]
        if is_dataclass(default):
            value = _build(type(default), value, f"{where}{name}.")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        missing = [n for n, f in known.items() if n not in data and f.default is f.default_factory]  # noqa: E721
        raise ConfigError(f"{where or 'config'}: missing required key(s) {missing or ''} ({exc})") from None


def _non_finite(obj, prefix: str = "") -> list[str]:
    """Every number in the config (loss weights, learning rates, betas, ...) that is NaN or infinite,
    by its dotted name: one would silently poison the whole run."""
    out = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if is_dataclass(value):
            out += _non_finite(value, f"{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            out.append(f"{name} is {value!r}; it must be a finite number")
        elif isinstance(value, (list, tuple)):
            out += [f"{name}[{i}] is {v!r}; it must be a finite number" for i, v in enumerate(value)
                    if isinstance(v, float) and not math.isfinite(v)]
    return out


def _check(config: TrainConfig, check_paths: bool) -> None:
    problems: list[str] = _non_finite(config)

    def need(cond: bool, message: str) -> None:
        if not cond:
            problems.append(message)

    c = config
    need(c.mode in ("adapter", "base", "vae"), f"mode must be 'adapter' (train an IaD adapter), 'base' (the base "
                                               f"model itself) or 'vae' (the Wan VAE), got {c.mode!r}")
    need(isinstance(c.trainable, list) and bool(c.trainable) and all(isinstance(t, str) and t for t in c.trainable),
         f"trainable must be a non-empty list of parameter-name patterns such as [\"*\"] or [\"blocks.*.cross_attn.*\"], "
         f"got {c.trainable!r}")
    if c.mode in ("base", "vae"):
        # the adapter's losses and settings have nothing to act on when the model itself trains
        for name in ("prompt_following", "icr", "scr"):
            need(getattr(c.losses, name).weight == 0, f"losses.{name} trains an identity adapter; set its weight to 0 "
                                                      f"with mode '{c.mode}' (or use mode 'adapter')")
        need(not c.init_from, f"init_from loads an IaD adapter; with mode '{c.mode}' training starts from base_model's "
                              "weights (to continue a run, use resume)")
        need(not c.timesteps.late_steps_only, "timesteps.late_steps_only is an identity-injection setting; "
                                              f"it does not apply to mode '{c.mode}'")
        need(not c.base_trainable and not c.base_frozen,
             f"base_trainable/base_frozen choose base parameters to train *with an adapter*; with mode '{c.mode}' "
             "use trainable (and leave those two empty)")
        need(c.optimizer.base_lr is None, f"optimizer.base_lr is the base's learning rate next to an adapter's; with "
                                          f"mode '{c.mode}' optimizer.lr is the model's")
    elif c.trainable != ["*"]:
        need(False, "trainable selects the parameters of the model itself and needs mode 'base' or 'vae'; to train "
                    "base parameters jointly with the adapter, use base_trainable (globs such as "
                    "[\"blocks.*.cross_attn.*\"]) and optimizer.base_lr")
    for key in ("base_trainable", "base_frozen"):
        value = getattr(c, key)
        need(isinstance(value, list) and all(isinstance(t, str) and t for t in value),
             f"{key} must be a list of parameter-name patterns such as [\"blocks.*.cross_attn.*\"], got {value!r}")
    if c.base_frozen and not c.base_trainable:
        need(False, "base_frozen removes parameters from base_trainable, which is empty; set base_trainable too")
    if c.optimizer.base_lr is not None:
        need(isinstance(c.optimizer.base_lr, (int, float)) and math.isfinite(c.optimizer.base_lr) and c.optimizer.base_lr > 0,
             f"optimizer.base_lr must be a finite number > 0 (or null: the adapter's lr), got {c.optimizer.base_lr!r}")
        need(bool(c.base_trainable), "optimizer.base_lr is the learning rate of base_trainable's parameters, which "
                                     "is empty; set base_trainable or remove base_lr")
    if c.base_trainable:
        need(c.precision == "fp32", "base_trainable needs precision 'fp32': with 'bf16' the adapter mode loads the base "
                                    "in bf16, which cannot hold the optimizer's small updates to its weights")
        need(not c.distributed.fsdp_shard_base, "distributed.fsdp_shard_base shards the *frozen* base; it cannot be "
                                                "combined with base_trainable (use DDP, or train the adapter alone)")
    if c.mode == "vae":
        need(c.caption_dropout == 0, "caption_dropout does not apply to mode 'vae' (the VAE reads no text)")
        need(not c.gradient_checkpointing, "gradient_checkpointing is for the diffusion model; mode 'vae' does not "
                                           "support it (use a smaller vae.window or batch_size)")
        need(c.vae.decode >= 0 and c.vae.encode >= 0 and c.vae.decode + c.vae.encode > 0,
             "vae.decode and vae.encode must be >= 0, and not both 0")
        need(c.vae.window >= 0, f"vae.window must be >= 0 (latent frames; 0: the whole clip), got {c.vae.window}")
    need(c.steps >= 1, f"steps must be >= 1, got {c.steps}")
    need(c.batch_size >= 1, f"batch_size must be >= 1, got {c.batch_size}")
    need(c.grad_accum >= 1, f"grad_accum must be >= 1, got {c.grad_accum}")
    need(c.num_references >= 1, f"num_references must be >= 1, got {c.num_references}")
    need(0 <= c.caption_dropout <= 1, f"caption_dropout must be in [0, 1] (a share of samples), got {c.caption_dropout}")
    need(c.precision in ("fp32", "bf16"), f"precision must be 'fp32' or 'bf16', got {c.precision!r}")
    need(isinstance(c.data_in_memory, bool) or c.data_in_memory == "auto",
         f"data_in_memory must be true, false or \"auto\" (in memory when the training tensors take at most 2 GiB), "
         f"got {c.data_in_memory!r}")
    need(c.save_dtype in ("float32", "bfloat16", "float16"), f"save_dtype must be float32/bfloat16/float16, got {c.save_dtype!r}")
    need(c.log_every >= 1 and c.checkpoint_every >= 1 and c.eval_every >= 0 and c.keep_checkpoints >= 0,
         "log_every and checkpoint_every must be >= 1, eval_every and keep_checkpoints >= 0")
    need(c.optimizer.lr > 0, f"optimizer.lr must be > 0, got {c.optimizer.lr}")
    need(len(c.optimizer.betas) == 2, "optimizer.betas must be [beta1, beta2]")
    need(c.optimizer.decay in ("none", "cosine"), f"optimizer.decay must be 'none' or 'cosine', got {c.optimizer.decay!r}")
    need(0 <= c.optimizer.min_lr_ratio <= 1, f"optimizer.min_lr_ratio must be in [0, 1], got {c.optimizer.min_lr_ratio}")
    need(0 <= c.timesteps.start_percent < 1, "timesteps.start_percent must be in [0, 1)")
    need(c.distributed.strategy in ("auto", "none", "ddp", "fsdp"),
         f"distributed.strategy must be auto/none/ddp/fsdp, got {c.distributed.strategy!r}")
    need(c.distributed.backend in ("auto", "nccl", "gloo"), f"distributed.backend must be auto/nccl/gloo, got {c.distributed.backend!r}")
    for name in ("diffusion", "identity_decoupling", "text_alignment"):
        need(getattr(c.losses, name) >= 0, f"losses.{name} must be >= 0")
    for name in ("prompt_following", "icr", "scr"):
        sub = getattr(c.losses, name)
        need(sub.weight >= 0 and sub.every >= 1, f"losses.{name}: weight must be >= 0 and every >= 1")
    if c.losses.icr.weight > 0:
        need(bool(c.losses.icr.vae) and bool(c.losses.icr.recognizer),
             "losses.icr needs 'vae' (Wan VAE file) and 'recognizer' (IR-SE50 weights) when its weight is > 0")
    if isinstance(c.resume, str) and c.resume not in ("auto",):
        need(not check_paths or Path(c.resume).is_file(), f"resume: state file {c.resume!r} does not exist")
    if check_paths:
        need(Path(c.base_model).is_file(), f"base_model: {c.base_model!r} is not a file (" + (
            "the Wan VAE from ComfyUI/models/vae)" if c.mode == "vae" else
            "a Wan diffusion model from ComfyUI/models/diffusion_models)"))
        need((Path(c.data) / "dataset.json").is_file(), f"data: {c.data!r} is not a prepared dataset (no dataset.json); "
                                                        "create it with python -m iad.prepare")
        if c.init_from:
            need(Path(c.init_from).is_file(), f"init_from: {c.init_from!r} does not exist")
        for name in ("vae", "recognizer"):
            value = getattr(c.losses.icr, name)
            if c.losses.icr.weight > 0 and value:
                need(Path(value).is_file(), f"losses.icr.{name}: {value!r} does not exist")
    if problems:
        raise ConfigError("invalid training config: " + "; ".join(problems))


def load_config(source: str | os.PathLike | dict | TrainConfig, overrides: dict | None = None,
                check_paths: bool = True) -> TrainConfig:
    """A validated TrainConfig from a .json/.toml file, a dict, or a TrainConfig.
    Relative paths in a file are relative to the file's folder."""
    if isinstance(source, TrainConfig):
        data = source.to_dict()
        base = None
    elif isinstance(source, dict):
        data, base = dict(source), None
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".toml":
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {exc}") from None
        base = path.parent
    for key, value in (overrides or {}).items():   # "losses.icr.weight": 0.1
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    if base is not None:
        for key in ("base_model", "data", "output_dir", "init_from"):
            if isinstance(data.get(key), str) and not os.path.isabs(data[key]):
                data[key] = str((base / data[key]).resolve())
    config = _build(TrainConfig, data, "")
    _check(config, check_paths)
    return config
