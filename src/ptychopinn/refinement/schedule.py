"""Step-size schedule of the refinement: halve the step when the loss stalls.

Owns `PlateauSchedule`. Mini-batch steps of constant size stop improving once
the batch-to-batch noise (each batch fits its own photon noise) balances the
progress; at that point halving the step lets the iterate settle towards the
maximum-likelihood object. A steadily decreasing loss (e.g. while the probe is
still being refined) keeps the full step, so convergence is not slowed.
"""

from __future__ import annotations

import math


class PlateauSchedule:
    """Multiplier of the step: 1, then halved after ``patience`` stalled epochs.

    Parameters
    ----------
    tolerance
        An epoch improves when its loss is below ``best * (1 - tolerance)``.
    patience
        Stalled epochs in a row before the step is halved.
    factor
        Multiplier applied on a stall.
    min_fraction
        Lower bound of the multiplier.
    enabled
        False keeps the multiplier at 1.
    """

    def __init__(
        self,
        *,
        tolerance: float = 2e-3,
        patience: int = 2,
        factor: float = 0.5,
        min_fraction: float = 1.0 / 16,
        enabled: bool = True,
    ) -> None:
        self.tolerance = tolerance
        self.patience = patience
        self.factor = factor
        self.min_fraction = min_fraction
        self.enabled = enabled
        self.fraction = 1.0
        self._best = math.inf
        self._stalled = 0

    def update(self, loss: float) -> float:
        """Record an epoch's loss; return the multiplier for the next epoch."""
        if not self.enabled or not math.isfinite(loss):
            return self.fraction
        if loss < self._best * (1.0 - self.tolerance):
            self._best = loss
            self._stalled = 0
        else:
            self._best = min(self._best, loss)
            self._stalled += 1
            if self._stalled >= self.patience:
                self.fraction = max(self.fraction * self.factor, self.min_fraction)
                self._stalled = 0
        return self.fraction
