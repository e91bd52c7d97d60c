"""Build (train) every model of the synthetic world, reproducibly, into one folder.

``build_world(folder, scale)`` renders seeded datasets and trains, in order: the latent codec, the
action classifier, the face detector and the recognizer (exported as an insightface pack), the
tiny Wan T2V base model, the IaD decoupler, and the adapters of the experiment:

- ``naive``: raw embedding -> resampler -> adapter, denoising loss only, the reference taken from
  the *target clip's own frames* (ID-Animator / ConsisID style);
- ``iad``: the trained decoupler (Identity Decoupling + Text Alignment losses) in front, references
  from *another clip* of the same person (cross-video), denoising loss;
- ``naive_tf``: the naive adapter's weights with IaD's training-free decoupler (a within-identity
  basis estimated from training frames) stored as an IaD checkpoint;

and, in its own process beside these, the world's Wan 2.1 VAE (``wan_vae``: ComfyUI's own class,
in the codec's latent space), which lets a workflow decode with the native *Load VAE* / *VAE Decode*.

The Wan model (``mode: base``), the VAE (``mode: vae``) and both adapters (on the built Wan file)
are trained by the pack's trainer (``iad.train.run``), from the world's clips written as prepared
datasets (``training_set``); the judges and the decoupler's pre-training use small loops of their own.

Single-threaded and seeded throughout so the files are identical bit for bit on every run on the
same software stack (``manifest.json`` lists their SHA-256).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from . import diffusion, faces, text, training_set, wan_vae, world
from ._iad import library
from .codec import PatchCodec

_adapter, _decoupling, _losses = library("adapter"), library("decoupling"), library("losses")
AdapterConfig, IdentityAdapter = _adapter.AdapterConfig, _adapter.IdentityAdapter
save_adapter = library("checkpoint").save_adapter
Decoupler, TrainingFreeDecoupler = _decoupling.Decoupler, _decoupling.TrainingFreeDecoupler
ActionTextProjector, decoupler_training_loss = _losses.ActionTextProjector, _losses.decoupler_training_loss

BUILD_VERSION = 8
JUDGES_VERSION = 3      # bump when the codec/classifier/detector/recognizer stages change
PACK_NAME = "synthworld"
DETECTOR_FILE = "scrfd_synthworld.onnx"
RECOGNIZER_FILE = "arcface_synthworld.onnx"
WAN_FILE = "iad-synthworld-wan2.1-t2v.safetensors"
VAE_FILE = "iad-synthworld-wan2.1-vae.safetensors"
WORLD_FILE = "synthworld-judges.safetensors"        # codec + action classifier (the recognizer lives in its ONNX file)
ADAPTER_FILES = {"naive": "iad-synthworld-naive.safetensors", "iad": "iad-synthworld-iad.safetensors",
                 "naive_tf": "iad-synthworld-naive-trainingfree.safetensors"}
# The base's change trained jointly with each adapter (scale.adapter_base_trainable), a ComfyUI LoRA
# file (models/loras, LoraLoaderModelOnly); the training-free system uses the naive adapter's.
BASE_DELTA_FILES = {"naive": "iad-synthworld-naive-base-delta.safetensors", "iad": "iad-synthworld-iad-base-delta.safetensors"}
BASE_DELTA_OF = {"naive": "naive", "iad": "iad", "naive_tf": "naive"}
VAE_TIMING = "wan vae (own process, in parallel)"     # manifest timing key: not part of total_s's sequence
EMBEDDER = f"insightface/{PACK_NAME}/{Path(RECOGNIZER_FILE).stem}"


@dataclass(frozen=True)
class BuildScale:
    train_identities: int = 240
    clips_per_identity: int = 5
    omit_action_prob: float = 0.5        # share of captions that leave the action out (as real captions do)
    describe_prob: float = 0.5           # share of captions that say how the person looks (hair, accessory)
    recognizer_steps: int = 600
    recognizer_photos: int = 16        # per training identity (neutral or mild smile)
    detector_steps: int = 300
    classifier_steps: int = 400
    wan_steps: int = 5000              # per cycle
    wan_cycles: int = 1                # one-cycle LR schedules run back to back (each at half the previous peak LR)
    wan_lr: float = 2e-3
    wan_batch: int = 16
    decoupler_steps: int = 400
    adapter_steps: int = 6000
    adapter_batch: int = 12
    adapter_lr: float = 2e-3
    # base parameters trained jointly with each adapter (iad.train's base_trainable), at adapter_base_lr:
    # all of them, as most published identity methods fine-tune the base with the identity branch
    adapter_base_trainable: tuple[str, ...] = ("*",)
    adapter_base_lr: float = 5e-4
    # where each adapter's training reference comes from (training_set.REFERENCE_POLICIES): naive
    # injection from the target clip itself, IaD from the person's other clips; a variant build may
    # swap them (the ablation that separates the decoupler from the references)
    naive_references: str = "same_clip"
    iad_references: str = "other_clips"
    # weight of each of IaD's decoupler losses (Identity Decoupling, Text Alignment) next to the
    # denoising loss's 1: iad.train's default
    iad_loss_weight: float = 0.1
    vae_steps: int = 800               # first phase: windows of 3 frames
    vae_batch: int = 8
    vae_lr: float = 4e-3
    vae_tune_steps: int = 150          # second phase: windows of 5 frames (every causal cache full)
    vae_tune_lr: float = 1e-3
    seed: int = 0
    # the world's Wan model (ComfyUI's WanModel: one attention head per 128 channels)
    wan_dim: int = 128
    wan_ffn_dim: int = 384
    wan_layers: int = 3
    # where iad.train trains the Wan model and the adapters ("cpu": single-threaded, bit for bit;
    # "cuda": the GPU-scale world, whose numbers are labelled with the device)
    device: str = "cpu"


FULL = BuildScale()
# A few-minute build for checking the pipeline itself (not for the published numbers).
SMOKE = BuildScale(train_identities=24, clips_per_identity=2, recognizer_steps=40, recognizer_photos=4, detector_steps=40,
                   classifier_steps=40, wan_steps=10, wan_cycles=1, wan_batch=4, decoupler_steps=20, adapter_steps=8, adapter_batch=4,
                   vae_steps=2, vae_batch=2, vae_tune_steps=1)
# The GPU-scale world (issue 34): the same people, clips and judges as FULL (copied from the shipped
# world, so both worlds are judged by the same recognizer and classifier), a wider and deeper Wan
# model trained on 4x bigger batches, and adapters trained longer, jointly with it. The step counts
# are upper bounds: `make gpu-world` fits them to its 8-minute budget after timing the first steps
# on the machine it runs on (synthworld/step_budget.py) and the manifest records the steps run.
GPU = BuildScale(wan_dim=384, wan_ffn_dim=1152, wan_layers=6, wan_steps=12000, wan_batch=64, wan_lr=1e-3,
                 adapter_steps=12000, adapter_batch=48, adapter_lr=1e-3, adapter_base_lr=2.5e-4, device="cuda")
# GPU's layout on the CPU at a few steps: the CPU smoke run of `make gpu-world` in the test suite.
GPU_SMOKE = replace(GPU, wan_steps=4, wan_batch=4, adapter_steps=3, adapter_batch=4, decoupler_steps=20, device="cpu")
SCALES = {"full": FULL, "smoke": SMOKE, "gpu": GPU, "gpu-smoke": GPU_SMOKE}


def adapter_config(kind: str, wan_spec: diffusion.WanWorldSpec, overrides: dict | None = None, **extra) -> AdapterConfig:
    """The world's adapter layout; ``overrides`` (AdapterConfig fields, e.g. ``kv_rank``) for a variant build."""
    fields = dict(model_dim=wan_spec.dim, token_dim=128, blocks=list(range(wan_spec.num_layers)), num_tokens=8,
                  num_registers=0, resampler_dim=128, resampler_heads=4, resampler_dim_head=32, embedder=EMBEDDER,
                  decoupler_kind=kind, decoupler_act_dim=16, decoupler_hidden=128,
                  name=f"synthworld {extra.pop('label', kind)}")
    return AdapterConfig.tiny(**{**fields, **(overrides or {}), **extra})


