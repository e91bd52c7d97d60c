"""The synthetic-world experiment, reduced (minutes), with the shipped trained world.

What holds and is asserted: both adapters carry the identity of people they never saw (far above
the base model), the recognizer leaks expression into its embedding (as ArcFace does), IaD's
decoupler removes part of that leak while keeping identity, and the demo graph runs natively
through a real server.

What issue 10 asked for and does NOT hold with the shipped world -- IaD copying the reference
photo's expression less than naive injection in the generated videos -- is measured and printed
here, and reported in docs/results.md with the reasons; it is not asserted, because asserting it
would be false (naive injection copies almost nothing: the tiny base model barely renders the
actions, so there is little to copy).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iad.synth import assets, build, demo, experiment, world


@pytest.fixture(scope="module")
def reduced():
    cfg = experiment.ExperimentConfig(identities=24, steps=8, seed=1)
    out = experiment.run(assets.WORLD_DIR, cfg, systems=("base", "naive", "iad"), log=print)
    out.pop("_samples")
    return out


def test_adapters_carry_heldout_identities_and_the_copy_rates_are_measured(reduced):
    base, naive, iad = (reduced["results"][k] for k in ("base", "naive", "iad"))
    print(f"\nreduced experiment (24 held-out people, 8 steps, wall {reduced['wall_s']} s):")
    for name, r in (("base", base), ("naive", naive), ("IaD", iad)):
        print(f"  {name:5s} copy {r['copy_rate']:.3f}  action {r['action_accuracy']:.3f}  identity "
              f"{r['identity_accuracy']:.3f}  facesim {r['face_sim']:.3f}")
    # identity: 24-way accuracy of the base model is chance (about 1/24); both adapters beat it
    assert naive["identity_accuracy"] > base["identity_accuracy"] + 0.08
    assert iad["identity_accuracy"] > base["identity_accuracy"]
    # FaceSim is the cosine to the *expressive* reference photo, so the decoupled IaD scores lower
    assert naive["face_sim"] > base["face_sim"] + 0.05 and iad["face_sim"] > base["face_sim"]
    for r in (base, naive, iad):
        assert 0.0 <= r["copy_rate"] <= 1.0 and 0.0 <= r["action_accuracy"] <= 1.0 and r["detection_rate"] > 0.5


def test_the_recognizer_leaks_expression_and_the_iad_decoupler_removes_part_of_it():
    leak = experiment.leakage_probe(assets.WORLD_DIR)          # 32 held-out people x 6 clips, as published
    raw, iad = leak["probe"]["raw embedding"], leak["probe"]["IaD z_id (trained decoupler)"]
    print(f"\nleakage: chance {leak['chance']:.3f}, " + ", ".join(
        f"{k}: action {v['action_probe_accuracy']:.3f} / identity {v['identity_retrieval_top1']:.3f}"
        for k, v in leak["probe"].items()))
    assert raw["action_probe_accuracy"] > leak["chance"] + 0.08        # it leaks, like ArcFace (published: 31 % vs 16 %)
    assert iad["action_probe_accuracy"] < raw["action_probe_accuracy"]  # z_id carries less of the action
    assert raw["identity_retrieval_top1"] > 0.9 and iad["identity_retrieval_top1"] > 0.9


def test_demo_graph_runs_natively_and_shows_a_face_of_the_world(comfy_server):
    """The demo prompt (what `make demo` can run with the world) through the real server: a held-out
    person's smiling photo, the prompt 'frowns, then turns left'. Whether the frames then frown and
    turn is what the experiment measures (docs/results.md); here: the native graph runs and makes
    frames in which the world's real face pack finds a face."""
    for folder, files in demo.demo_models().items():
        for name, path in files.items():
            comfy_server.add_model(folder, path, name)
    prompt, save = demo.demo_prompt(scale=1, seed=3)
    frames = comfy_server.run_ok(prompt).images(save)
    assert len(frames) == world.FRAMES and frames[0].shape[:2] == (world.SIZE, world.SIZE)
    from PIL import Image

    from harness.paths import ARTIFACTS_DIR

    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(frames, 1)).resize((world.SIZE * world.FRAMES * 4, world.SIZE * 4), Image.NEAREST).save(
        ARTIFACTS_DIR / "synthworld_demo_frames.png")
    w = experiment.World(assets.WORLD_DIR)
    video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        pred = [world.ACTIONS[i] for i in w.classifier(video).argmax(-1).tolist()]
    print(f"\ndemo frames classified as: {pred}")
    # the generated frames show a face of the world that the pack detects
    assert sum(e is not None for e in w.embed(frames)) >= world.FRAMES - 2
