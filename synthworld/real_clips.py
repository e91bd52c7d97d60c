"""The judges on real clips instead of generated ones: the ceiling every system's scores are read
against (docs/results.md), and how far each action moves the recognizer's embedding.

- **Ceiling.** Each case of the main experiment (same people, prompts, scenes, references and
  galleries) as the world renders it: its person doing its prompt's action, scored by
  ``experiment.evaluate_frames`` as rendered and through the codec (as every system's frames are).
  Identity is also judged per clip (the frame majority among the frames with a face).
- **Embedding spread.** ``clips_per_person`` clips of random actions per held-out person, embedded by
  the world's recognizer on ground-truth keypoints; the cosine between each clip's mean embedding and
  its person's mean over all their clips, by the clip's action.

``python benchmarks/bench_synth_experiment.py --real-clips`` runs it on the shipped world.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from . import build, experiment, world


def run(world_dir, cfg: experiment.ExperimentConfig, clips_per_person: int = 6, log=print) -> dict:
    torch.set_num_threads(1)
    t0 = time.monotonic()
    e = experiment.setup(world_dir, cfg)
    rng = np.random.default_rng(80_000 + cfg.seed)
    video = world.render_clips([world.sample_clip(c.identity, rng, action=c.action, scene=c.scene) for c in e.cases])
    out = {"config": asdict(cfg), "cases": len(e.cases), "clips_per_person": clips_per_person}
    for name, frames in (("rendered", video), ("codec round trip", e.world.codec.decode(e.world.codec.encode(video)))):
        r = experiment.evaluate_frames(e.world, frames, e.cases, e.refs, e.gallery, cfg.gallery_size)
        id_ok = r.scores["id_ok"]
        seen = np.isfinite(id_ok).any(axis=1)
        by_clip = float((np.nanmean(id_ok[seen], axis=1) > 0.5).mean()) if seen.any() else float("nan")
        out[name] = {"identity_accuracy": r.identity_accuracy, "identity_by_clip": by_clip,
                     "action_accuracy": r.action_accuracy, "copy_rate": r.copy_rate, "detection_rate": r.detection_rate}
        log(f"[real clips] {name}: identity {r.identity_accuracy:.3f} (by clip {by_clip:.3f}), action "
            f"{r.action_accuracy:.3f}, copy {r.copy_rate:.3f}, faces found {r.detection_rate:.3f}")

    ds = build.make_dataset(e.identities, clips_per_person, seed=90_000 + cfg.seed, omit_action_prob=0.0)
    with torch.no_grad():
        emb = F.normalize(e.world.recognizer(build.frame_crops(ds)), dim=-1).reshape(len(ds.clips), world.FRAMES, -1)
    clip_mean = F.normalize(emb.mean(1), dim=-1)
    person = torch.as_tensor(ds.person)
    person_mean = F.normalize(torch.stack([clip_mean[person == p].mean(0) for p in range(len(e.identities))]), dim=-1)
    cosine = (clip_mean * person_mean[person]).sum(-1)
    actions = np.array([c.action for c in ds.clips])
    out["cosine_to_person_mean"] = {a: float(cosine[torch.from_numpy(actions == a)].mean())
                                    for a in world.ACTIONS if (actions == a).any()}
    log("[real clips] cosine of a clip's embedding to its person's mean, by action: "
        + ", ".join(f"{a} {v:.2f}" for a, v in out["cosine_to_person_mean"].items()))
    out["wall_s"] = round(time.monotonic() - t0, 1)
    return out