def comfyui_version() -> str:
    """The version of the ComfyUI the build runs on. The VAE stage trains ComfyUI's own WanVAE, whose
    causal convolutions changed between 0.3.75 and 0.28 (their padding), so the VAE file depends on
    it; every other file is the same on both (a smoke build under each differs only in the VAE)."""
    import importlib

    library("comfy_runtime").import_comfy(cpu=True)
    try:
        return str(importlib.import_module("comfyui_version").__version__)
    except ImportError:
        return "unknown"


def cpu_kind() -> str:
    """The CPU type the build runs on, as far as it decides the float results: its model name and the
    instruction sets torch's kernels pick by CPU (ATen's dispatch level; MKL and oneDNN choose AVX2,
    AVX-512 or AMX code by themselves). Builds are bit for bit on one CPU type; on another, every
    trained file differs in its last bits (docs/synth-world.md, "Reproducing")."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if flags:       # "flags" follows "model name" in the first processor's block
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model}; torch {torch.backends.cpu.get_cpu_capability()}" + (f"; {' '.join(isa)}" if isa else "")


# The scale fields the copied judges depend on: the classifier, detector and VAE (always copied from
# reuse_judges_from) and the recognizer (copied with reuse_recognizer). A build copies them from
# another only where these are equal.
COPIED_JUDGE_FIELDS = ("train_identities", "clips_per_identity", "omit_action_prob", "describe_prob", "detector_steps",
                       "classifier_steps", "vae_steps", "vae_batch", "vae_lr", "vae_tune_steps", "vae_tune_lr", "seed")
RECOGNIZER_FIELDS = ("recognizer_steps", "recognizer_photos")
JUDGE_FIELDS = COPIED_JUDGE_FIELDS + RECOGNIZER_FIELDS


def _check_same_judges(scale: BuildScale, source: str | Path | None, recognizer: bool) -> None:
    if source is None:
        if recognizer:
            raise ValueError("reuse_recognizer copies the recognizer from reuse_judges_from: give it")
        return
    path = Path(source) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reuse_judges_from must name a built world")
    theirs = json.loads(path.read_text()).get("scale", {})
    fields = JUDGE_FIELDS if recognizer else COPIED_JUDGE_FIELDS
    differ = [f for f in fields if theirs.get(f) != getattr(scale, f)]
    if differ:
        raise ValueError(f"the judges of {source} were built with other {', '.join(differ)} than this scale's: "
                         "they cannot be copied (retrain them: build without reuse)")


def _copy_adapter_files(source: str | Path, folder: Path, names: list[str]) -> None:
    """Copy an adapter's files from another build; a base delta may be absent (a frozen-base build
    has none), an adapter file may not."""
    import shutil

    for name in names:
        if name in BASE_DELTA_FILES.values() and not (Path(source) / name).is_file():
            continue
        if not (Path(source) / name).is_file():
            raise FileNotFoundError(f"{Path(source) / name} is missing: --reuse-judges must name a complete build "
                                    "of the world to copy the adapter that is not retrained from")
        shutil.copyfile(Path(source) / name, folder / name)


def canonicalize_safetensors(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys (same length, space-padded as the format
    allows). The safetensors writer emits metadata in hash-map order, which varies between runs;
    sorted, the file is identical bit for bit whenever its tensors and metadata are."""
    import struct

    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        if "__metadata__" in header:
            header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(text) > length:
            raise ValueError(f"canonical header of {path} is longer than the original")
        f.seek(8)
        f.write(text + b" " * (length - len(text)))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- data -------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    clips: list
    person: torch.Tensor        # [C] identity index per clip
    video: torch.Tensor         # [C, T, 3, H, W]
    kps: np.ndarray             # [C, T, 5, 2]
    boxes: np.ndarray           # [C, T, 4]


