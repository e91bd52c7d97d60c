"""Which token rows the identity should reach when a Wan variant puts reference frames in the sequence.

Wan variants append (or prepend) reference frames to the video's tokens: Phantom's subject images,
S2V's and HuMo's reference image, SCAIL's reference frames. IaD Apply adds the identity to the video's
rows only. This experiment tests that choice against the alternative, the identity on every row
(the appended reference frame's too), in the synthetic world:

- ``ref``: the world's Wan with the reference photo's latent appended after the video, in both CFG
  branches, exactly as Wan's ``time_dim_concat`` conditioning (``WanPhantomSubjectToVideo``) appends
  it; no identity. The world's model was trained on clips, so it reads the appended frame as the
  clip's next frame: the video moves towards that photo (its person, and its expression).
- ``ref_iad_video``: + the world's IaD adapter on the video's rows only (what IaD Apply does);
- ``ref_iad_all``: + the same adapter on every row, the reference frame's included.

Same people, prompts, reference photos and noise as the main experiment; the world's judges score
every frame (identity, copy of the photo's expression or pose, the prompt's action), with paired
bootstrap intervals over people. ``bench_synth_experiment.py --reference-rows`` writes the published
numbers (docs/results/synth_reference_rows.json); tests/test_synth_published.py reruns them.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch

from . import diffusion, stats, text, world
from .experiment import METRIC_SCORES, ExperimentConfig, World, _metrics, _resampling, evaluate_frames, setup

SYSTEMS = ("ref", "ref_iad_video", "ref_iad_all")
SYSTEM_NAMES = {"ref": "reference frame appended, no identity", "ref_iad_video": "+ IaD on the video's rows (IaD Apply)",
                "ref_iad_all": "+ IaD on every row, the reference frame's too"}
COMPARISONS = (("ref_iad_video", "ref"), ("ref_iad_all", "ref"), ("ref_iad_all", "ref_iad_video"))


def reference_latents(w: World, photos: list[np.ndarray]) -> torch.Tensor:
    """The photos as one latent frame each, ``[N, 16, 1, h, w]`` (the world's codec)."""
    video = torch.from_numpy(np.stack(photos)).float().div(255).permute(0, 3, 1, 2)[:, None]   # [N, 1, 3, H, W]
    return w.codec.encode(video)


def generate(w: World, system: str, cases, ref_embeddings: torch.Tensor, ref_latents: torch.Tensor,
             noise: torch.Tensor, cfg: ExperimentConfig) -> torch.Tensor:
    contexts = text.encode([c.prompt for c in cases])
    video_rows = slice(0, noise.shape[2] * noise.shape[3] * noise.shape[4] // 4)   # patch 1 x 2 x 2
    if system == "ref":
        latents = diffusion.sample(w.wan, contexts, noise, cfg.steps, cfg.cfg, time_dim_concat=ref_latents)
    else:
        adapter = w.adapters["iad"]
        with torch.no_grad():
            tokens = adapter.identity_tokens(torch.cat([adapter.identity_embedding(e[None]) for e in ref_embeddings]))
        rows = video_rows if system == "ref_iad_video" else None
        latents = diffusion.sample(w.bases["iad"], contexts, noise, cfg.steps, cfg.cfg, adapter, tokens, cfg.weight,
                                   time_dim_concat=ref_latents, token_rows=rows)
    return w.codec.decode(latents)


def run(world_dir, cfg: ExperimentConfig, log=print) -> dict:
    torch.set_num_threads(1)
    t0 = time.monotonic()
    e = setup(world_dir, cfg)
    w, cases, refs, gallery = e.world, e.cases, e.refs, e.gallery
    ref_latents = reference_latents(w, e.photos)
    noise = torch.randn(len(cases), 16, world.FRAMES, world.SIZE // 4, world.SIZE // 4,
                        generator=torch.Generator().manual_seed(70_000 + cfg.seed))   # the main experiment's noise
    results = {}
    for system in SYSTEMS:
        t1 = time.monotonic()
        frames = generate(w, system, cases, refs, ref_latents, noise, cfg)
        results[system] = r = evaluate_frames(w, frames, cases, refs, gallery, cfg.gallery_size)
        log(f"[reference rows] {system}: identity {r.identity_accuracy:.3f} copy {r.copy_rate:.3f} action "
            f"{r.action_accuracy:.3f} facesim {r.face_sim:.3f} ({time.monotonic() - t1:.1f} s)")
    person, people, weights = _resampling(cases, cfg)
    metrics = {s: _metrics(r, person, people, weights) for s, r in results.items()}
    for s, r in results.items():
        r.ci95 = {m: metric.ci() for m, metric in metrics[s].items()}
    comparisons = {f"{a} - {b}": {m: stats.difference(metrics[a][m], metrics[b][m]) for m in METRIC_SCORES}
                   for a, b in COMPARISONS}
    return {"config": asdict(cfg), "systems": SYSTEM_NAMES, "results": {k: v.summary() for k, v in results.items()},
            "comparisons": comparisons, "decision": decide(comparisons),
            "ci": {"method": "percentile bootstrap over people", "resamples": stats.RESAMPLES, "level": stats.LEVEL,
                   "people": people},
            "wall_s": round(time.monotonic() - t0, 1)}


def decide(comparisons: dict) -> dict:
    """Identity on the reference rows is worth it only if it adds identity (significantly) without
    adding copying or losing the prompt's action (significantly); otherwise the video's rows only,
    which leave the reference stream as the user gave it."""
    d = comparisons["ref_iad_all - ref_iad_video"]
    gains_identity = d["identity_accuracy"]["significant"] and d["identity_accuracy"]["value"] > 0
    costs = ((d["copy_rate"]["significant"] and d["copy_rate"]["value"] > 0)
             or (d["action_accuracy"]["significant"] and d["action_accuracy"]["value"] < 0))
    rows = "all rows" if gains_identity and not costs else "video rows only"
    return {"identity_rows": rows, "all_rows_gain_identity": bool(gains_identity), "all_rows_cost_action_or_copy": bool(costs)}
