"""Step gating: is the identity active at this sampling step, and for which batch rows?"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepGate:
    """Active while ``sigma_end <= sigma <= sigma_start``. The sigmas come from the model's own
    ``percent_to_sigma(start_percent/end_percent)`` (so shifts from ModelSamplingSD3 etc. count).
    A range that never activates has ``sigma_start < sigma_end`` (start after end)."""

    sigma_start: float
    sigma_end: float

    @property
    def never(self) -> bool:
        return self.sigma_start < self.sigma_end

    def active(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start