def make_dataset(identities: list, clips_per_identity: int, seed: int, omit_action_prob: float,
                 describe_prob: float = 0.0) -> Dataset:
    rng = np.random.default_rng(seed)
    clips, person = [], []
    for p, ident in enumerate(identities):
        for _ in range(clips_per_identity):
            clips.append(world.sample_clip(ident, rng, omit_action_prob=omit_action_prob, describe_prob=describe_prob))
            person.append(p)
    video = torch.cat([world.render_clips(clips[i:i + 64]) for i in range(0, len(clips), 64)])
    ids = [c.identity for c in clips for _ in range(world.FRAMES)]
    params = np.concatenate([c.params for c in clips])
    jitter = np.concatenate([c.jitter for c in clips])
    kps = world.keypoints(ids, params, jitter).reshape(len(clips), world.FRAMES, 5, 2)
    boxes = world.face_boxes(ids, params, jitter).reshape(len(clips), world.FRAMES, 4)
    return Dataset(clips, torch.tensor(person), video, kps, boxes)


def training_clips(scale: BuildScale) -> tuple[list, Dataset]:
    """The training identities and their rendered clips (seeded: every stage that needs them, in
    any process, renders the same ones)."""
    identities = world.sample_identities(scale.train_identities, seed=1000 + scale.seed)
    return identities, make_dataset(identities, scale.clips_per_identity, seed=2000 + scale.seed,
                                    omit_action_prob=scale.omit_action_prob, describe_prob=scale.describe_prob)


def negatives(count: int, seed: int) -> torch.Tensor:
    """Frames without a face (scene backgrounds with noise and blobs): the detector's negatives."""
    g = torch.Generator().manual_seed(seed)
    hi = world.SIZE
    coords = (torch.arange(hi, dtype=torch.float32) + 0.5) / hi * 2 - 1
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    scenes = [world.SCENES[i % len(world.SCENES)] for i in range(count)]
    bg = world._scene_background(scenes, y[None].expand(count, -1, -1), x[None].expand(count, -1, -1))
    blobs = torch.rand(count, 3, 4, 4, generator=g)
    blobs = F.interpolate(blobs, size=(hi, hi), mode="bilinear", align_corners=False)
    mix = torch.rand(count, 1, 1, 1, generator=g)
    return (bg * (1 - mix) + blobs * mix + 0.05 * torch.randn(bg.shape, generator=g)).clamp(0, 1)


def frame_crops(ds: Dataset, jitter_px: float = 0.0, seed: int = 0, video: torch.Tensor | None = None) -> torch.Tensor:
    """Recognizer inputs [C*T, 3, 28, 28] from ground-truth keypoints (optionally jittered), of
    ``video`` (default: the dataset's own frames)."""
    video = ds.video if video is None else video
    frames = faces.to_uint8(video.reshape(-1, 3, world.SIZE, world.SIZE))
    kps = ds.kps.reshape(-1, 5, 2)
    if jitter_px:
        kps = kps + np.random.default_rng(seed).normal(0, jitter_px, kps.shape).astype(np.float32)
    return faces.crop_input(faces.aligned_crops(frames, kps))


def action_text_embeddings() -> torch.Tensor:
    """One 4096-d text vector per action class (mean of the phrase's tokens; neutral: 'a person')."""
    phrases = ["a person"] + [world.ACTION_PHRASES[a] for a in world.ACTIONS[1:]]
    enc = text.encode(phrases)
    return enc[:, :1].mean(1)


