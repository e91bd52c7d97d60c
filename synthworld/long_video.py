"""Drift in the synthetic world: videos four times the length the world's Wan was trained on, made
with context windows, for base, naive injection and IaD.

The world's Wan learned 9-frame clips (``world.FRAMES``). A 36-frame video is sampled the way
ComfyUI's context windows sample it (``WanContextWindowsManual``): at every step the model runs on
each window of ``WINDOW`` frames (core's ``standard_static`` schedule, neighbours sharing
``OVERLAP`` frames) and the windows' outputs are fused with core's pyramid weights; the window
schedule and the weights are core's own functions (``comfy.context_windows``), so the windows are
exactly the ones a user's graph gets. The identity, where there is one, is the same in every window
(IaD Apply's tokens are computed once per run; tests/test_long_video_server.py).

Same held-out people, prompts, reference photos and judges as the main experiment (its 96 people x
2 prompts); the noise is drawn for 36 frames from the main experiment's seed. Reported per system:
identity, copy and action overall and per window, with 95 % bootstrap intervals over people; the
last window minus the first, paired by person; and the drift metric (iad.metrics.drift) of each
video's FaceSim curve: its slope per second and its drop from the first to the last second, averaged
over videos with intervals. ``bench_synth_experiment.py --long-video`` writes
docs/results/synth_long_video.json/.md and the drift curve (synth_long_video.png).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import torch

from . import diffusion, stats, text, world
from ._iad import library
from .experiment import ExperimentConfig, World, _resampling, evaluate_frames, setup

SYSTEMS = ("base", "naive", "iad")
SYSTEM_NAMES = {"base": "base model", "naive": "naive injection", "iad": "IaD"}
LENGTH_FACTOR = 4                  # the video is this many times the trained clip length
WINDOW = world.FRAMES              # each window is a clip of the trained length
OVERLAP = 3                        # frames neighbouring windows share (a third, as Wan's default 30 of 81)
FPS = 8.0                          # the world's frame rate (its motion metric's)
SMOKE_IDENTITIES = 4               # the published smoke run (out["smoke"]) the test suite reruns
WINDOW_METRICS = {"identity_accuracy": "id_ok", "copy_rate": "copied", "action_accuracy": "correct", "face_sim": "face_sim"}


def _core_windows():
    library("comfy_runtime").import_comfy(cpu=True)
    import comfy.context_windows as cw

    return cw


def windows(frames: int, window: int = WINDOW, overlap: int = OVERLAP) -> list[list[int]]:
    """Core's ``standard_static`` windows for ``frames`` latent frames (one per video frame here)."""
    handler = SimpleNamespace(context_length=window, context_overlap=overlap)
    return _core_windows().create_windows_static_standard(frames, handler, {})


def pyramid(length: int) -> torch.Tensor:
    """Core's pyramid fusion weights for a window of ``length`` frames."""
    return torch.tensor(_core_windows().create_weights_pyramid(length), dtype=torch.float32)


@torch.no_grad()
def sample_in_windows(model, contexts: torch.Tensor, noise: torch.Tensor, steps: int, cfg: float, index_lists,
                      adapter=None, tokens: torch.Tensor | None = None, weight: float = 1.0) -> torch.Tensor:
    """``diffusion.sample`` with the model run on each window and the outputs fused as core fuses
    them: ``sum_w weights_w * v_w / sum_w weights_w`` per frame (pyramid weights)."""
    b = noise.shape[0]
    sigmas = diffusion.shifted(torch.linspace(1, 0, steps + 1))
    empty = text.encode([""]).expand(b, -1, -1)
    ctx = torch.cat([contexts, empty])
    mask = torch.cat([torch.ones(b), torch.zeros(b)])
    x = noise.clone()
    for i in range(steps):
        s = sigmas[i]
        t = torch.full((2 * b,), float(s) * 1000)
        fused = torch.zeros_like(torch.cat([x, x]))
        counts = torch.zeros(1, 1, x.shape[2], 1, 1)
        for idx in index_lists:
            xx = torch.cat([x, x])[:, :, idx]
            if adapter is not None:
                with diffusion.IdentityInjection(model, adapter, torch.cat([tokens, tokens]), weight, mask):
                    v = model(xx, t, ctx)
            else:
                v = model(xx, t, ctx)
            w = pyramid(len(idx)).view(1, 1, -1, 1, 1)
            fused[:, :, idx] += v * w
            counts[:, :, idx] += w
        v = fused / counts
        v = v[b:] + cfg * (v[:b] - v[b:])
        x = x + (sigmas[i + 1] - s) * v
    return x


