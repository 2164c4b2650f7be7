"""How far the plain scan prior is from explaining a scan, in units of its photon noise.

`misfit_over_noise_floor` runs a few plain passes of `physics.prior_scan.scan_error_reduction`
and compares the estimate's far-field amplitudes with the measured ones:

    ratio = sum_j sum_k (|F(P E_j O)| - A_jk)^2  /  sum_j sum_k min(A_jk^2, 1/4)

The denominator is the misfit a perfect estimate would leave: the variance of the square
root of a Poisson count is about 1/4 above a few counts and the count itself below. A
ratio near 1 means the prior already explains the data to the noise; a large ratio after
one pass means both much unexplained signal and a dose high enough to see it. With
``A`` in square roots of counts only: the floor has no meaning in arbitrary units.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ptychopinn.physics.prior_scan import canvas_frame, scan_error_reduction
from ptychopinn.physics.propagation import far_field

POISSON_SQRT_VARIANCE = 0.25
"""The variance of the square root of a Poisson count well above one count."""


def misfit_over_noise_floor(
    amplitudes: Tensor,
    positions_px: np.ndarray | Tensor,
    probe: Tensor,
    passes: int = 1,
    *,
    valid: Tensor | None = None,
    amplitude_step: float = 0.5,
) -> float:
    """The plain scan prior's amplitude misfit after ``passes`` passes over its photon-noise
    floor (module docstring).

    ``amplitudes``: ``(n, N, N)`` square roots of counts; ``positions_px``: ``(n, 2)``;
    ``probe``: ``(M, N, N)`` or ``(N, N)`` complex, in the amplitudes' scale; ``valid``:
    optional ``(N, N)`` mask of good detector pixels (only they are counted). The passes
    are the prior's defaults: 64 patterns per update, no over-relaxation, no FRC filter,
    no centre-of-mass correction.
    """
    if isinstance(passes, bool) or int(passes) != passes or passes < 1:
        raise ValueError(f"misfit_over_noise_floor: passes must be an integer >= 1; found "
                         f"{passes!r}")
    amps = torch.as_tensor(amplitudes).detach().to(torch.float32)
    pos = np.asarray(torch.as_tensor(positions_px).cpu().numpy(), dtype=np.float64)
    p = torch.as_tensor(probe).detach()
    p = p.reshape(-1, *p.shape[-2:]).to(torch.complex64)
    n = amps.shape[-1]
    est = scan_error_reduction(amps, pos, p, int(passes), valid=valid,
                               amplitude_step=float(amplitude_step),
                               frame=canvas_frame(pos, n))
    field = far_field(est.patches(pos, n).unsqueeze(-3) * p)
    model_amp = (field.real.square() + field.imag.square()).sum(-3).sqrt()
    weight = torch.ones(n, n) if valid is None else torch.as_tensor(valid).to(torch.float32)
    misfit = float(((model_amp - amps).square() * weight).sum())
    floor = float((amps.square().clamp(max=POISSON_SQRT_VARIANCE) * weight).sum())
    if not floor > 0:
        raise ValueError("misfit_over_noise_floor: the scan has no counts")
    return misfit / floor