# -- training steps -----------------------------------------------------------------------------------
def train_decoupler(emb: torch.Tensor, person: torch.Tensor, action: torch.Tensor, steps: int, seed: int, log=print):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dec = Decoupler(faces.EMBED_DIM, act_dim=16, hidden=128)
    proj = ActionTextProjector(16, text.TEXT_DIM, 64)
    act_text = action_text_embeddings()
    opt = torch.optim.AdamW(list(dec.parameters()) + list(proj.parameters()), lr=1e-3)
    for step in range(steps):
        idx = torch.randint(0, len(emb), (256,), generator=g)
        terms = decoupler_training_loss(dec, proj, emb[idx], person[idx], act_text[action[idx]], action[idx])
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        if step % max(1, steps // 4) == 0 or step == steps - 1:
            log(f"  decoupler step {step}/{steps} loss {terms.total.item():.3f} "
                + " ".join(f"{k}={float(torch.as_tensor(v).detach()):.3f}" for k, v in terms.parts.items()))
    return dec.eval()


def _device_fields(scale: BuildScale) -> dict:
    # one CPU thread: bit for bit, and the fastest for these tiny models on the 2-core build machine
    return {"device": scale.device, "cpu_threads": 1 if scale.device == "cpu" else 0}


def wan_train_config(current: Path, work: Path, scale: BuildScale, cycle: int = 0, steps: int | None = None,
                     log_every: int | None = None, run_name: str | None = None) -> dict:
    """``iad.train``'s configuration of one Wan training cycle (``steps`` etc.: a step-budget probe's)."""
    steps = scale.wan_steps if steps is None else steps
    return {
        "mode": "base", "base_model": str(current), "data": str(work / "other_clips"),
        "output_dir": str(work / (run_name or f"run-wan-{cycle}")), "name": "synthworld-wan",
        "steps": steps, "batch_size": scale.wan_batch, "caption_dropout": 0.1,
        "seed": 6000 + scale.seed + 17 * cycle, "precision": "fp32", **_device_fields(scale),
        "log_every": log_every or max(1, steps // 8), "checkpoint_every": steps, "keep_checkpoints": 1,
        "save_dtype": "float16", "resume": False,
        "optimizer": {"lr": scale.wan_lr / (2 ** cycle), "weight_decay": 0.01, "warmup_steps": max(1, steps // 20),
                      "decay": "cosine", "min_lr_ratio": 0.0, "grad_clip": 1.0},
        "timesteps": {"shift": diffusion.SHIFT},
    }


def initial_wan(work: Path, spec: diffusion.WanWorldSpec, scale: BuildScale) -> Path:
    """The seeded, freshly initialised Wan model every build starts from, as a file in ``work``."""
    path = work / "wan-init.safetensors"
    if not path.is_file():
        wan = diffusion.build_wan(spec, seed=6000 + scale.seed)
        save_file({k: v.contiguous() for k, v in wan.state_dict().items()}, str(path),
                  metadata={"iad_synthworld_wan": json.dumps(diffusion.spec_dict(spec))})
    return path


def train_wan_with_iad_train(folder: Path, work: Path, spec: diffusion.WanWorldSpec, scale: BuildScale,
                             resume_from: tuple[str | Path, int] | None = None, log=print) -> Path:
    """Train the world's Wan T2V model with the project's trainer (``iad.train``, ``mode: base``):
    ComfyUI's ``WanModel`` freshly initialised (seeded), then ``wan_cycles`` runs of the flow-matching
    loss on every training clip (caption dropout 0.1 for classifier-free guidance), each run starting
    from the previous run's fp16 file at half its peak learning rate. Writes ``WAN_FILE``.

    ``resume_from``: (file, cycles done) -- the fp16 output of that many cycles of an identical-scale
    build; continuing from it equals training those cycles again (each cycle starts from its file)."""
    import shutil

    iad_train = library("train")

    if resume_from is not None:
        current, first_cycle = Path(resume_from[0]), int(resume_from[1])
    else:
        current, first_cycle = initial_wan(work, spec, scale), 0
    for cycle in range(first_cycle, scale.wan_cycles):
        steps = scale.wan_steps
        result = iad_train.run(wan_train_config(current, work, scale, cycle))
        for entry in result.history:
            log(f"  wan (iad.train, mode base) cycle {cycle} step {entry['step']}/{steps} loss {entry['diffusion']:.4f}")
        current = result.final_checkpoint
    shutil.copyfile(current, folder / WAN_FILE)
    return folder / WAN_FILE


def adapter_train_config(folder: Path, work: Path, kind: str, init: IdentityAdapter, scale: BuildScale, references: str,
                         steps: int | None = None, log_every: int | None = None, run_name: str | None = None) -> dict:
    """``iad.train``'s configuration of one adapter's training (``steps`` etc.: a step-budget probe's)."""
    steps = scale.adapter_steps if steps is None else steps
    init_path = work / f"init-{run_name or kind}.safetensors"     # a probe's own: never the real run's start
    if not init_path.is_file():
        save_adapter(init, init_path, dtype=torch.float32)
    decoupled = kind == "iad"
    return {
        "base_model": str(folder / WAN_FILE), "data": str(work / references), "output_dir": str(work / (run_name or f"run-{kind}")),
        "adapter": {k: v for k, v in init.config.to_dict().items() if k not in ("extra",)},
        "init_from": str(init_path), "name": f"synthworld-{kind}",
        "steps": steps, "batch_size": scale.adapter_batch, "num_references": 1, "identity_weight": 1.0,
        "seed": 8000 + scale.seed, "precision": "fp32", **_device_fields(scale),
        "log_every": log_every or max(1, steps // 6), "checkpoint_every": steps, "keep_checkpoints": 1,
        "save_dtype": "float16", "resume": False,
        "optimizer": {"lr": scale.adapter_lr, "weight_decay": 0.0, "warmup_steps": max(1, steps // 10),
                      "decay": "cosine", "min_lr_ratio": 0.0, "grad_clip": 1.0,
                      **({"base_lr": scale.adapter_base_lr} if scale.adapter_base_trainable else {})},
        **({"base_trainable": list(scale.adapter_base_trainable)} if scale.adapter_base_trainable else {}),
        "losses": {"diffusion": 1.0, "identity_decoupling": scale.iad_loss_weight if decoupled else 0.0,
                   "text_alignment": scale.iad_loss_weight if decoupled else 0.0},
        "timesteps": {"shift": diffusion.SHIFT},
    }


def train_adapter_with_iad_train(folder: Path, work: Path, kind: str, init: IdentityAdapter, scale: BuildScale,
                                  references: str, log=print) -> IdentityAdapter:
    """Train one adapter with the project's trainer (``iad.train``) on the world's base model and
    prepared dataset ``work / references``; returns the trained adapter (as saved, fp16 values).

    The base model's flow-matching loss; for IaD also the Identity Decoupling and Text Alignment
    losses on its (pre-trained) decoupler. The base model is frozen, except the parameters
    ``scale.adapter_base_trainable`` selects, which train jointly with the adapter; their change is
    written to ``BASE_DELTA_FILES[kind]`` in ``folder``. Seeded; on the CPU single-threaded."""
    iad_train = library("train")
    load_adapter = library("checkpoint").load_adapter

    out = work / f"run-{kind}"
    result = iad_train.run(adapter_train_config(folder, work, kind, init, scale, references))
    for entry in result.history:
        log(f"  {kind} adapter (iad.train) step {entry['step']}/{scale.adapter_steps} "
            + " ".join(f"{k} {v:.4f}" for k, v in entry.items() if k in ("diffusion", "identity_decoupling", "text_alignment")))
    adapter = load_adapter(result.final_checkpoint).float().eval()
    adapter.config.name = init.config.name      # the trainer names its files; the label says which system it is
    if scale.adapter_base_trainable:
        import shutil

        shutil.copyfile(out / f"synthworld-{kind}-base-delta.safetensors", folder / BASE_DELTA_FILES[kind])
    return adapter


def new_adapter(kind: str, spec: diffusion.WanWorldSpec, seed: int, label: str, overrides: dict | None = None) -> IdentityAdapter:
    """Seeded adapter whose identity values start at zero: training starts from the base model's
    own output (the usual zero-initialised output of an adapter branch)."""
    return IdentityAdapter.random(adapter_config(kind, spec, overrides, label=label), seed=seed).float().zero_identity_values()


def adapter_start(kind: str, spec: diffusion.WanWorldSpec, seed: int, label: str, overrides: dict | None, decoupler,
                  scale: BuildScale) -> tuple[IdentityAdapter, str]:
    """An experiment adapter's start and reference policy (its step-budget probe's too): naive injection
    from scratch, IaD behind the pre-trained decoupler."""
    if kind == "naive":
        return new_adapter("none", spec, seed=seed, label=label, overrides=overrides), scale.naive_references
    init = new_adapter("trained", spec, seed=seed, label=label, overrides=overrides)
    init.decoupler.load_state_dict(decoupler.state_dict())
    return init, scale.iad_references


def recognizer_photos(identities: list, per_identity: int, seed: int) -> Dataset:
    """The recognizer's training photos: like the web photos face-recognition datasets are made of,
    posed and mostly plain -- 40 % neutral, the rest a *mild* version (intensity <= 0.35) of any
    expression or head turn. As with ArcFace, nothing teaches it to ignore a full grin, a wink or a
    head turn, and it leaks them into its embedding (measured: ``experiment.leakage_probe``)."""
    rng = np.random.default_rng(seed)
    clips, person = [], []
    for p, ident in enumerate(identities):
        for _ in range(per_identity):
            action = world.ACTIONS[int(rng.integers(len(world.ACTIONS)))] if rng.random() < 0.6 else "neutral"
            params = np.tile(world.action_vector(action, float(rng.uniform(0.0, 0.35))), (world.FRAMES, 1))
            jitter = np.tile(rng.normal(0, 0.02, (1, 2)).astype(np.float32), (world.FRAMES, 1))
            scene = world.SCENES[int(rng.integers(len(world.SCENES)))]
            clips.append(world.Clip(ident, action, scene, "", params, np.zeros(world.FRAMES, np.int64), jitter,
                                    float(rng.uniform(0.85, 1.1)), int(rng.integers(len(world.SHIRT_COLOURS)))))
            person.append(p)
    # one frame per photo
    ids = [c.identity for c in clips]
    params = np.stack([c.params[0] for c in clips])
    jitter = np.stack([c.jitter[0] for c in clips])
    frames = world.render(ids, params, [c.scene for c in clips], jitter, [c.lighting for c in clips], [c.shirt for c in clips])
    kps = world.keypoints(ids, params, jitter)
    boxes = world.face_boxes(ids, params, jitter)
    return Dataset(clips, torch.tensor(person), frames[:, None], kps[:, None], boxes[:, None])


def _train_classifier_detector(folder, ds, both, labels, scale, lap, log):
    import onnx

    s = scale.seed
    classifier = faces.train_action_classifier(both, labels.repeat(2), scale.classifier_steps, seed=3000 + s, log=log)
    lap("action classifier")
    detector = faces.train_detector(both, torch.from_numpy(ds.boxes.reshape(-1, 4)).repeat(2, 1),
                                    torch.from_numpy(ds.kps.reshape(-1, 5, 2)).repeat(2, 1, 1),
                                    negatives(2000, seed=4000 + s), scale.detector_steps, seed=4000 + s, log=log)
    onnx.save(faces.detector_onnx(detector), str(folder / PACK_NAME / DETECTOR_FILE))
    lap("detector")
    return classifier


def _train_recognizer(folder, identities, codec, scale, lap, log):
    import onnx

    s = scale.seed
    photos = recognizer_photos(identities, scale.recognizer_photos, seed=5000 + s)
    roundtrip = codec.decode(codec.encode(photos.video))
    crops = torch.cat([frame_crops(photos, jitter_px=0.4, seed=5000 + s),
                       frame_crops(photos, jitter_px=0.4, seed=5001 + s, video=roundtrip)])
    recognizer = faces.train_recognizer(crops, photos.person.repeat(2), scale.recognizer_steps, seed=5000 + s, log=log)
    onnx.save(faces.recognizer_onnx(recognizer), str(folder / PACK_NAME / RECOGNIZER_FILE))
    lap("recognizer")
    return recognizer


# -- the whole build ----------------------------------------------------------------------------------------
def build_world(folder: str | Path, scale: BuildScale = FULL, log=print, reuse_judges_from: str | Path | None = None,
                resume_wan_from: tuple[str | Path, int] | None = None, adapter_overrides: dict | None = None,
                adapters: tuple[str, ...] = ("naive", "iad"), reuse_recognizer: bool = False, step_budget=None,
                scale_name: str | None = None) -> dict:
    """``reuse_recognizer``: copy the recognizer, too, from ``reuse_judges_from`` (the GPU-scale world,
    whose people, clips and recognizer settings are the shipped world's: one judge for both worlds).
    ``step_budget``: a :class:`step_budget.StepBudget` that fits the Wan and adapter steps to its
    deadline (the manifest's ``scale`` then holds the steps run). ``scale_name``: recorded in the manifest.

    ``adapters``: which of the two adapters to train. A variant build of one of them (``("iad",)`` or
    ``("naive",)``) copies the other's files (the naive adapter comes with the training-free system;
    each with its base delta) from ``reuse_judges_from`` and the manifest records it: half the time.
    The two adapters train independently (each seeded on its own), so variants built this way can be
    combined."""
    adapters = tuple(adapters)
    if not adapters or set(adapters) - {"naive", "iad"}:
        raise ValueError(f"adapters must name 'naive' and/or 'iad', got {adapters}")
    if set(adapters) != {"naive", "iad"} and reuse_judges_from is None:
        raise ValueError("a build that trains only one adapter copies the other's files: give reuse_judges_from")
    for field in ("naive_references", "iad_references"):
        if getattr(scale, field) not in training_set.REFERENCE_POLICIES:
            raise ValueError(f"BuildScale.{field} must be one of {training_set.REFERENCE_POLICIES}, "
                             f"got {getattr(scale, field)!r}")
    if not (isinstance(scale.iad_loss_weight, (int, float)) and math.isfinite(scale.iad_loss_weight)
            and scale.iad_loss_weight >= 0):
        raise ValueError(f"BuildScale.iad_loss_weight must be a finite number >= 0 (the weight of IaD's two decoupler "
                         f"losses, 0.1 as shipped), got {scale.iad_loss_weight!r}")

    if scale.wan_dim % 128 or scale.wan_layers < 1 or scale.device not in ("cpu", "cuda"):
        raise ValueError(f"BuildScale: wan_dim must be a multiple of 128 (one head per 128 channels), wan_layers >= 1 "
                         f"and device 'cpu' or 'cuda'; got {scale.wan_dim}, {scale.wan_layers}, {scale.device!r}")
    if scale.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("this scale trains on a CUDA GPU and none is visible (the CPU version: --scale gpu-smoke)")
    _check_same_judges(scale, reuse_judges_from, recognizer=reuse_recognizer)
    torch.set_num_threads(1)        # determinism (and 1 thread is fastest on this shared 2-core machine)
    folder = Path(folder)
    pack = folder / PACK_NAME
    pack.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def lap(name):
        timings[name] = round(time.monotonic() - t0 - sum(timings.values()), 1)
        log(f"[build] {name}: {timings[name]} s")

    s = scale.seed
    identities, ds = training_clips(scale)
    frames = ds.video.reshape(-1, 3, world.SIZE, world.SIZE)
    labels = torch.from_numpy(np.concatenate([c.labels for c in ds.clips]))
    frame_person = ds.person.repeat_interleave(world.FRAMES)
    lap("render")

    codec = PatchCodec.fit(frames[::3])
    # the judges also see frames after a codec round trip: the best a generator's output can look
    roundtrip = codec.decode(codec.encode(ds.video))
    both = torch.cat([frames, roundtrip.reshape(-1, 3, world.SIZE, world.SIZE)])
    if reuse_judges_from is not None:
        # every stage seeds its own generators, so a stage's output does not depend on what ran
        # before it: copying the classifier and detector of an identical-scale build equals
        # retraining them (scripts/build_synth_world.py --verify rebuilds everything from scratch)
        import shutil

        src = Path(reuse_judges_from)
        shutil.copyfile(src / PACK_NAME / DETECTOR_FILE, pack / DETECTOR_FILE)
        classifier = load_classifier(src)
        lap("action classifier + detector (reused)")
    else:
        classifier = _train_classifier_detector(folder, ds, both, labels, scale, lap, log)
    if reuse_recognizer:
        import shutil

        shutil.copyfile(Path(reuse_judges_from) / PACK_NAME / RECOGNIZER_FILE, pack / RECOGNIZER_FILE)
        recognizer = load_recognizer(folder)
        lap("recognizer (reused)")
    else:
        recognizer = _train_recognizer(folder, identities, codec, scale, lap, log)
    judges = {**codec.state_dict(), **{f"classifier.{k}": v.contiguous() for k, v in classifier.state_dict().items()}}
    save_file(judges, str(folder / WORLD_FILE), metadata={"judges_version": str(JUDGES_VERSION)})

    # the VAE needs only the clips and the codec: it trains on the second core meanwhile
    if reuse_judges_from is not None and (Path(reuse_judges_from) / VAE_FILE).is_file():
        # the VAE, too, depends only on the seeded render and the codec (its own seeded stage)
        import shutil

        shutil.copyfile(Path(reuse_judges_from) / VAE_FILE, folder / VAE_FILE)
        vae_stage = None
    else:
        vae_stage = _start_vae_stage(folder, scale, codec)

    latents = codec.encode(ds.video)
    contexts = text.encode([c.caption for c in ds.clips])
    spec = diffusion.WanWorldSpec(dim=scale.wan_dim, ffn_dim=scale.wan_ffn_dim, num_layers=scale.wan_layers)
    # embeddings of every training frame (ground-truth alignment), as the adapters' references
    aligned = faces.aligned_crops(faces.to_uint8(ds.video.reshape(-1, 3, world.SIZE, world.SIZE)), ds.kps.reshape(-1, 5, 2))
    with torch.no_grad():
        emb = F.normalize(recognizer(faces.crop_input(aligned)), dim=-1).reshape(len(ds.clips), world.FRAMES, -1)

    # The base model and the adapters all train with iad.train on the world's clips written as
    # prepared datasets: naive injection takes its reference from the target clip's own frames
    # (ID-Animator / ConsisID), IaD from the person's other clips (cross-video), decoupled; the
    # base model (mode 'base') reads only latents and captions.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="iad-synthworld-train-") as tmp:
        work = Path(tmp)
        crops = training_set.pooled_crops(aligned, faces.CROP_POOL)
        crops = crops.reshape(len(ds.clips), world.FRAMES, *crops.shape[1:])
        for policy in training_set.REFERENCE_POLICIES:
            training_set.write_training_set(work / policy, ds, latents, contexts, action_text_embeddings(), emb, crops,
                                            references=policy, embedder=EMBEDDER)
        lap("training sets")

        if step_budget is not None and resume_wan_from is None:
            iad_train, init_wan = library("train"), initial_wan(work, spec, scale)
            probe = step_budget.probe("wan", scale.wan_batch, lambda n, every: iad_train.run(
                wan_train_config(init_wan, work, scale, steps=n, log_every=every, run_name="probe-wan")))
            # the Wan model and each adapter get a third of the training time left each
            scale = replace(scale, wan_steps=step_budget.fit("wan", scale.wan_steps, [probe] * scale.wan_cycles, share=1 / 3))
            lap("step budget: wan probe")
        train_wan_with_iad_train(folder, work, spec, scale, resume_from=resume_wan_from, log=log)
        lap("wan base model")

        clip_labels = torch.from_numpy(np.stack([c.labels for c in ds.clips]))
        decoupler = train_decoupler(emb.reshape(-1, emb.shape[-1]), frame_person, clip_labels.reshape(-1),
                                    scale.decoupler_steps, seed=7000 + s, log=log)
        lap("decoupler")

        if step_budget is not None:
            # each adapter probed in its own configuration; both then train the same number of steps
            # (the experiment compares them), the number both runs together fit
            probes = []
            for kind in adapters:
                init, references = adapter_start(kind, spec, 8000 + s, "probe", adapter_overrides, decoupler, scale)
                probes.append(step_budget.probe(f"adapter-{kind}", scale.adapter_batch, lambda n, every: library("train").run(
                    adapter_train_config(folder, work, kind, init, scale, references, steps=n, log_every=every,
                                         run_name=f"probe-{kind}"))))
            scale = replace(scale, adapter_steps=step_budget.fit("adapters", scale.adapter_steps, probes, share=1.0))
            lap("step budget: adapter probe")

        if "naive" in adapters:
            init, references = adapter_start("naive", spec, 8000 + s, "naive injection", adapter_overrides, decoupler, scale)
            naive = train_adapter_with_iad_train(folder, work, "naive", init, scale, references=references, log=log)
            save_adapter(naive, folder / ADAPTER_FILES["naive"], dtype=torch.float16)
            lap("naive adapter")

        if "iad" in adapters:
            init, references = adapter_start("iad", spec, 8000 + s, "IaD", adapter_overrides, decoupler, scale)
            iad = train_adapter_with_iad_train(folder, work, "iad", init, scale, references=references, log=log)
            save_adapter(iad, folder / ADAPTER_FILES["iad"], dtype=torch.float16)
            lap("IaD adapter")
        else:
            _copy_adapter_files(reuse_judges_from, folder, [ADAPTER_FILES["iad"], BASE_DELTA_FILES["iad"]])
            lap("IaD adapter (reused)")

    if "naive" in adapters:
        basis = TrainingFreeDecoupler.estimate_basis(emb.reshape(-1, emb.shape[-1]), frame_person, max_rank=8,
                                                     min_variance_fraction=0.02)
        tf_config = adapter_config("training_free", spec, adapter_overrides, label="naive + training-free decoupler",
                                   decoupler_rank=int(basis.shape[0]))
        state = {**naive.state_dict(), "decoupler.basis": basis}
        save_adapter(IdentityAdapter.from_state_dict(tf_config, state), folder / ADAPTER_FILES["naive_tf"],
                     dtype=torch.float16)
        lap("training-free decoupler")
    else:
        _copy_adapter_files(reuse_judges_from, folder, [ADAPTER_FILES["naive"], ADAPTER_FILES["naive_tf"],
                                                        BASE_DELTA_FILES["naive"]])
        lap("naive adapters (reused)")

    if vae_stage is not None:
        timings[VAE_TIMING] = _finish_vae_stage(vae_stage)
        log(f"[build] {VAE_TIMING}: {timings[VAE_TIMING]} s")

    for p in folder.glob("*.safetensors"):
        canonicalize_safetensors(p)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
    reused = {}     # stages copied from an identical-scale build instead of retrained (each stage is seeded on its own)
    if reuse_judges_from is not None:
        reused["judges_and_vae_from"] = Path(reuse_judges_from).name
    if resume_wan_from is not None:
        reused["wan_from"] = [Path(resume_wan_from[0]).name, int(resume_wan_from[1])]
    for kind in ("naive", "iad"):
        if kind not in adapters:
            reused[f"{kind}_adapters_from"] = Path(reuse_judges_from).name
    if reuse_recognizer:
        reused["recognizer_from"] = Path(reuse_judges_from).name
    manifest = {
        "build_version": BUILD_VERSION, "scale": asdict(scale), "wan": diffusion.spec_dict(spec),
        **({"scale_name": scale_name} if scale_name else {}),
        **({"device": torch.cuda.get_device_name(0)} if scale.device == "cuda" else {}),
        **({"step_budget": step_budget.record()} if step_budget is not None else {}),
        **({"adapter_overrides": adapter_overrides} if adapter_overrides else {}),
        **({"reused": reused} if reused else {}),
        "torch": torch.__version__, "comfyui": comfyui_version(), "cpu": cpu_kind(), "timings_s": timings, "total_s": round(time.monotonic() - t0, 1),
        "files": {str(p.relative_to(folder)): sha256(p) for p in files},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def train_vae_file(folder: Path, clips: torch.Tensor, codec: PatchCodec, scale: BuildScale, log=print,
                   first_phase_from: str | Path | None = None) -> Path:
    """Train the world's Wan VAE with the project's trainer (``iad.train``, ``mode: vae``) on the
    training clips and write it as a ComfyUI VAE file.

    ComfyUI's ``WanVAE`` freshly initialised (seeded), then two runs: short windows (cheap; the
    first-frame and partly cached paths of the causal convolutions), then longer ones in which every
    cache is full, as in the rest of a clip. Each run starts from the previous run's fp16 file, so
    ``first_phase_from`` (the first run's output of an identical-scale build) continues exactly
    where a full build would."""
    import shutil
    import tempfile

    iad_train = library("train")

    with tempfile.TemporaryDirectory(prefix="iad-synthworld-vae-") as tmp:
        work = Path(tmp)
        training_set.write_vae_training_set(work / "vae-data", clips, codec.encode(clips))
        current = work / "vae-init.safetensors"
        save_file(wan_vae.state_dict_for_file(wan_vae.build_vae(9000 + scale.seed), dtype=torch.float32), str(current),
                  metadata=wan_vae.file_metadata())
        phases = [(scale.vae_steps, scale.vae_lr, wan_vae.WINDOW, 9000), (scale.vae_tune_steps, scale.vae_tune_lr,
                                                                           wan_vae.TUNE_WINDOW, 9001)]
        if first_phase_from is not None:
            current, phases = Path(first_phase_from), phases[1:]
        for steps, lr, window, seed in phases:
            config = {
                "mode": "vae", "base_model": str(current), "data": str(work / "vae-data"),
                "output_dir": str(work / f"run-vae-{window}"), "name": f"synthworld-vae-window{window}",
                "steps": steps, "batch_size": scale.vae_batch, "seed": seed + scale.seed,
                "precision": "fp32", "device": "cpu", "cpu_threads": 1,
                "log_every": max(1, steps // 10), "checkpoint_every": steps, "keep_checkpoints": 1,
                "save_dtype": "float16", "resume": False,
                "optimizer": {"lr": lr, "weight_decay": 0.0, "betas": [0.9, 0.99], "warmup_steps": max(1, steps // 20),
                              "decay": "cosine", "min_lr_ratio": 0.0, "grad_clip": 1.0},
                "vae": {"decode": 1.0, "encode": 1.0, "window": window, "random_start": True},
            }
            result = iad_train.run(config)
            for entry in result.history:
                log(f"  wan vae (iad.train, mode vae) window {window} step {entry['step']}/{steps} "
                    f"decode mse {entry['vae_decode']:.5f} encode mse {entry['vae_encode']:.4f}")
            current = result.final_checkpoint
        path = Path(folder) / VAE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(current, path)
    return path


def _vae_stage_process(folder: str, scale: dict, codec_state: dict, result) -> None:
    torch.set_num_threads(1)
    t0 = time.monotonic()
    scale_ = BuildScale(**scale)
    _, ds = training_clips(scale_)
    train_vae_file(Path(folder), ds.video, PatchCodec.from_state_dict(codec_state), scale_, log=lambda *_: None)
    result.send(round(time.monotonic() - t0, 1))


def _start_vae_stage(folder: Path, scale: BuildScale, codec: PatchCodec):
    """Run the VAE stage in its own single-threaded process (it depends on nothing trained after
    the codec, and the build is single-threaded, so the machine's second core does it)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_vae_stage_process, args=(str(folder), asdict(scale), codec.state_dict(), send),
                          name="iad-synthworld-vae", daemon=True)
    process.start()
    return process, receive


def _finish_vae_stage(stage) -> float:
    process, receive = stage
    process.join()
    if process.exitcode != 0 or not receive.poll():
        raise RuntimeError(f"the world's VAE stage failed (its process exited with {process.exitcode}); run "
                           "`python scripts/build_synth_world.py --vae-only --out FOLDER` to see its error")
    return receive.recv()


def build_vae_only(folder: str | Path, scale: BuildScale = FULL, log=print,
                   first_phase_from: str | Path | None = None) -> dict:
    """(Re)train only the Wan VAE of the built world in ``folder`` (its codec and training clips are
    the same as the full build's: the render is seeded), and update the manifest. The VAE stage
    depends on nothing trained after the codec, so this equals a full rebuild's file."""
    torch.set_num_threads(1)
    folder = Path(folder)
    t0 = time.monotonic()
    _, ds = training_clips(scale)
    path = train_vae_file(folder, ds.video, load_judges(folder)[0], scale, log=log, first_phase_from=first_phase_from)
    canonicalize_safetensors(path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["timings_s"][VAE_TIMING] = round(time.monotonic() - t0, 1)
    manifest["build_version"] = BUILD_VERSION
    manifest["scale"] = asdict(scale)
    manifest["files"][path.name] = sha256(path)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def load_judges(folder: str | Path):
    """(codec, action classifier, torch recognizer) from a built world."""
    state = load_file(str(Path(folder) / WORLD_FILE))
    codec = PatchCodec.from_state_dict(state)
    classifier = load_classifier(folder, state)
    return codec, classifier, load_recognizer(folder)


def load_recognizer(folder: str | Path):
    """The torch recognizer, from the weights of the shipped ONNX recognizer (stored once)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(Path(folder) / PACK_NAME / RECOGNIZER_FILE)).graph
    recognizer = faces.Recognizer()
    recognizer.load_state_dict({t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer})
    return recognizer.eval()


def load_classifier(folder: str | Path, state: dict | None = None):
    """The world's action classifier (the experiment's judge) from a built world."""
    state = load_file(str(Path(folder) / WORLD_FILE)) if state is None else state
    classifier = faces.ActionClassifier()
    classifier.load_state_dict({k[len("classifier."):]: v for k, v in state.items() if k.startswith("classifier.")})
    return classifier.eval()


def load_wan(folder: str | Path, system: str | None = None):
    """The world's Wan model; for an adapter ``system`` with a jointly trained base, with that base's
    delta added (what LoraLoaderModelOnly does in a workflow)."""
    path = Path(folder) / WAN_FILE
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        spec = diffusion.WanWorldSpec(**json.loads(f.metadata()["iad_synthworld_wan"]))
    wan = diffusion.build_wan(spec, seed=0)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    delta = base_delta_path(folder, system) if system else None
    if delta is not None:
        base_delta_key = library("train.base_model").base_delta_key     # the trainer's name -> delta key mapping
        names = {base_delta_key(name): name for name in state}
        for key, value in load_file(str(delta)).items():
            state[names[key]] = state[names[key]] + value.float()
    wan.load_state_dict(state)
    return wan.eval()


def base_delta_path(folder: str | Path, system: str) -> Path | None:
    """The jointly trained base delta of ``system``'s adapter in a built world (None: frozen base)."""
    kind = BASE_DELTA_OF.get(system)
    path = Path(folder) / BASE_DELTA_FILES[kind] if kind else None
    return path if path is not None and path.is_file() else None
