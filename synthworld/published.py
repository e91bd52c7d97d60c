"""How a rerun of a synthetic-world experiment compares with its published JSON.

The world's float kernels round differently on each CPU type (torch's dispatch level, MKL and
oneDNN pick AVX2, AVX-512 or AMX code themselves; docs/synth-world.md, "Reproducing"). Two kinds
of number follow from that:

- *continuous scores* (FaceSim, identity stability, motion) move in their last digits: at most
  1e-5 measured, CONTINUOUS_TOLERANCE allowed;
- *frame decisions* (identity, copy, action, detection: a count of frames whose arg-max or
  threshold fell one way) are exact on one CPU type, and on another a frame whose two best
  scores lie within float noise of each other can flip. Measured: none on two Intel Xeons, one
  naive identity decision of 1,674 on an AMD EPYC without AVX-512 (naive identity 28.734 ->
  28.674 %, its interval's ends by at most 0.12 points). DECISION_TOLERANCE allows a handful of
  such flips and nothing like a changed experiment.

A significance flag or a goal's ``met`` may differ only where the number deciding it lies within
the tolerance of its threshold (an interval end near 0, a value near its target).
"""

from __future__ import annotations

from dataclasses import dataclass

# drift: of the FaceSim curve; cosine_to_person_mean: the recognizer's spread (real_clips.py)
CONTINUOUS_METRICS = ("face_sim", "identity_stability", "motion_mean", "drift", "cosine_to_person_mean")
CONTINUOUS_TOLERANCE = 1e-4
# Rates are fractions of ~1,700 frames per system: 0.01 is ~17 frames (one flip moved a rate 6e-4).
DECISION_TOLERANCE = 0.01
# One frame of the ~190 cases behind a per-frame value is 0.0054: 0.03 is ~5 of them.
PER_FRAME_TOLERANCE = 0.03
# Goals in percentage points, and the two goal ratios (copy over naive's, action recovered share),
# whose denominators (naive copy ~0.17, action lost ~0.31) magnify a flip 3-6 times.
POINTS_TOLERANCE = 100 * DECISION_TOLERANCE
RATIO_TOLERANCE = 0.05


@dataclass(frozen=True)
class Difference:
    path: str
    published: object
    rerun: object
    kind: str          # "continuous", "decision", "flag" or "structure"
    tolerance: float   # 0 for flags and structure

    @property
    def size(self) -> float:
        try:
            return abs(float(self.published) - float(self.rerun))
        except (TypeError, ValueError):
            return float("inf")

    @property
    def within(self) -> bool:
        return self.kind in ("continuous", "decision") and self.size <= self.tolerance


def _tolerance(path: tuple[str, ...]) -> tuple[str, float]:
    if any(name in path for name in CONTINUOUS_METRICS):
        return "continuous", CONTINUOUS_TOLERANCE
    if "per_frame" in path:
        return "decision", PER_FRAME_TOLERANCE
    if path and path[0] == "goals":
        if any(part.endswith("_points") for part in path):
            return "decision", POINTS_TOLERANCE
        if any(part in ("iad_copy_over_naive", "iad_action_recovered_share") for part in path):
            return "decision", RATIO_TOLERANCE
    return "decision", DECISION_TOLERANCE


def _borderline_flag(published: dict, rerun: dict, key: str, path: tuple[str, ...]) -> bool:
    """A flag that flipped because the number deciding it sits within tolerance of its threshold."""
    _, tol = _tolerance(path)
    if key == "significant":   # significant: the interval excludes 0; an end near 0 decides it
        ends = [abs(v) for v in (published.get("ci95") or []) + (rerun.get("ci95") or []) if isinstance(v, (int, float))]
        return bool(ends) and min(ends) <= tol
    if key == "met" and isinstance(published.get("target"), (int, float)):
        values = [v for v in (published.get("value"), rerun.get("value")) if isinstance(v, (int, float))]
        return bool(values) and min(abs(v - published["target"]) for v in values) <= tol
    return False


def differences(published, rerun, path: tuple[str, ...] = ()) -> list[Difference]:
    """Every leaf where the rerun is not exactly the published value, classified."""
    here = "/".join(path)
    if isinstance(published, dict) and isinstance(rerun, dict):
        if published.keys() != rerun.keys():
            return [Difference(here, sorted(published), sorted(rerun), "structure", 0.0)]
        out = []
        for k in published:
            if k in ("significant", "met") and published[k] != rerun[k]:
                kind = "decision" if _borderline_flag(published, rerun, k, path) else "flag"
                out.append(Difference(f"{here}/{k}", published[k], rerun[k], kind, float("inf") if kind == "decision" else 0.0))
                continue
            out += differences(published[k], rerun[k], path + (k,))
        return out
    if isinstance(published, list) and isinstance(rerun, list):
        if len(published) != len(rerun):
            return [Difference(here, len(published), len(rerun), "structure", 0.0)]
        return [d for i, (p, r) in enumerate(zip(published, rerun)) for d in differences(p, r, path + (str(i),))]
    if published == rerun or (published != published and rerun != rerun):   # equal, or both NaN
        return []
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (published, rerun))
    if not numeric:
        return [Difference(here, published, rerun, "structure", 0.0)]
    kind, tol = _tolerance(path)
    return [Difference(here, published, rerun, kind, tol)]


def mismatches(published, rerun, path: tuple[str, ...] = ()) -> list[str]:
    """Differences beyond their tolerance, as lines to print."""
    return [f"{d.path}: published {d.published!r}, rerun {d.rerun!r} ({d.kind}"
            + (f", tolerance {d.tolerance:g})" if d.kind in ("continuous", "decision") else ")")
            for d in differences(published, rerun, path) if not d.within]


def largest(published, rerun, path: tuple[str, ...] = ()) -> dict[str, Difference]:
    """The largest difference per kind of number and metric (e.g. ``continuous face_sim``)."""
    out: dict[str, Difference] = {}
    for d in differences(published, rerun, path):
        parts = d.path.split("/")
        metric = next((p for p in reversed(parts) if not p.isdigit() and p not in ("ci95", "value", "per_frame")), d.path)
        key = f"{d.kind} {metric}"
        if key not in out or d.size > out[key].size:
            out[key] = d
    return dict(sorted(out.items()))
