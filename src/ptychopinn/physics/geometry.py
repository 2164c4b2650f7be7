"""Sub-pixel patch extraction and its exact adjoint (placement), in torch.

Convention: a position ``[y, x]`` is the probe CENTRE in object pixels; the
N x N patch seen there samples the object at ``(y - N/2 + i, x - N/2 + j)``
for ``i, j in range(N)``, with bilinear interpolation for fractional
positions. `place_patches` is the adjoint of `extract_patches`
(``<E o, p> == <o, E^T p>``), so stitching = ``E^T(w p) / E^T(w)``.

Both work on batches of canvases: ``obj (B, H, W)`` and ``positions (B, K, 2)``
give ``patches (B, K, N, N)``. Complex tensors are handled through their real
view so every op is differentiable and runs on any device.

Whole-pixel windows (every ``position - N/2`` an integer, as with
``model.subpixel='probe_shift'``, positions on the CPU and no gradient wanted
with respect to them) take a shortcut with the same result: bilinear taps with fractions
0 are one gather of N x N pixels, and their adjoint one scatter, instead of
(N+1)^2 pixels blended by four weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _taps(positions: Tensor, n: int, shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Flat indices of the (N+1)^2 integer window and the bilinear fractions.

    Returns ``index (B, K, N+1, N+1)`` into the flattened ``(B*H*W)`` canvas
    and ``frac (B, K, 2)`` (fy, fx) in [0, 1).
    """
    b = positions.shape[0]
    h, w = shape
    top = positions.to(torch.float64) - n / 2.0
    i0 = torch.floor(top)
    frac = (top - i0).to(positions.dtype if positions.is_floating_point() else torch.float32)
    i0 = i0.to(torch.long)
    ar = torch.arange(n + 1, device=positions.device)
    rows = (i0[..., 0, None] + ar).clamp_(0, h - 1)  # (B, K, N+1)
    cols = (i0[..., 1, None] + ar).clamp_(0, w - 1)
    base = (torch.arange(b, device=positions.device) * (h * w)).view(b, 1, 1, 1)
    index = base + rows[..., :, None] * w + cols[..., None, :]
    return index, frac


