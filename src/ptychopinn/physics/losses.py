"""Named loss terms; each is weighted by the config and logged by name.

* ``poisson_nll``: Poisson negative log-likelihood of the measured counts k
  given the expected counts lambda, as the deviance-like form
  ``lambda - k log lambda - (k - k log k)`` (zero at a perfect fit), averaged
  over pixels and divided by the mean count per pixel so its size does not
  depend on the dose.
* ``amplitude_mae``: mean |sqrt(lambda) - sqrt(k)| / mean sqrt(k).
* ``realspace_mae``: MAE of amplitude and wrapped phase against true patches,
  inside the illuminated region (supervised mode, or a real-space prior).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def poisson_deviance(expected: Tensor, counts: Tensor) -> Tensor:
    """Per-pixel half Poisson deviance ``lam - k log lam - (k - k log k)`` (0 at a
    perfect fit; ``k log k`` = 0 at k = 0; ``lam`` floored at 1e-8)."""
    lam = expected.clamp_min(1e-8)
    return lam - counts * torch.log(lam) - (counts - torch.xlogy(counts, counts))


def poisson_nll(expected: Tensor, counts: Tensor, valid: Tensor | None = None) -> Tensor:
    dev = poisson_deviance(expected, counts)
    norm = counts.mean().clamp_min(1e-8)
    if valid is not None:
        valid = valid.expand_as(dev)
        return (dev * valid).sum() / valid.sum().clamp_min(1) / norm
    return dev.mean() / norm


def amplitude_mae(expected: Tensor, counts: Tensor, valid: Tensor | None = None) -> Tensor:
    pred = torch.sqrt(expected.clamp_min(1e-12))
    meas = torch.sqrt(counts)
    err = (pred - meas).abs()
    if valid is not None:
        valid = valid.expand_as(err)
        return (err * valid).sum() / valid.sum().clamp_min(1) / meas.mean().clamp_min(1e-8)
    return err.mean() / meas.mean().clamp_min(1e-8)


def wrap_phase(phi: Tensor) -> Tensor:
    return torch.remainder(phi + math.pi, 2 * math.pi) - math.pi


def realspace_mae(
    amp: Tensor, phase: Tensor, true_patches: Tensor, weight: Tensor | None = None
) -> Tensor:
    """MAE of amplitude plus wrapped phase against the true complex patches."""
    ta, tp = true_patches.abs(), torch.angle(true_patches)
    err = (amp - ta).abs() + wrap_phase(phase - tp).abs()
    if weight is not None:
        weight = weight.expand_as(err)
        return (err * weight).sum() / weight.sum().clamp_min(1e-8)
    return err.mean()
