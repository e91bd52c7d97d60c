"""Step gating: is the identity active at this sampling step, and for which batch rows?"""

from __future__ import annotations

from dataclasses import dataclass

# Relative tolerance of the sigma comparisons: far above float32 rounding (~6e-8), far below the
# gap between two sampled sigmas.
SIGMA_RTOL = 1e-5


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
