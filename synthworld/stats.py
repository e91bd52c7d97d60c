"""Confidence intervals for the experiment: a bootstrap over *people*.

The experiment's unit of independence is the held-out person: each person's cases share a face,
and a person's frames are strongly correlated. So the bootstrap resamples people with replacement
(every frame of a drawn person comes along), and every system is scored on the *same* resamples:
differences between systems are paired, which is what makes a 2-point difference on the same people
resolvable at all.

A metric is a ratio of sums over people (``sum of values / number of scored values``), so one
resample is a weighted sum: ``W @ sums / W @ counts`` with ``W[b, p]`` the number of times person
``p`` was drawn in resample ``b``. NaN values (frames without a detected face) count in neither.
"""

from __future__ import annotations

import math

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def resample_weights(people: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``[resamples, people]`` draw counts: each row draws ``people`` people with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(people, size=(resamples, people))
    weights = np.zeros((resamples, people), np.float64)
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    return weights


def per_person(values: np.ndarray, person: np.ndarray, people: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sums, counts) per person of ``values`` ``[cases, ...]`` (NaN skipped), over the cases in
    ``rows`` (a boolean mask; all by default)."""
    values = np.asarray(values, np.float64).reshape(len(person), -1)
    keep = np.ones(len(person), bool) if rows is None else np.asarray(rows, bool)
    finite = np.isfinite(values) & keep[:, None]
    sums = np.zeros(people)
    counts = np.zeros(people)
    np.add.at(sums, person, np.where(finite, values, 0.0).sum(1))
    np.add.at(counts, person, finite.sum(1))
    return sums, counts


class Metric:
    """One metric of one system: its point estimate and its bootstrap distribution."""

    def __init__(self, sums: np.ndarray, counts: np.ndarray, weights: np.ndarray):
        total = counts.sum()
        self.value = float(sums.sum() / total) if total else math.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            self.draws = (weights @ sums) / (weights @ counts)

    def ci(self) -> list[float]:
        return interval(self.draws)


def interval(draws: np.ndarray, level: float = LEVEL) -> list[float]:
    """Percentile interval of bootstrap draws (NaN draws, e.g. a ratio over zero, are dropped)."""
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return [math.nan, math.nan]
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return [float(lo), float(hi)]


def difference(a: Metric, b: Metric) -> dict:
    """``a - b`` on the same resamples: the estimate, its interval, and whether it excludes 0."""
    lo, hi = interval(a.draws - b.draws)
    return {"value": a.value - b.value, "ci95": [lo, hi], "significant": bool(lo > 0 or hi < 0)}


def derived(value: float, draws: np.ndarray) -> dict:
    """A quantity computed from several metrics (a ratio, a recovered share), with its interval."""
    lo, hi = interval(draws)
    return {"value": value, "ci95": [lo, hi]}