def generate(w: World, system: str, cases, ref_embeddings: torch.Tensor, noise: torch.Tensor, cfg: ExperimentConfig,
             index_lists) -> torch.Tensor:
    contexts = text.encode([c.prompt for c in cases])
    if system == "base":
        latents = sample_in_windows(w.wan, contexts, noise, cfg.steps, cfg.cfg, index_lists)
    else:
        adapter = w.adapters[system]
        with torch.no_grad():
            tokens = adapter.identity_tokens(torch.cat([adapter.identity_embedding(e[None]) for e in ref_embeddings]))
        latents = sample_in_windows(w.bases[system], contexts, noise, cfg.steps, cfg.cfg, index_lists, adapter, tokens,
                                    cfg.weight)
    return w.codec.decode(latents)


def _drift_metrics(face_sim: np.ndarray, person: np.ndarray, people: int, weights: np.ndarray) -> dict:
    """Each video's drift (iad.metrics.drift on its FaceSim curve), averaged over videos, with intervals."""
    identity_drift = library("metrics.drift").identity_drift
    per_video = [identity_drift(list(row), list(range(len(row))), FPS, resamples=0) for row in face_sim]
    out = {}
    for name in ("slope_per_second", "drop"):
        values = np.array([getattr(d, name) for d in per_video], np.float64)
        metric = stats.Metric(*stats.per_person(values, person, people), weights)
        out[name] = {"value": metric.value, "ci95": metric.ci()}
        out[f"_{name}"] = metric
    return out


def run(world_dir, cfg: ExperimentConfig, log=print) -> dict:
    torch.set_num_threads(1)
    t0 = time.monotonic()
    e = setup(world_dir, cfg)
    w, cases, refs, gallery = e.world, e.cases, e.refs, e.gallery
    frames = LENGTH_FACTOR * world.FRAMES
    index_lists = windows(frames)
    noise = torch.randn(len(cases), 16, frames, world.SIZE // 4, world.SIZE // 4,
                        generator=torch.Generator().manual_seed(70_000 + cfg.seed))
    person, people, weights = _resampling(cases, cfg)
    results, curves, per_window, first_vs_last, drift = {}, {}, {}, {}, {}
    metrics = {}
    for system in SYSTEMS:
        t1 = time.monotonic()
        video = generate(w, system, cases, refs, noise, cfg, index_lists)
        r = evaluate_frames(w, video, cases, refs, gallery, cfg.gallery_size)
        results[system] = {m: {"value": stats.Metric(*stats.per_person(r.scores[k], person, people), weights).value,
                               "ci95": stats.Metric(*stats.per_person(r.scores[k], person, people), weights).ci()}
                           for m, k in WINDOW_METRICS.items()}
        curves[system] = {m: [float(np.nanmean(r.scores[k][:, f])) if np.isfinite(r.scores[k][:, f]).any() else None
                              for f in range(frames)] for m, k in WINDOW_METRICS.items()}
        metrics[system] = [{m: stats.Metric(*stats.per_person(r.scores[k][:, idx], person, people), weights)
                            for m, k in WINDOW_METRICS.items()} for idx in index_lists]
        per_window[system] = [{"frames": [idx[0], idx[-1]], **{m: {"value": v.value, "ci95": v.ci()} for m, v in ws.items()}}
                              for idx, ws in zip(index_lists, metrics[system])]
        first_vs_last[system] = {m: stats.difference(metrics[system][-1][m], metrics[system][0][m]) for m in WINDOW_METRICS}
        d = _drift_metrics(r.scores["face_sim"], person, people, weights)
        drift[system] = {k: v for k, v in d.items() if not k.startswith("_")}
        log(f"[long video] {system}: identity first/last window {metrics[system][0]['identity_accuracy'].value:.3f}/"
            f"{metrics[system][-1]['identity_accuracy'].value:.3f}, copy {results[system]['copy_rate']['value']:.3f}, "
            f"action {results[system]['action_accuracy']['value']:.3f}, FaceSim slope "
            f"{drift[system]['slope_per_second']['value']:+.4f}/s ({time.monotonic() - t1:.1f} s)")
    return {"config": {**asdict(cfg), "frames": frames, "trained_frames": world.FRAMES, "window": WINDOW,
                       "overlap": OVERLAP, "schedule": "standard_static", "fuse": "pyramid", "fps": FPS},
            "windows": [[idx[0], idx[-1]] for idx in index_lists], "systems": SYSTEM_NAMES,
            "results": results, "per_window": per_window, "last_minus_first_window": first_vs_last,
            "drift": drift, "per_frame": curves,
            "ci": {"method": "percentile bootstrap over people", "resamples": stats.RESAMPLES, "level": stats.LEVEL,
                   "people": people},
            "wall_s": round(time.monotonic() - t0, 1)}
