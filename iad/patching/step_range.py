"""When the identity acts: the step range, from percents to sigmas at sampling time.

IaD Apply takes ``start_percent``/``end_percent``. They become sigmas only when a sampler starts
(``StepRangeResolver``, an OUTER_SAMPLE wrapper), against the model_sampling of the model that is
really sampled, as core does for a conditioning's start/end percent. So IaD Apply before or after
ModelSamplingSD3 (or any other shift or LoRA node) gives the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

# Relative tolerance of the sigma comparisons: far above float32 rounding (~6e-8), far below the
# gap between two sampled sigmas.
SIGMA_RTOL = 1e-5

STEP_GATES_KEY = "iad_step_gates"   # transformer_options: {entry uid: StepGate} of the running sampler


@dataclass(frozen=True)
class StepGate:
    """Active while ``sigma_end <= sigma <= sigma_start``. The sigmas come from the model's own
    ``percent_to_sigma(start_percent/end_percent)`` (so shifts from ModelSamplingSD3 etc. count)."""

    sigma_start: float
    sigma_end: float

    def active(self, sigma: float) -> bool:
        # Inclusive up to float rounding: schedulers read sigmas from a float32 table, while
        # percent_to_sigma may compute in float64, so the step that starts exactly at start_percent
        # (step 6 of 8 for 0.75 with the "simple" scheduler) can land a few ulps above sigma_start.
        slack = SIGMA_RTOL * abs(sigma)
        return self.sigma_end - slack <= sigma <= self.sigma_start + slack


def gate_for(sampling, start_percent: float, end_percent: float) -> StepGate:
    """The gate of a percent range on one model_sampling object."""
    return StepGate(float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent)))


def step_gate(model, start_percent: float, end_percent: float) -> StepGate:
    """The gate on a ModelPatcher's current model_sampling (the fallback for calls outside a sampler)."""
    return gate_for(model.get_model_object("model_sampling"), start_percent, end_percent)


class StepRangeResolver:
    """An OUTER_SAMPLE wrapper (it rides along on every later clone of the patched model): when a
    sampler starts, it resolves its entry's percent range against that model's model_sampling and
    hands the sigmas to the patches in the sampler's own transformer_options."""

    def __init__(self, entry):
        self.entry = entry

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        guider = executor.class_obj
        sampling = guider.model_patcher.get_model_object("model_sampling")
        options = guider.model_options.setdefault("transformer_options", {})   # this sampling run's copy
        gates = dict(options.get(STEP_GATES_KEY, {}))
        gates[self.entry.uid] = gate_for(sampling, self.entry.start_percent, self.entry.end_percent)
        options[STEP_GATES_KEY] = gates
        return executor(*args, **kwargs)
