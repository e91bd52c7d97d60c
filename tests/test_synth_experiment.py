"""The synthetic-world experiment, reduced (minutes), with the shipped trained world.

What holds and is asserted: the world's base model draws the action the prompt asks for (the
condition for the experiment to mean anything), both adapters carry the identity of people they
never saw (above the base model), IaD copies the reference photo less than naive injection (at
identity weight 3, overall and clearly where the photo shows a head pose, which the recognizer
leaks most) and keeps more of the prompt's action, the recognizer leaks expression and
pose into its embedding (as ArcFace does), IaD's decoupler removes most of that leak while keeping
identity, and the demo graph runs natively through a real server and draws the prompt's action.

At the default weight 1 no adapter copies measurably in the published run (96 people x 2 prompts:
naive 1.1 %, IaD 1.0 %, the base model's coincidence rate 0.8 %), so the copy rates at weight 1
are printed here, not compared (docs/results.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthworld import assets, build, demo, experiment, faces, wan_vae, world


@pytest.fixture(scope="module")
def reduced():
    cfg = experiment.ExperimentConfig(identities=48, prompts_per_identity=1, steps=12, seed=0)
    out = experiment.run(assets.WORLD_DIR, cfg, systems=("base", "naive", "iad"), log=print)
    out.pop("_samples")
    return out


def test_the_world_follows_the_prompt_and_adapters_carry_heldout_identities(reduced):
    base, naive, iad = (reduced["results"][k] for k in ("base", "naive", "iad"))
    print(f"\nreduced experiment (48 held-out people, 12 steps, wall {reduced['wall_s']} s):")
    for name, r in (("base", base), ("naive", naive), ("IaD", iad)):
        print(f"  {name:5s} copy {r['copy_rate']:.3f}  action {r['action_accuracy']:.3f}  identity "
              f"{r['identity_accuracy']:.3f}  facesim {r['face_sim']:.3f}")
    # the base model draws the prompt's action (9 classes; published run: 87.6 %)
    assert base["action_accuracy"] > 0.6
    # identity: 24-way accuracy of the base model is about chance (1/24); both adapters beat it on
    # these people (the published run's first 48; identity numbers depend on the people drawn)
    assert naive["identity_accuracy"] > base["identity_accuracy"] + 0.05
    assert iad["identity_accuracy"] > base["identity_accuracy"] + 0.05
    assert naive["face_sim"] > base["face_sim"] + 0.05 and iad["face_sim"] > base["face_sim"] + 0.05
    for r in (base, naive, iad):
        assert 0.0 <= r["copy_rate"] <= 1.0 and r["detection_rate"] > 0.9


def _groups(r):
    return "; ".join(f"{k} copy {v['copy_rate']:.3f} action {v['action_accuracy']:.3f}" for k, v in r["by_reference"].items())


def test_iad_copies_the_photo_less_than_naive_injection(reduced):
    """Naive injection copies the reference photo's head pose into the video (the "front-facing
    headshot" failure, strongest where the recognizer leaks most: head turns and nods) and more so
    as users raise IaD Apply's weight; IaD, fed the decoupled identity, copies less and follows the
    prompt better (published, 96 people x 2 prompts: docs/results.md)."""
    at_one = reduced["results"]
    print(f"\nweight 1 by reference: naive {_groups(at_one['naive'])}\n                       IaD {_groups(at_one['iad'])}")
    cfg = experiment.ExperimentConfig(identities=48, prompts_per_identity=1, steps=12, seed=0, weight=3.0)
    out = experiment.run(assets.WORLD_DIR, cfg, systems=("naive", "iad"), log=print)
    naive, iad = out["results"]["naive"], out["results"]["iad"]
    print(f"weight 3: naive copy {naive['copy_rate']:.3f} action {naive['action_accuracy']:.3f} identity "
          f"{naive['identity_accuracy']:.3f}; IaD copy {iad['copy_rate']:.3f} action {iad['action_accuracy']:.3f} "
          f"identity {iad['identity_accuracy']:.3f}\nweight 3 by reference: naive {_groups(naive)}\n"
          f"                       IaD {_groups(iad)}")
    # IaD beats naive on copy rate, overall and clearly where the photo shows a head pose (these 48
    # people: 12.5 % against 6.2 %; published, 96 x 2: 9.6 % against 3.2 %)
    assert iad["copy_rate"] < naive["copy_rate"]
    pose_naive, pose_iad = naive["by_reference"]["head pose"], iad["by_reference"]["head pose"]
    assert pose_naive["copy_rate"] > 0.05 and pose_iad["copy_rate"] < 0.6 * pose_naive["copy_rate"]
    # and keeps more of the prompt's action; identity within the 2-point margin is checked
    # on the published run, not here (48 people: too few for a 2-point identity comparison)
    assert iad["action_accuracy"] > naive["action_accuracy"] + 0.05
    assert at_one["iad"]["action_accuracy"] >= at_one["naive"]["action_accuracy"] - 0.02


def test_the_recognizer_leaks_expression_and_the_iad_decoupler_removes_part_of_it():
    leak = experiment.leakage_probe(assets.WORLD_DIR)          # 32 held-out people x 6 clips, as published
    raw, iad = leak["probe"]["raw embedding"], leak["probe"]["IaD z_id (trained decoupler)"]
    print(f"\nleakage: chance {leak['chance']:.3f}, " + ", ".join(
        f"{k}: action {v['action_probe_accuracy']:.3f} / identity {v['identity_retrieval_top1']:.3f}"
        for k, v in leak["probe"].items()))
    assert raw["action_probe_accuracy"] > leak["chance"] + 0.2         # it leaks, like ArcFace (published: 57 % vs 19 %)
    # z_id keeps less than half of the above-chance action information (published: 24 %)
    assert iad["action_probe_accuracy"] - leak["chance"] < 0.5 * (raw["action_probe_accuracy"] - leak["chance"])
    # identity survives the decoupling (published: 89.4 % raw, 94.5 % z_id)
    assert raw["identity_retrieval_top1"] > 0.85 and iad["identity_retrieval_top1"] > raw["identity_retrieval_top1"]


def test_demo_graph_runs_natively_and_shows_a_face_of_the_world(comfy_server):
    """The demo prompt (what `make demo` can run with the world) through the real server: a held-out
    person's smiling photo, the prompt 'a person frowns at the beach'. Whether the frames frown
    rather than smile is what the experiment measures (docs/results.md); here: the native graph runs
    and makes frames in which the world's real face pack finds a face."""
    for folder, files in demo.demo_models().items():
        for name, path in files.items():
            comfy_server.add_model(folder, path, name)
    prompt, save = demo.demo_prompt(scale=1, video_scale=1, seed=3)
    result = comfy_server.run_ok(prompt)
    frames = result.images(save)                              # the exact codec, as the experiment decodes
    assert len(frames) == world.FRAMES and frames[0].shape[:2] == (world.SIZE, world.SIZE)
    video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    # the native VAE path: Load VAE + VAE Decode -> a 33-frame 64x64 video whose frames 4k are the frames
    from PIL import Image, ImageSequence

    saved = result.ui(demo.VIDEO_NODE)["images"][0]
    with Image.open(comfy_server.output_dir / saved.get("subfolder", "") / saved["filename"]) as webp:
        decoded = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(webp)])
    assert decoded.shape == (wan_vae.VIDEO_FRAMES, wan_vae.VIDEO_SIZE, wan_vae.VIDEO_SIZE, 3)
    vae_frames = wan_vae.world_frames(torch.from_numpy(decoded).float() / 255)
    gap = float((vae_frames - video).abs().mean())
    print(f"\nVAE Decode vs the codec on the demo's latent: mean abs difference {gap:.3f}")
    assert gap < 0.08                                          # measured 0.04 (the VAE is blurrier: docs/synth-world.md)
    from harness.paths import ARTIFACTS_DIR

    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(frames, 1)).resize((world.SIZE * world.FRAMES * 4, world.SIZE * 4), Image.NEAREST).save(
        ARTIFACTS_DIR / "synthworld_demo_frames.png")
    w = experiment.World(assets.WORLD_DIR)
    with torch.no_grad():
        pred = [world.ACTIONS[i] for i in w.classifier(video).argmax(-1).tolist()]
        vae_pred = [world.ACTIONS[i] for i in w.classifier(vae_frames).argmax(-1).tolist()]
    print(f"\ndemo frames classified as: {pred}\n  the same latent through VAE Decode: {vae_pred}")
    # the prompt's action, not the smiling photo's (the world's judge; 9 of 9 frames at this seed)
    assert pred.count("frown") > len(pred) // 2 and pred.count("smile") == 0
    # the generated frames show a face of the world that the pack detects
    assert sum(e is not None for e in w.embed(frames)) >= world.FRAMES - 2
    assert sum(e is not None for e in w.embed(list(faces.to_uint8(vae_frames)))) >= world.FRAMES - 2   # and the VAE's video
