"""How well a scan-prior estimate explains the measured amplitudes.

`amplitude_misfit` is ``sum_j sum_k (|F(P E_j O)| - A_jk)^2`` over every pattern ``j`` of
the scan and every (valid) detector pixel ``k``: the quantity the prior's PIE passes
descend. `models.prior_recipe` compares it between plain and over-relaxed passes to
catch the over-relaxation overshooting; ``benchmarks/bench_probe_features.py`` divides it
by the photon-noise floor. `physics.prior_scan.pass_misfit` is the same misfit under the
passes' own model of sub-pixel positions (whole-pixel windows, shifted probes), relative to
the measured intensity, on chosen patterns: the FRC filter's held-out misfit
(`physics.prior_frc.PLAIN_CONVERGE_MISFIT_FALL`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ptychopinn.physics.prior_scan import ScanEstimate
from ptychopinn.physics.propagation import far_field


def amplitude_misfit(
    estimate: ScanEstimate,
    amplitudes: Tensor,
    positions_px: np.ndarray | Tensor,
    probe: Tensor,
    *,
    valid: Tensor | None = None,
    chunk: int = 256,
) -> float:
    """The estimate's far-field amplitude misfit to ``amplitudes`` ``(n, N, N)`` at
    ``positions_px`` ``(n, 2)`` under ``probe`` ``(M, N, N)`` or ``(N, N)`` (in the
    amplitudes' scale; modes add incoherently), counted on ``valid`` pixels only when a
    ``(N, N)`` mask is given; in chunks of ``chunk`` patterns."""
    amps = torch.as_tensor(amplitudes).detach()
    pos = np.asarray(torch.as_tensor(positions_px).cpu().numpy(), dtype=np.float64)
    n = amps.shape[-1]
    p = torch.as_tensor(probe).detach()
    p = p.reshape(-1, n, n).to(torch.complex64)
    weight = None if valid is None else torch.as_tensor(valid).to(torch.float32)
    total = 0.0
    for s in range(0, amps.shape[0], chunk):
        field = far_field(estimate.patches(pos[s : s + chunk], n).unsqueeze(-3) * p)
        model = (field.real.square() + field.imag.square()).sum(-3).sqrt()
        diff = (model - amps[s : s + chunk].to(torch.float32)).square()
        total += float((diff if weight is None else diff * weight).sum())
    return total
