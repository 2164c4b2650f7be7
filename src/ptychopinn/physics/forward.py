"""The physics forward model: an ``nn.Module`` holding only buffers.

patches (predicted object patches of a group) -> [object_big: merge the C
patches on one canvas, divide by the overlap, re-extract each at its offset]
-> illuminate by the probe modes -> `far_field` -> expected counts (summed over
modes). No learned weights live here: the intensity scale and an optional
trainable probe belong to the model that calls it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ptychopinn.physics.geometry import extract_patches, place_patches
from ptychopinn.physics.probe import prepare_probe
from ptychopinn.physics.propagation import diffracted_intensity, shifted_probe_intensity


def central_support(n: int, pad_object: bool) -> Tensor:
    """Where predicted patches are defined: all N x N, or the central N/2 box."""
    s = torch.ones(n, n)
    if pad_object:
        s.zero_()
        q = n // 4
        s[q : n - q, q : n - q] = 1.0
    return s


class ForwardModel(nn.Module):
    """Diffraction of object patches through a known probe.

    Parameters
    ----------
    probe
        ``(M, N, N)`` or ``(N, N)`` complex probe (any scale).
    object_big
        Enforce the group's real-space overlap (see module docstring).
    pad_object
        Patches are only defined on their central N/2 box (weights of the merge).
    """

    def __init__(
        self,
        probe: Tensor,
        *,
        object_big: bool = True,
        pad_object: bool = False,
        probe_mask: bool = False,
        probe_big: bool = True,
        smoothing_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        probe = torch.as_tensor(probe)
        if not probe.is_complex():
            raise ValueError(f"probe must be complex; found dtype {probe.dtype}")
        prepared, mask = prepare_probe(
            probe.to(torch.complex64),
            probe_mask=probe_mask,
            probe_big=probe_big,
            smoothing_sigma=smoothing_sigma,
        )
        n = prepared.shape[-1]
        self.object_big = object_big
        self.n = n
        self.register_buffer("probe", prepared)
        self.register_buffer("probe_support", mask)
        self.register_buffer("support", central_support(n, pad_object))

    def illumination(self, probe: Tensor | None = None) -> Tensor:
        """``sum_m |probe_m|^2`` normalised to max 1 (a stitching weight)."""
        p = self.probe if probe is None else probe
        ill = (p.real.square() + p.imag.square()).sum(0)
        return ill / ill.max().clamp_min(1e-12)

    def group_consistency(self, patches: Tensor, offsets_px: Tensor) -> Tensor:
        """Merge a group's patches on a shared canvas and re-extract them.

        Parameters
        ----------
        patches
            ``(B, C, N, N)`` complex.
        offsets_px
            ``(B, C, 2)`` member positions relative to the group centre.
        """
        n = patches.shape[-1]
        span = float(offsets_px.detach().abs().max()) if offsets_px.numel() else 0.0
        m = n + 2 * int(math.ceil(span)) + 4
        pos = offsets_px.to(patches.real.dtype) + m / 2.0
        w = self.support.to(patches.real.dtype).expand(patches.shape)
        num = place_patches(patches * w, pos, (m, m))
        den = place_patches(w, pos, (m, m))
        merged = num / den.clamp_min(1e-3)
        merged = torch.where(den > 1e-3, merged, torch.zeros_like(merged))
        return extract_patches(merged, pos, n)

    def forward(
        self,
        patches: Tensor,
        offsets_px: Tensor | None = None,
        probe: Tensor | None = None,
        frac_px: Tensor | None = None,
    ) -> Tensor:
        """Expected counts (before the intensity scale), ``(B, C, N, N)``.

        ``frac_px (B, C, 2)``, for patches on whole-pixel windows
        (``model.subpixel='probe_shift'``): each pattern's position minus its
        window's centre; the probe is shifted by it (Fourier shift theorem).
        The offsets are then those of the windows (whole pixels), so the group
        consistency copies pixels without interpolating.
        """
        if self.object_big and offsets_px is not None and patches.shape[1] > 1:
            patches = self.group_consistency(patches, offsets_px)
        p = self.probe if probe is None else probe
        if frac_px is None:
            return diffracted_intensity(patches, p)
        return shifted_probe_intensity(patches, p, frac_px)
