"""The training loop: setup, steps with accumulation, logging, evaluation, checkpoints, resume."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..adapter import AdapterConfig, IdentityAdapter
from ..checkpoint import load_adapter, save_adapter
from . import distributed
from .config import ConfigError, TrainConfig, load_config
from .batches import BatchSource
from .data import PreparedDataset
from .base_model import adapter_config_for, install_patches, load_base, select_trainable
from .model import BaseTrainable, IaDTrainable
from .vae_training import VAETrainable, load_vae

log = logging.getLogger("iad.train")
STATE_FORMAT = "comfyui-iad-train-state"
EVAL_POSITION = 10**12   # sample numbers of the fixed evaluation batch (never used in training)


@dataclass
class TrainResult:
    output_dir: Path
    final_checkpoint: Path | None
    steps: int
    history: list[dict] = field(default_factory=list)      # one entry per logged step
    evals: list[dict] = field(default_factory=list)        # fixed-noise evaluation losses
    resumed_from: int = 0
    samples_per_second: float = 0.0
    peak_memory_bytes: int = 0     # CUDA: max_memory_allocated; CPU: the process's peak RSS


def _config_hash(config: TrainConfig) -> str:
    """What must not change across a resume (everything that shapes the run's math)."""
    d = config.to_dict()
    for key in ("steps", "resume", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "output_dir",
                "comfyui_dir", "device", "cpu_threads"):
        d.pop(key, None)
    d.pop("distributed", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _init_adapter(config: TrainConfig, adapter_config, device, embedder: str | None) -> IdentityAdapter:
    """A fresh adapter in ``adapter_config``'s layout, or ``init_from``'s adapter in its own layout:
    the fields ``adapter:`` sets explicitly must agree with it (the defaults do not apply to it)."""
    if config.init_from:
        adapter = load_adapter(config.init_from, expected_family=adapter_config.family,
                               expected_model_dim=adapter_config.model_dim).float()
        own = adapter.config.to_dict()
        conflicts = [f"adapter.{k} is {v!r}, init_from's is {own[k]!r}" for k, v in config.adapter.items()
                     if k not in ("name", "extra") and k in own and own[k] != v]
        if conflicts:
            raise ConfigError(f"init_from: {config.init_from} has another layout than 'adapter' asks for ("
                              + "; ".join(conflicts) + "). An init_from adapter keeps its own layout: remove those "
                              "adapter fields, or train a new adapter without init_from.")
        if embedder and adapter.config.embedder != embedder:
            raise ConfigError(f"init_from: {config.init_from} was trained on embeddings from {adapter.config.embedder!r}, "
                              f"but the dataset's come from {embedder!r}; re-prepare the data with that recognizer.")
        return adapter.train().to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        adapter = IdentityAdapter(adapter_config).zero_identity_values()
    return adapter.train().to(device)


def save_model_file(weights: dict[str, torch.Tensor], source: str, path: Path, dtype: torch.dtype,
                    trained: dict) -> Path:
    """The trained base model (or VAE) as a file in the layout of ``source`` (the same key names and
    prefix, its metadata kept), so ComfyUI's *Load Diffusion Model* / *Load VAE* read it exactly as
    they read the original."""
    from safetensors import safe_open

    from ..prepare.shards import atomic_save_tensors

    with safe_open(str(source), framework="pt", device="cpu") as f:
        keys, metadata = list(f.keys()), dict(f.metadata() or {})
    anchor = next(iter(weights))     # the source's key for one of the model's names gives the file's key prefix
    prefix = next((k[: -len(anchor)] for k in keys if k.endswith(anchor)), "")
    tensors = {prefix + k: v.detach().to(dtype).contiguous() for k, v in weights.items()}
    metadata["iad_train"] = json.dumps(trained)
    atomic_save_tensors(path, tensors, metadata)
    return path


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        c = config
        if c.cpu_threads > 0:
            torch.set_num_threads(c.cpu_threads)
        self.dist = distributed.setup(c.distributed.strategy, c.distributed.backend, c.device)
        self.device = self.dist.device
        self.out = Path(c.output_dir)
        self.base_mode, self.vae_mode = c.mode == "base", c.mode == "vae"
        self.dataset = PreparedDataset(c.data, needs_references=c.mode == "adapter")
        self.data_residency = self.dataset.hold_in_memory(c.data_in_memory, c.mode)
        log.info("data %s: %s", c.data, self.data_residency)
        if self.vae_mode:
            self._init_vae()
            return
        self.patcher, self.arch = load_base(c, self.device)
        channels = getattr(self.patcher.model.latent_format, "latent_channels", None)
        if channels is not None and self.dataset.latent_shape[0] != channels:
            raise ConfigError(
                f"data: {c.data} holds latents with {self.dataset.latent_shape[0]} channels, but base_model "
                f"{c.base_model} ({self.arch.variant}) works on {channels}-channel latents. Prepare the data with "
                "this model family's VAE.")
        if self.base_mode:
            self.adapter_config = None
            select_trainable(self.patcher.model.diffusion_model, c.trainable, c.base_model)
            self.module = BaseTrainable(self.patcher.model.diffusion_model, c)
        else:
            self.adapter_config = adapter_config_for(c, self.arch, self.dataset.embedder)
            adapter = _init_adapter(c, self.adapter_config, self.device, self.dataset.embedder)
            if c.init_from:
                self.adapter_config = AdapterConfig.from_dict(adapter.config.to_dict())
            self.adapter_config.name = c.name
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.seed + 1)
                # The text-alignment projector reads the dataset's text features (umt5 4096 for Wan,
                # the family's own encoder width otherwise).
                self.module = IaDTrainable(adapter, c, text_dim=self.dataset.text_dim).to(self.device)
            if c.losses.identity_decoupling == 0 and c.losses.text_alignment == 0:
                self.module.projector = None
            self.base_trained: list[str] = []
            if c.base_trainable:
                diffusion_model = self.patcher.model.diffusion_model
                self.base_trained = select_trainable(diffusion_model, c.base_trainable, c.base_model,
                                                     exclude=c.base_frozen, key="base_trainable")
                # the delta file holds trained - initial: keep the initial values (fp32, on the CPU)
                params = dict(diffusion_model.named_parameters())
                self.base_initial = {n: params[n].detach().float().cpu().clone() for n in self.base_trained}
                self.module.attach_base(diffusion_model)
        self.patched = install_patches(self.patcher, self.arch, None if self.base_mode else self.module.adapter,
                                       c.gradient_checkpointing, c.identity_weight)
        self.patched.patch_model(device_to=self.device)
        base_model = self.patched.model
        shift = c.timesteps.shift if c.timesteps.shift is not None else float(getattr(base_model.model_sampling, "shift", 1.0))
        prompt_bank = (self.dataset.prompt_bank() if c.losses.prompt_following.weight > 0 or c.caption_dropout > 0
                       else None)
        icr = self._load_icr() if c.losses.icr.weight > 0 else None
        self.module.attach(self.patched, self.patcher, shift, gather=distributed.gather_batch, family=self.arch.family,
                           prompt_bank=prompt_bank, icr=icr)
        self.source = BatchSource(self.dataset, c, self.dist.rank, self.dist.world, self.module.draws)
        if self.base_mode:   # every trained parameter takes part in the loss (frozen ones are not DDP's)
            self.model = distributed.wrap(self.module, self.dist, find_unused=False, shard_base=None)
        else:
            uses_everything = (self.module.projector is not None and c.losses.identity_decoupling > 0
                               and c.losses.text_alignment > 0)
            self.model = distributed.wrap(self.module, self.dist, find_unused=not uses_everything,
                                          shard_base=base_model.diffusion_model if c.distributed.fsdp_shard_base else None)
        self._make_optimizer()

    def _init_vae(self) -> None:
        """``mode: vae``: the Wan VAE (ComfyUI's loader) and its reconstruction objective."""
        c = self.config
        if not self.dataset.has_tensor(0, "target.pixels"):
            raise ConfigError(f"data: {c.data} has no stored frames, which mode 'vae' trains on; prepare it with "
                              "store_pixels: true (python -m iad.prepare ... --store-pixels)")
        vae, latent_format = load_vae(c, self.device)
        select_trainable(vae, c.trainable, c.base_model)
        self.adapter_config = None
        self.module = VAETrainable(vae, latent_format, c)
        self.source = BatchSource(self.dataset, c, self.dist.rank, self.dist.world)
        # with one of the two terms off, the other half of the VAE gets no gradient
        self.model = distributed.wrap(self.module, self.dist, find_unused=c.vae.decode == 0 or c.vae.encode == 0,
                                      shard_base=None)
        self._make_optimizer()

    def _make_optimizer(self) -> None:
        """AdamW; with base_trainable two parameter groups, the base's at ``base_lr / lr`` of the
        adapter's learning rate throughout the schedule (``lr_scale``)."""
        c = self.config
        trained = [p for p in self.model.parameters() if p.requires_grad]
        base_model = getattr(self.module, "base_model", None)      # IaDTrainable.attach_base (base_trainable)
        base_ids = {id(p) for p in base_model.parameters()} if base_model is not None else set()
        base = [p for p in trained if id(p) in base_ids]
        groups = [{"params": [p for p in trained if id(p) not in base_ids], "lr_scale": 1.0}]
        if base:
            groups.append({"params": base, "lr_scale": (c.optimizer.base_lr or c.optimizer.lr) / c.optimizer.lr})
        # PyTorch's own choice of kernels: on CUDA the multi-tensor ones (a few launches per step, not about
        # ten per parameter tensor, which dominate a small adapter's step), on the CPU the per-tensor loop
        # (so CPU runs are bit for bit what they were with foreach=False)
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=c.optimizer.lr,
                                           betas=tuple(c.optimizer.betas), weight_decay=c.optimizer.weight_decay)
        self.step = 0

    def _load_icr(self):
        from ..prepare.encoders import ComfyVAE
        from .model import TorchRecognizer

        vae = ComfyVAE(self.config.losses.icr.vae, self.config.comfyui_dir).vae
        vae.first_stage_model.to(self.device).requires_grad_(False)
        return vae, TorchRecognizer(self.config.losses.icr.recognizer).to(self.device)

    # -- state -------------------------------------------------------------------------------------
    def _full_state(self) -> tuple[dict, dict]:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (get_model_state_dict(self.model, options=options),
                get_optimizer_state_dict(self.model, self.optimizer, options=options))

    def save(self, final: bool = False) -> Path | None:
        """Adapter checkpoint (IaD format, loadable by IaD Model Loader) + training state."""
        from ..prepare.shards import atomic_save_tensors

        model_state, optim_state = self._full_state()
        if not self.dist.main:
            distributed.barrier()
            return None
        c = self.config
        ckpt_dir = self.out / "checkpoints"
        dtype = getattr(torch, c.save_dtype)
        trained = {"trained_steps": self.step, "base_model": Path(c.base_model).name, "dataset": Path(c.data).name,
                   "trainer": "iad.train"}
        if self.base_mode or self.vae_mode:
            root = "diffusion_model." if self.base_mode else "vae."
            weights = {k[len(root):]: v for k, v in model_state.items() if k.startswith(root)}
            path = save_model_file(weights, c.base_model, ckpt_dir / f"{c.name}-step{self.step:06d}.safetensors",
                                   dtype, {**trained, "trainable": c.trainable})
            if final:
                shutil.copyfile(path, self.out / f"{c.name}.safetensors")
        else:
            adapter_state = {k[len("adapter."):]: v.detach().float() for k, v in model_state.items()
                             if k.startswith("adapter.")}
            self.adapter_config.extra = trained
            adapter = IdentityAdapter.from_state_dict(self.adapter_config, adapter_state)
            path = save_adapter(adapter, ckpt_dir / f"{c.name}-step{self.step:06d}.safetensors", dtype=dtype)
            if final:
                save_adapter(adapter, self.out / f"{c.name}.safetensors", dtype=dtype)
            if self.base_trained:
                delta = self._save_base_delta(model_state, ckpt_dir / f"{c.name}-base-delta-step{self.step:06d}.safetensors",
                                              dtype, trained)
                if final:
                    shutil.copyfile(delta, self.out / f"{c.name}-base-delta.safetensors")
        tensors = {f"model.{k}": v.detach().cpu() for k, v in model_state.items()}
        scalars = {}
        for fqn, stats in optim_state["state"].items():
            for name, value in stats.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    tensors[f"optim.{fqn}.{name}"] = value.detach().cpu()
                else:
                    scalars[f"{fqn}.{name}"] = float(value)
        meta = {"format": STATE_FORMAT, "step": self.step, "config_hash": _config_hash(c),
                "param_groups": optim_state["param_groups"], "scalars": scalars}
        state_path = self.out / "state" / f"state-step{self.step:06d}.safetensors"
        atomic_save_tensors(state_path, tensors, {"iad_train_state": json.dumps(meta)})
        self._prune(ckpt_dir, f"{c.name}-step", c.keep_checkpoints)
        self._prune(ckpt_dir, f"{c.name}-base-delta-step", c.keep_checkpoints)
        self._prune(self.out / "state", "state-step", max(c.keep_checkpoints, 1) if c.keep_checkpoints else 0)
        distributed.barrier()
        return path

    def _save_base_delta(self, model_state: dict, path: Path, dtype: torch.dtype, trained: dict) -> Path:
        """What base_trainable changed, ``trained - initial`` per parameter, in ComfyUI's LoRA format
        (``.diff`` / ``.diff_b``): *LoraLoaderModelOnly* at strength 1 gives the jointly trained base.
        Only the changed parameters are stored, so the file is small and the base file stays as is."""
        from ..prepare.shards import atomic_save_tensors
        from .base_model import base_delta_key

        tensors = {base_delta_key(n): (model_state[f"base_model.{n}"].float() - self.base_initial[n]).to(dtype).contiguous()
                   for n in self.base_trained}
        meta = {"iad_train": json.dumps({**trained, "base_trainable": self.config.base_trainable,
                                         "base_frozen": self.config.base_frozen, "format": "comfyui lora diff"})}
        atomic_save_tensors(path, tensors, meta)
        return path

    @staticmethod
    def _prune(folder: Path, prefix: str, keep: int) -> None:
        if keep <= 0:
            return
        files = sorted(folder.glob(f"{prefix}*.safetensors"))
        for old in files[:-keep]:
            old.unlink()

    def latest_state(self) -> Path | None:
        states = sorted((self.out / "state").glob("state-step*.safetensors"))
        return states[-1] if states else None

    def load(self, path: Path) -> None:
        from safetensors import safe_open
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads(f.metadata()["iad_train_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != STATE_FORMAT:
            raise ConfigError(f"resume: {path} is not an iad.train state file")
        if meta["config_hash"] != _config_hash(self.config):
            raise ConfigError(f"resume: {path} was written with a different training config (model, data, losses, "
                              "batch or optimizer settings changed). Use a new output_dir, or resume: false.")
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        optim: dict = {"state": {}, "param_groups": meta["param_groups"]}
        for k, v in tensors.items():
            if k.startswith("optim."):
                fqn, name = k[len("optim."):].rsplit(".", 1)
                optim["state"].setdefault(fqn, {})[name] = v
        for k, v in meta["scalars"].items():
            fqn, name = k.rsplit(".", 1)
            optim["state"].setdefault(fqn, {})[name] = torch.tensor(v)
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, model_state, options=options)
        set_optimizer_state_dict(self.model, self.optimizer, optim, options=options)
        self.step = int(meta["step"])

    # -- loop --------------------------------------------------------------------------------------
    def _lr(self, step: int) -> float:
        """Linear warmup, then constant or cosine decay over the remaining steps (a function of the
        step alone, so a resumed run follows the same schedule)."""
        o, total = self.config.optimizer, self.config.steps
        if o.warmup_steps > 0 and step < o.warmup_steps:
            return o.lr * (step + 1) / o.warmup_steps
        if o.decay == "cosine":
            span = max(total - 1 - o.warmup_steps, 1)
            progress = min(max(step - o.warmup_steps, 0) / span, 1.0)
            return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        return o.lr

    def _micro_batch(self, micro_index: int) -> dict:
        return self.source.micro_batch(micro_index)

    def _batch(self, indices: list[int], positions: list[int], step: int) -> dict:
        return self.source.batch(indices, positions, step)

    def evaluate(self) -> dict[str, float]:
        """Loss terms on a fixed batch with fixed noise and sigmas (comparable across steps)."""
        count = min(len(self.dataset), 8)
        batch = self._batch(list(range(count)), [EVAL_POSITION + i for i in range(count)], 0)
        gather = self.module._runtime["gather"]
        self.module._runtime["gather"] = None   # every rank evaluates the same batch: nothing to gather
        try:
            with torch.no_grad():
                _, parts = self.module(batch, 0, with_extras=False)
        finally:
            self.module._runtime["gather"] = gather
        return {k: float(v) for k, v in parts.items()}

    def train(self) -> TrainResult:
        c = self.config
        resumed_from = 0
        if c.resume:
            state = Path(c.resume) if isinstance(c.resume, str) and c.resume != "auto" else self.latest_state()
            if state is not None:
                self.load(state)
                resumed_from = self.step
                log.info("resumed from %s at step %d", state, self.step)
        result = TrainResult(self.out, None, c.steps, resumed_from=resumed_from)
        logfile = self.out / "log.jsonl"
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(c.to_dict(), indent=1))
        if self.step == 0:
            result.evals.append({"step": 0, **self.evaluate()})
            self._write(logfile, {"eval": result.evals[-1]})
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t_start = time.perf_counter()
        self.model.train()
        samples = self._loop(result, logfile, t_start)
        elapsed = time.perf_counter() - t_start
        result.samples_per_second = samples / max(elapsed, 1e-9)
        if self.device.type == "cuda":
            result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:   # the process's peak resident memory (ComfyUI and torch included)
            try:
                import resource

                result.peak_memory_bytes = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
            except ImportError:   # Windows
                pass
        result.evals.append({"step": self.step, **self.evaluate()})
        self._write(logfile, {"eval": result.evals[-1]})
        saved = self.save(final=True)
        result.final_checkpoint = (self.out / f"{c.name}.safetensors") if saved is not None else None
        return result

    def _loop(self, result: TrainResult, logfile: Path, t_start: float) -> int:
        """The optimizer steps up to ``steps``; returns the samples trained. The loss terms stay on the
        device until a step is logged: reading them every step would wait for the device each time
        (and the next step's copies and kernels with it). The logged sums are the same as if read at once."""
        c = self.config
        samples = 0
        # since the last logged step: steps, wall time, and the CPU time spent building batches (with
        # the step time, what says whether the device waits for the data)
        since_steps, since_t, data_s = 0, t_start, 0.0
        while self.step < c.steps:
            lr = self._lr(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            self.optimizer.zero_grad(set_to_none=True)
            terms: dict[str, list[torch.Tensor]] = {}
            for micro in range(c.grad_accum):
                t_data = time.perf_counter()
                batch = self._micro_batch(self.step * c.grad_accum + micro)
                data_s += time.perf_counter() - t_data
                sync = (micro == c.grad_accum - 1) or self.dist.strategy != "ddp"
                ctx = nullcontext() if sync else self.model.no_sync()
                with ctx:
                    loss, parts = self.model(batch, self.step)
                    (loss / c.grad_accum).backward()
                for k, v in parts.items():
                    terms.setdefault(k, []).append(v.detach())
                samples += c.batch_size * self.dist.world
            grad_norm = None
            if c.optimizer.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                           c.optimizer.grad_clip)
            self.optimizer.step()
            self.step += 1
            since_steps += 1
            if self.step % c.log_every == 0 or self.step == c.steps:
                sums: dict[str, float] = {}
                for k, values in terms.items():
                    for v in values:
                        sums[k] = sums.get(k, 0.0) + float(v) / c.grad_accum
                if grad_norm is not None:
                    sums["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
                means = distributed.mean_over_ranks(sums, self.device)
                now = time.perf_counter()
                entry = {"step": self.step, "lr": lr, **means, "samples_per_s": samples / max(now - t_start, 1e-9),
                         "step_ms": 1000 * (now - since_t) / since_steps, "data_ms": 1000 * data_s / since_steps}
                since_steps, since_t, data_s = 0, now, 0.0
                result.history.append(entry)
                self._write(logfile, entry)
                if self.dist.main:
                    log.info("step %d  %s", self.step, "  ".join(f"{k} {v:.4g}" for k, v in entry.items() if k != "step"))
            if c.eval_every and self.step % c.eval_every == 0 and self.step != c.steps:
                result.evals.append({"step": self.step, **self.evaluate()})
                self._write(logfile, {"eval": result.evals[-1]})
            if self.step % c.checkpoint_every == 0 and self.step != c.steps:
                self.save()
        return samples

    def _write(self, path: Path, entry: dict) -> None:
        if self.dist.main:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        try:
            if getattr(self, "patched", None) is not None:   # mode vae patches no diffusion model
                self.patched.unpatch_model()
        finally:
            distributed.teardown()


def run(config, overrides: dict | None = None) -> TrainResult:
    """Train an IaD adapter (``mode: adapter``), the base model itself (``base``) or its VAE (``vae``).
    ``config``: a path to a .json/.toml file, a dict, or a TrainConfig;
    ``overrides``: dotted keys (``{"steps": 10, "losses.icr.weight": 0.1}``). Works the same in one
    process and under ``torchrun`` (DDP/FSDP)."""
    config = load_config(config, overrides)
    trainer = Trainer(config)
    try:
        return trainer.train()
    finally:
        trainer.close()


__all__ = ["run", "Trainer", "TrainResult", "math"]
