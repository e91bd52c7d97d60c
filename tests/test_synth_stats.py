"""The experiment's confidence intervals (synthworld/stats.py): a paired bootstrap over people."""

from __future__ import annotations

import numpy as np

from synthworld import stats


def test_per_person_sums_skip_nan_and_masked_cases():
    values = np.array([[1.0, 0.0, np.nan], [1.0, 1.0, 1.0], [0.0, np.nan, np.nan]])
    person = np.array([0, 0, 1])
    sums, counts = stats.per_person(values, person, 2)
    assert sums.tolist() == [4.0, 0.0] and counts.tolist() == [5.0, 1.0]
    sums, counts = stats.per_person(values, person, 2, rows=np.array([False, True, True]))
    assert sums.tolist() == [3.0, 0.0] and counts.tolist() == [3.0, 1.0]


def test_resamples_draw_people_with_replacement_and_are_seeded():
    w = stats.resample_weights(10, resamples=50, seed=3)
    assert w.shape == (50, 10) and (w.sum(1) == 10).all() and (w >= 0).all()
    assert np.array_equal(w, stats.resample_weights(10, resamples=50, seed=3))
    assert not np.array_equal(w, stats.resample_weights(10, resamples=50, seed=4))


def test_the_interval_covers_the_truth_at_about_its_level():
    """Simulated experiments (100 people, 9 correlated frames each, true rate 0.3): the 95 % interval
    contains the true rate in about 95 % of them."""
    rng = np.random.default_rng(0)
    covered, trials = 0, 200
    weights = stats.resample_weights(100, resamples=1000, seed=1)
    for _ in range(trials):
        person_rate = np.clip(rng.normal(0.3, 0.15, 100), 0, 1)          # people differ
        frames = (rng.random((100, 9)) < person_rate[:, None]).astype(float)
        m = stats.Metric(*stats.per_person(frames, np.arange(100), 100), weights)
        lo, hi = m.ci()
        covered += lo <= 0.3 <= hi
    assert 0.88 <= covered / trials <= 0.99


def test_paired_differences_resolve_what_unpaired_intervals_cannot():
    """Two systems on the same people: person effects are shared, so a small but consistent
    difference is significant although each system's own interval overlaps the other's."""
    rng = np.random.default_rng(2)
    base_rate = rng.uniform(0.1, 0.9, 96)
    a = (rng.random((96, 9)) < base_rate[:, None]).astype(float)
    b = a.copy()
    flip = (rng.random((96, 9)) < 0.06) & (a == 0)                        # b is right on 6 % more of a's misses
    b[flip] = 1.0
    w = stats.resample_weights(96, seed=0)
    ma, mb = (stats.Metric(*stats.per_person(x, np.arange(96), 96), w) for x in (a, b))
    assert mb.ci()[0] < ma.ci()[1]                                         # the intervals overlap
    d = stats.difference(mb, ma)
    assert d["significant"] and d["ci95"][0] > 0 and abs(d["value"] - (mb.value - ma.value)) < 1e-12
    same = stats.difference(ma, ma)
    assert not same["significant"] and same["ci95"] == [0.0, 0.0]


def test_the_point_estimate_is_the_frame_mean():
    rng = np.random.default_rng(5)
    values = rng.random((20, 9))
    values[rng.random((20, 9)) < 0.1] = np.nan
    person = np.repeat(np.arange(10), 2)
    m = stats.Metric(*stats.per_person(values, person, 10), stats.resample_weights(10, resamples=10))
    assert abs(m.value - np.nanmean(values)) < 1e-12


def test_between_worlds_pairs_each_system_by_person():
    """Two builds of the world run on the same cases: each system's variant - reference, paired by
    person (identical runs differ by exactly 0; a uniform shift is found and significant)."""
    from synthworld import experiment

    rng = np.random.default_rng(7)
    people, frames = 48, 9
    cases = [experiment.Case(identity=None, reference_action="smile", action="frown", scene="beach", prompt="p", person=p)
             for p in range(people) for _ in range(2)]

    def result(correct):
        zeros = np.zeros_like(correct)
        scores = {key: zeros for key in experiment.METRIC_SCORES.values()}
        return experiment.SystemResult(*[0.0] * 7, scores={**scores, "correct": correct})

    rate = np.repeat(rng.uniform(0.2, 0.8, people), 2)
    reference = (rng.random((len(cases), frames)) < rate[:, None]).astype(float)
    variant = reference.copy()
    variant[(rng.random(variant.shape) < 0.1) & (variant == 0)] = 1.0
    cfg = experiment.ExperimentConfig(identities=people)
    same = experiment.between_worlds({"iad": result(reference)}, {"iad": result(reference)}, cases, cfg)
    assert set(same) == {"iad"} and same["iad"]["action_accuracy"] == {"value": 0.0, "ci95": [0.0, 0.0], "significant": False}
    d = experiment.between_worlds({"iad": result(variant), "naive": result(reference)}, {"iad": result(reference)},
                                  cases, cfg)["iad"]["action_accuracy"]
    assert d["significant"] and d["ci95"][0] > 0
    assert abs(d["value"] - (variant.mean() - reference.mean())) < 1e-12