def _bilinear_weights(frac: Tensor, dtype: torch.dtype) -> tuple[Tensor, ...]:
    fy = frac[..., 0].to(dtype)[..., None, None]
    fx = frac[..., 1].to(dtype)[..., None, None]
    return (1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx


@dataclass(frozen=True)
class Taps:
    """Where N x N windows read a stack of canvases (`window_taps`).

    ``index`` holds flat indices into the ``(B*H*W)`` rows of the stacked canvases:
    ``(B, K, N+1, N+1)`` with ``weights``, the four bilinear corner weights
    ``(B, K, 1, 1, 1)``; or, for whole-pixel windows, ``(B, K, N, N)`` with
    ``weights`` None (each window pixel is one canvas pixel).
    """

    index: Tensor
    weights: tuple[Tensor, Tensor, Tensor, Tensor] | None

    def members(self, start: int, stop: int) -> Taps:
        """The taps of windows ``start:stop`` (along K)."""
        w = None if self.weights is None else tuple(t[:, start:stop] for t in self.weights)
        return Taps(self.index[:, start:stop], w)


def window_taps(positions: Tensor, n: int, shape: tuple[int, int], dtype: torch.dtype) -> Taps:
    """The taps of N x N windows at ``positions (B, K, 2)`` on B canvases of
    ``(H, W)`` (as in `extract_patches`), with corner weights in ``dtype``.

    Computed once, they serve any number of gathers and scatters at the same
    positions (`gather_windows`, `scatter_windows`). Whole-pixel windows (all
    fractions 0, positions on the CPU not requiring a gradient) get whole-pixel taps.
    """
    index, frac = _taps(positions, n, shape)
    # checked on the CPU only: on an accelerator reading frac.any() would stall the queue
    if (positions.device.type == "cpu" and not positions.requires_grad
            and not bool(frac.any())):
        return Taps(index[..., :-1, :-1], None)
    return Taps(index, tuple(t[..., None] for t in _bilinear_weights(frac, dtype)))


def gather_windows(flat: Tensor, taps: Taps) -> Tensor:
    """``(B, K, N, N, D)`` samples (bilinear, or whole pixels) of real canvases
    ``flat (B*H*W, D)``."""
    index = taps.index
    win = flat.index_select(0, index.reshape(-1)).view(*index.shape, flat.shape[-1])
    if taps.weights is None:
        return win
    w00, w01, w10, w11 = taps.weights
    return (
        w00 * win[..., :-1, :-1, :]
        + w01 * win[..., :-1, 1:, :]
        + w10 * win[..., 1:, :-1, :]
        + w11 * win[..., 1:, 1:, :]
    )


def _spread(taps: Taps, values: Tensor) -> Tensor:
    """The ``(numel(index), D)`` rows the adjoint of `gather_windows` adds."""
    if taps.weights is None:
        return values.reshape(-1, values.shape[-1])
    w00, w01, w10, w11 = taps.weights
    win = values.new_zeros(*taps.index.shape, values.shape[-1])
    win[..., :-1, :-1, :] += w00 * values
    win[..., :-1, 1:, :] += w01 * values
    win[..., 1:, :-1, :] += w10 * values
    win[..., 1:, 1:, :] += w11 * values
    return win.reshape(-1, values.shape[-1])


def window_entries(taps: Taps, values: Tensor) -> tuple[Tensor, Tensor]:
    """``(index (B*K, P), rows (B*K, P, D))``: the canvas rows the adjoint of
    `gather_windows` adds for each window of ``values (B, K, N, N, D)``, and where
    (duplicates not summed; `scatter_windows` adds them)."""
    bk = taps.index.shape[0] * taps.index.shape[1]
    return taps.index.reshape(bk, -1), _spread(taps, values).reshape(bk, -1, values.shape[-1])


def scatter_windows(flat: Tensor, taps: Taps, values: Tensor) -> None:
    """In place ``flat +=`` the adjoint of `gather_windows` applied to ``values
    (B, K, N, N, D)``."""
    flat.index_add_(0, taps.index.reshape(-1), _spread(taps, values))


def _as_real(x: Tensor) -> tuple[Tensor, bool]:
    if x.is_complex():
        return torch.view_as_real(x), True
    return x.unsqueeze(-1), False


def _from_real(x: Tensor, was_complex: bool) -> Tensor:
    return torch.view_as_complex(x.contiguous()) if was_complex else x.squeeze(-1)


def whole_pixel_windows(positions: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``(centres, frac)``: the centre of the whole-pixel N x N window nearest each
    position, ``round(p - n/2) + n/2``, and the remainder ``frac = p - centre`` in
    ``[-0.5, 0.5]`` (per axis). The probe at ``p`` sees that window through the probe
    shifted by ``frac`` (`physics.propagation.subpixel_probes`)."""
    corner = torch.round(positions - n / 2.0)
    centres = corner + n / 2.0
    return centres, positions - centres


def extract_patches(obj: Tensor, positions: Tensor, n: int) -> Tensor:
    """Extract N x N patches centred at ``positions``.

    Parameters
    ----------
    obj
        ``(B, H, W)`` (or ``(H, W)``) real or complex canvas.
    positions
        ``(B, K, 2)`` (or ``(K, 2)``) centres ``[y, x]`` in pixels.
    n
        Patch size N.

    Returns
    -------
    ``(B, K, N, N)`` (or ``(K, N, N)``) patches of ``obj``'s dtype.
    """
    squeeze = obj.dim() == 2
    if squeeze:
        obj, positions = obj[None], positions[None]
    b, h, w = obj.shape
    real, was_complex = _as_real(obj)
    taps = window_taps(positions, n, (h, w), real.dtype)
    out = _from_real(gather_windows(real.reshape(b * h * w, -1), taps), was_complex)
    return out[0] if squeeze else out


def place_patches(patches: Tensor, positions: Tensor, shape: tuple[int, int]) -> Tensor:
    """Adjoint of `extract_patches`: add patches into a zero canvas.

    Parameters
    ----------
    patches
        ``(B, K, N, N)`` (or ``(K, N, N)``) real or complex patches.
    positions
        ``(B, K, 2)`` (or ``(K, 2)``) centres ``[y, x]``.
    shape
        ``(H, W)`` of the canvas.
    """
    squeeze = patches.dim() == 3
    if squeeze:
        patches, positions = patches[None], positions[None]
    b, _, n, _ = patches.shape
    h, w = shape
    real, was_complex = _as_real(patches)
    taps = window_taps(positions, n, (h, w), real.dtype)
    canvas = real.new_zeros(b * h * w, real.shape[-1])
    canvas = canvas.index_add(0, taps.index.reshape(-1), _spread(taps, real))
    out = _from_real(canvas.view(b, h, w, -1), was_complex)
    return out[0] if squeeze else out


def stitch(
    patches: Tensor,
    positions: Tensor,
    shape: tuple[int, int],
    weight: Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Stitch patches: ``E^T(w p) / E^T(w)``; also returns the weight map.

    ``weight`` is ``(N, N)`` (e.g. the probe intensity) or None for the plain
    overlap count. Pixels no patch touches are 0.
    """
    n = patches.shape[-1]
    if weight is None:
        weight = patches.real.new_ones(n, n) if patches.is_complex() else patches.new_ones(n, n)
    wexp = weight.expand(patches.shape).to(
        patches.real.dtype if patches.is_complex() else patches.dtype
    )
    num = place_patches(patches * wexp, positions, shape)
    den = place_patches(wexp, positions, shape)
    out = num / den.clamp_min(eps)
    out = torch.where(den > eps, out, torch.zeros_like(out))
    return out, den


def accumulate_patches(canvas: Tensor, patches: Tensor, positions: Tensor) -> None:
    """In-place adjoint: ``canvas += place_patches(patches, positions)``.

    ``canvas`` is ``(H, W)`` real or complex (contiguous); ``patches`` ``(K, N, N)``
    of the same kind; ``positions`` ``(K, 2)``. Costs O(K N^2), not O(H W), so
    it suits streaming stitching of huge scans.
    """
    h, w = canvas.shape
    real, _ = _as_real(patches[None])
    taps = window_taps(positions[None], patches.shape[-1], (h, w), real.dtype)
    flat = (torch.view_as_real(canvas) if canvas.is_complex() else canvas.unsqueeze(-1)).view(
        h * w, -1
    )
    scatter_windows(flat, taps, real)
