"""Scan-position corrections refined alongside the object.

Owns `PositionCorrector`: an ``(n, 2)`` tensor of corrections ``[dy, dx]`` in
pixels added to the starting positions. The gradient of the data term with
respect to a position flows through the Fourier ramp of the shifted probe
(``subpixel='probe_shift'``, `steps.model_counts`) or the bilinear weights of
`ptychopinn.physics.geometry.extract_patches`; both are checked against finite
differences. Two update rules:

* ``"adam"`` (default): the batch gradients of an epoch are accumulated and
  one Adam step of ``learning_rate`` pixels is taken per epoch (constant: the
  object's step schedule is not applied, so positions keep moving while the
  object settles).
* ``"gauss_newton"``: after each batch, every position of the batch
  moves by ``-g / (2 c sum |P dO/dr|^2)`` per axis, the Gauss-Newton step of
  the amplitude data term (``c = 2`` for the Poisson term), as in LSQML. The
  object derivative is a central difference of patches extracted half a pixel
  either side. The curvature is regularised by a fraction of its batch mean
  (flat regions carry no position information) and the step is capped. As
  ``|P dO/dr|^2`` over-estimates the curvature of the modulus, a
  ``learning_rate`` of about 2 works best.

After each epoch the mean correction is removed (a common shift of every
position is the same as a shift of the object) and, unless ``keep_linear``,
so is its global linear part: the 2 x 2 map ``A`` that best explains the
corrections as ``(r - mean r) A`` (a scale, rotation or shear of the whole
grid). The data pin down the positions relative to their neighbours well but
a global scale only weakly, and together with a probe that is refined at the
same time it drifts: on the measured Siemens star 20 epochs shrank the grid by
1.2% (pty-chi's LSQML: 0.15%), which moved the outer positions by a pixel or
more with no gain in the fit. Finally the corrected positions are clamped so
every patch stays inside the canvas.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ptychopinn.physics.geometry import extract_patches

log = logging.getLogger(__name__)

PositionMethod = Literal["gauss_newton", "adam"]
_CURVATURE_REG = 0.05
_ADAM_BETAS = (0.5, 0.9)


def position_curvature(obj: Tensor, probe: Tensor, positions: Tensor) -> Tensor:
    """``sum |P dO/dr|^2`` per position and axis, ``(B, 2)`` (no gradient)."""
    n = probe.shape[-1]
    ill = (probe.real.square() + probe.imag.square()).sum(0)
    out = []
    with torch.no_grad():
        for axis in (0, 1):
            e = torch.zeros(2, dtype=positions.dtype, device=positions.device)
            e[axis] = 0.5
            d = extract_patches(obj, positions + e, n) - extract_patches(obj, positions - e, n)
            out.append(((d.real.square() + d.imag.square()) * ill).sum((-2, -1)))
    return torch.stack(out, -1)


class PositionCorrector:
    """Per-position corrections (see the module docstring).

    Parameters
    ----------
    positions_px
        ``(n, 2)`` starting probe centres ``[y, x]`` in the canvas frame.
    shape
        ``(H, W)`` of the canvas.
    n
        Patch size N.
    enabled
        Refine the corrections (otherwise they stay zero and carry no gradient).
    method
        ``"adam"`` or ``"gauss_newton"``.
    learning_rate
        The Adam step in pixels, or the fraction of the Gauss-Newton step.
    start_epoch
        First epoch (0-based) that moves the positions.
    max_step_px
        Cap of one Gauss-Newton step per axis.
    keep_linear
        Keep the global linear part (scale, rotation, shear) of the corrections;
        False (default) removes it after every epoch (module docstring). Keep it
        only for a scan whose step size itself is in doubt.
    """

    def __init__(
        self,
        positions_px: np.ndarray,
        shape: tuple[int, int],
        n: int,
        *,
        enabled: bool,
        method: PositionMethod = "adam",
        learning_rate: float = 0.3,
        start_epoch: int = 1,
        max_step_px: float = 0.5,
        keep_linear: bool = False,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if method not in ("gauss_newton", "adam"):
            raise ValueError(f"position method must be 'gauss_newton' or 'adam'; found {method!r}")
        self.base = torch.as_tensor(np.asarray(positions_px), dtype=dtype, device=device)
        self.enabled = enabled
        self.method = method
        self.learning_rate = learning_rate
        self.start_epoch = start_epoch
        self.max_step_px = max_step_px
        self.keep_linear = keep_linear
        centred = self.base - self.base.mean(0, keepdim=True)
        # Least-squares projector onto the grid's linear maps: delta -> X (X^+ delta).
        self._linear = (centred, torch.linalg.pinv(centred))
        self.lo = torch.tensor([n / 2.0, n / 2.0], dtype=dtype, device=device)
        self.hi = torch.tensor([shape[0] - n / 2.0, shape[1] - n / 2.0], dtype=dtype, device=device)
        self.delta = torch.zeros_like(self.base)
        self._grad = torch.zeros_like(self.base)
        self._m = torch.zeros_like(self.base)
        self._v = torch.zeros_like(self.base)
        self._steps = 0

    def _clamp(self, pos: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(pos, self.hi), self.lo)

    def active(self, epoch: int) -> bool:
        return self.enabled and epoch >= self.start_epoch

    def batch(self, index: Tensor, epoch: int) -> Tensor:
        """Positions of the batch; a leaf that requires grad when active."""
        with torch.no_grad():
            pos = self._clamp(self.base[index] + self.delta[index])
        return pos.requires_grad_(True) if self.active(epoch) else pos

    def after_backward(
        self, index: Tensor, pos: Tensor, obj: Tensor, probe: Tensor, fit_factor: float
    ) -> None:
        """Use ``pos.grad`` of the batch (call before the object moves)."""
        if pos.grad is None:
            return
        g = pos.grad.detach()
        with torch.no_grad():
            if self.method == "adam":
                self._grad.index_add_(0, index, g)
                return
            h = 2.0 * fit_factor * position_curvature(obj.detach(), probe.detach(), pos.detach())
            h = h + _CURVATURE_REG * h.mean(0, keepdim=True) + 1e-12
            step = (-self.learning_rate * g / h).clamp_(-self.max_step_px, self.max_step_px)
            self.delta.index_add_(0, index, step)

    def end_epoch(self, epoch: int) -> None:
        """Adam step (if used), recentre and clamp."""
        if not self.active(epoch):
            return
        with torch.no_grad():
            if self.method == "adam":
                self._adam_step()
            self.delta -= self.delta.mean(0, keepdim=True)
            if not self.keep_linear:
                self.delta -= self.linear_part()
            self.delta.copy_(self._clamp(self.base + self.delta) - self.base)

    def linear_part(self) -> Tensor:
        """The part of the corrections a global linear map of the centred
        starting positions explains, ``(n, 2)``."""
        centred, pinv = self._linear
        return centred @ (pinv @ self.delta)

    def _adam_step(self) -> None:
        """Adam on the accumulated gradient (written out: ``torch.optim.Adam``'s
        first step imports ``torch._dynamo``, seconds for one tiny tensor)."""
        b1, b2 = _ADAM_BETAS
        self._steps += 1
        self._m.mul_(b1).add_(self._grad, alpha=1 - b1)
        self._v.mul_(b2).addcmul_(self._grad, self._grad, value=1 - b2)
        m_hat = self._m / (1 - b1**self._steps)
        v_hat = self._v / (1 - b2**self._steps)
        self.delta -= self.learning_rate * m_hat / (v_hat.sqrt() + 1e-12)
        self._grad.zero_()

    def current(self) -> Tensor:
        """The current corrected positions of the whole scan, ``(n, 2)`` (no grad)."""
        with torch.no_grad():
            return self._clamp(self.base + self.delta)

    def positions(self) -> np.ndarray:
        """The current corrected positions, float64 ``(n, 2)``."""
        return self.current().cpu().numpy().astype(np.float64)

    def rms_shift_px(self) -> float:
        """RMS length of the corrections."""
        with torch.no_grad():
            return float(self.delta.square().sum(1).mean().sqrt())
