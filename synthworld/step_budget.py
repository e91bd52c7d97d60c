"""Fit a world build's training steps to a wall-clock deadline (``make gpu-world``).

GPU time comes about 15 minutes at a time, machine start included, so the GPU-scale world must be
built and judged in 8 minutes on a machine whose speed this CPU-only project cannot measure ahead.
The scale (``build.GPU``) gives each stage's steps as an upper bound; before a stage trains, a short
probe run of the same ``iad.train`` configuration times the machine, and the stage gets as many
steps as fit its share of the time left. Steps, not seconds, bound the real run, so its learning-rate
schedule is whole; the manifest records the probes and the steps run (``build_world``'s ``scale``).

The naive and the IaD adapter always get the *same* number of steps: the experiment compares them.
Each is probed in its own configuration (IaD's decoupling losses make its steps slower than naive's),
and the steps are the ones both runs together fit.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field


def steady_samples_per_s(history: list[dict], batch: int) -> float:
    """Samples per second between the first and the last logged step of an ``iad.train`` run (its
    history's ``samples_per_s`` is cumulative from the first step, which carries the warm-up: CUDA
    context, kernels chosen, caches filled). One entry: that entry's cumulative rate."""
    entries = [e for e in history if e.get("samples_per_s", 0) > 0]
    if not entries:
        raise ValueError("the probe run logged no step with a rate (log_every must be below its steps)")
    first, last = entries[0], entries[-1]
    if last["step"] == first["step"]:
        return float(last["samples_per_s"])
    elapsed = [e["step"] * batch / e["samples_per_s"] for e in (first, last)]
    span = elapsed[1] - elapsed[0]
    return (last["step"] - first["step"]) * batch / span if span > 0 else float(last["samples_per_s"])


@dataclass
class Probe:
    stage: str
    steps: int
    batch: int
    wall_s: float               # the whole probe run: start-up (model, data) + its steps
    samples_per_s: float        # steady rate, after the first logged step
    startup_s: float            # wall_s minus its steps at the steady rate: paid again by the real run
    # the last logged interval's wall time per step and CPU time building the batches per step (iad.train's
    # step_ms, data_ms): how much of a step the data path is (None: not logged)
    step_ms: float | None = None
    data_ms: float | None = None


@dataclass
class StepBudget:
    """``deadline``: ``time.time()`` by which every training stage must have finished (the caller keeps
    what comes after -- the experiment -- out of it). ``probe_steps``: each probe's length."""

    deadline: float
    probe_steps: int = 30
    slack: float = 0.9          # the share of the fitted time actually planned (rates wander)
    probes: list[Probe] = field(default_factory=list)
    fitted: dict[str, dict] = field(default_factory=dict)

    def left_s(self) -> float:
        return self.deadline - time.time()

    def probe(self, stage: str, batch: int, run) -> Probe:
        """Run ``run(steps, log_every)`` (an ``iad.train`` run of the stage's configuration) and time it."""
        t0 = time.time()
        result = run(self.probe_steps, max(1, self.probe_steps // 3))
        wall = time.time() - t0
        rate = steady_samples_per_s(result.history, batch)
        last = result.history[-1]
        probe = Probe(stage, self.probe_steps, batch, round(wall, 2), round(rate, 2),
                      round(max(0.0, wall - self.probe_steps * batch / rate), 2),
                      *(round(last[k], 2) if k in last else None for k in ("step_ms", "data_ms")))
        self.probes.append(probe)
        return probe

    def fit(self, stage: str, planned: int, probes: list[Probe], share: float) -> int:
        """Steps for one run per probe in ``probes`` (each run paying its own probe's start-up and
        training at its own rate, all the *same* number of steps) in ``share`` of the time left; at
        most ``planned``, at least one. Several cycles of one configuration: its probe repeated."""
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        if not probes:
            raise ValueError("fit needs at least one probe")
        seconds = self.left_s() * share * self.slack - sum(p.startup_s for p in probes)
        seconds_per_step = sum(p.batch / p.samples_per_s for p in probes)
        steps = max(1, min(planned, int(seconds / seconds_per_step)))
        self.fitted[stage] = {"planned": planned, "steps": steps, "runs": len(probes),
                              "probes": sorted({p.stage for p in probes}), "seconds": round(seconds, 1),
                              "limited_by": "time" if steps < planned else "scale"}
        return steps

    def record(self) -> dict:
        """For the manifest."""
        return {"probes": [asdict(p) for p in self.probes], "fitted": self.fitted,
                "probe_steps": self.probe_steps, "slack": self.slack}
