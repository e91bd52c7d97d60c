"""The synthetic world's drift experiment (synthworld/long_video.py): 36-frame videos, four times the
world's clips, sampled in core's context windows for base, naive injection and IaD.

What is checked here: the windows and their fusion are core's own (``comfy.context_windows``); one
window over a whole clip samples exactly as the main experiment's sampler; the published file
(docs/results/synth_long_video.json, ``bench_synth_experiment.py --long-video``, about 10 minutes)
holds what its docs say, and its 4-person smoke run is what a rerun gives (to what another CPU type
explains, synthworld/published.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from harness.paths import REPO_ROOT

from synthworld import assets, diffusion, experiment, long_video, text, world
from synthworld import published as published_cmp

PUBLISHED = REPO_ROOT / "docs" / "results" / "synth_long_video.json"


def test_the_windows_and_their_weights_are_cores():
    assert long_video.windows(36) == [list(range(s, s + 9)) for s in (0, 6, 12, 18, 24, 27)]
    assert long_video.windows(9) == [list(range(9))]          # a clip of the trained length: one pass
    import comfy.context_windows as cw   # importable once the world's library has set ComfyUI up

    assert long_video.pyramid(9).tolist() == cw.create_weights_pyramid(9) == [1, 2, 3, 4, 5, 4, 3, 2, 1]


def test_one_window_over_a_clip_samples_as_the_main_experiments_sampler():
    """With a single window the fusion divides each frame's output by its own weight: the sampler is
    then the main experiment's (to float rounding), identity injection included."""
    w = experiment.World(assets.WORLD_DIR)
    contexts = text.encode(["a person smiles at the beach"])
    noise = torch.randn(1, 16, world.FRAMES, world.SIZE // 4, world.SIZE // 4, generator=torch.Generator().manual_seed(3))
    adapter = w.adapters["iad"]
    person = experiment.heldout_identities(assets.WORLD_DIR, 1, 0)[0]
    embedding = w.embed([experiment.photo(person, "smile")])[0]
    with torch.no_grad():
        tokens = adapter.identity_tokens(adapter.identity_embedding(embedding[None]))
    ours = long_video.sample_in_windows(w.bases["iad"], contexts, noise, 4, 3.0, long_video.windows(world.FRAMES),
                                        adapter, tokens, 1.0)
    main = diffusion.sample(w.bases["iad"], contexts, noise, 4, 3.0, adapter, tokens, 1.0)
    assert torch.allclose(ours, main, atol=1e-4, rtol=0), (ours - main).abs().max()


@pytest.fixture(scope="module")
def published():
    return json.loads(PUBLISHED.read_text())


def test_the_published_run_is_four_times_the_trained_length_in_windows(published):
    c = published["config"]
    assert c["frames"] == 4 * c["trained_frames"] == 36 and c["window"] == world.FRAMES
    assert published["ci"]["people"] == 96 and c["prompts_per_identity"] == 2
    assert published["windows"] == [[w[0], w[-1]] for w in long_video.windows(36)]
    for system in long_video.SYSTEMS:
        assert len(published["per_window"][system]) == len(published["windows"])
        assert len(published["per_frame"][system]["identity_accuracy"]) == 36
        for key in ("slope_per_second", "drop"):
            assert published["drift"][system][key]["ci95"][0] <= published["drift"][system][key]["value"] \
                <= published["drift"][system][key]["ci95"][1]


def test_the_published_smoke_run_is_what_a_rerun_gives(published):
    rerun = json.loads(json.dumps(long_video.run(
        assets.WORLD_DIR, experiment.ExperimentConfig(identities=long_video.SMOKE_IDENTITIES), log=print)))
    smoke = published["smoke"]
    assert rerun["config"] == smoke["config"] and rerun["windows"] == smoke["windows"]
    for key in ("results", "per_window", "last_minus_first_window", "drift", "per_frame"):
        mismatches = published_cmp.mismatches(smoke[key], rerun[key], (key,))
        assert not mismatches, "\n".join(mismatches[:20])
