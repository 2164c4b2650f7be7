"""From a `Scan` to training tensors: groups, amplitudes, offsets, true patches."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ptychopinn.config.schema import TrainingConfig
from ptychopinn.data.scan import Scan
from ptychopinn.grouping import group_neighbors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    """Everything training needs, as tensors on the CPU."""

    amplitudes: torch.Tensor  # (n, N, N) float32, sqrt of counts after rescaling
    positions_px: torch.Tensor  # (n, 2) float64
    indices: torch.Tensor  # (G, C) int64
    offsets_px: torch.Tensor  # (G, C, 2) float32
    true_patches: torch.Tensor | None  # (n, N, N) complex64
    input_scale: float  # sqrt(mean counts per pixel)
    counts_per_pattern: float
    data_scale: float  # counts were multiplied by this (nphotons rescaling)
    valid: torch.Tensor | None  # (N, N) 1 = good pixel
    # model.subpixel 'probe_shift': each pattern's position minus the centre of its
    # whole-pixel window (the probe's shift); offsets_px are then the windows'
    frac_px: torch.Tensor | None = None  # (n, 2) float32


def input_scale_of(amplitudes: np.ndarray | torch.Tensor) -> float:
    """The global network-input normalisation: sqrt(mean counts per pixel).

    Summed in chunks of patterns (float64), so a 10^5-pattern scan needs no
    full-size temporary.
    """
    a = torch.as_tensor(amplitudes)
    if a.numel() == 0:
        return 1e-12
    total = 0.0
    for s in range(0, a.shape[0], 256):
        total += float(a[s : s + 256].double().square().sum())
    return max(math.sqrt(total / a.numel()), 1e-12)


def n_mismatch_message(scan: Scan, model_n: int) -> str:
    """What to do when ``scan``'s patterns are not ``model_n`` pixels square: set
    ``model.N`` to theirs when the model takes it, else crop the data to a size it takes
    (``ptychopinn convert --patch-size`` for CXI frames)."""
    from ptychopinn.config.schema import ALLOWED_N as allowed
    n, src = scan.patch_size, scan.source
    found = f"model.N is {model_n} but {src} holds {n}x{n} patterns"
    if n in allowed:
        return f"{found}; set --set model.N={n}."
    fit = max((a for a in allowed if a <= n), default=None)
    if fit is None:
        return (f"{found}, and model.N must be one of {allowed}: patterns smaller than "
                f"{allowed[0]}x{allowed[0]} cannot be used.")
    suffix = src.lower().rsplit(".", 1)[-1]
    if scan.metadata.get("reader") == "cxi" or suffix in ("cxi", "h5", "hdf5"):
        return (
            f"{found}, and model.N must be one of {allowed}. Crop the CXI frames to an "
            f"allowed N once (a centre crop) and train on the NPZ it writes: "
            f"`ptychopinn convert {src} scan.npz --patch-size {fit}`."
        )
    return (
        f"{found}, and model.N must be one of {allowed}: the patterns (and the probe with "
        f"them) must be cropped or binned to an allowed N first, e.g. centre-cropped to "
        f"{fit}x{fit}."
    )


def prepare(scan: Scan, cfg: TrainingConfig) -> PreparedData:
    """Subsample, rescale, group and precompute the tensors of a scan."""
    if scan.patch_size != cfg.model.N:
        from ptychopinn.errors import ConfigError

        raise ConfigError(n_mismatch_message(scan, cfg.model.N))
    if cfg.n_subsample is not None and cfg.n_subsample < scan.n_patterns:
        rng = np.random.default_rng(
            cfg.subsample_seed if cfg.subsample_seed is not None else cfg.seed
        )
        keep = np.sort(rng.choice(scan.n_patterns, cfg.n_subsample, replace=False))
        scan = scan.subset(keep)
    amps = scan.diffraction.astype(np.float32)
    data_scale = 1.0
    if cfg.nphotons is not None:
        mean_counts = float(np.mean(np.sum(amps.astype(np.float64) ** 2, axis=(1, 2))))
        data_scale = cfg.nphotons / max(mean_counts, 1e-12)
        amps = amps * np.float32(np.sqrt(data_scale))
        log.info("rescaled counts by %.4g to %.4g photons per pattern", data_scale, cfg.nphotons)
    groups = group_neighbors(
        scan.positions_px,
        cfg.model.gridsize,
        neighbor_count=max(cfg.neighbor_count, cfg.model.n_channels),
        n_groups=cfg.n_groups,
        seed=cfg.seed,
        oversample=cfg.n_groups is not None and cfg.n_groups > scan.n_patterns,
    )
    from ptychopinn.physics.geometry import extract_patches, whole_pixel_windows

    pos = torch.from_numpy(scan.positions_px)
    patch_pos, frac, offsets = pos, None, groups.offsets_px.astype(np.float32)
    if cfg.model.subpixel == "probe_shift":
        # the network's patches are whole-pixel windows: group offsets between windows
        # are whole pixels, and the probe carries each pattern's remainder
        patch_pos, frac = whole_pixel_windows(pos, scan.patch_size)
        centres = patch_pos.numpy()[groups.indices]  # (G, C, 2)
        offsets = (centres - centres[:, :1, :]).astype(np.float32)
        frac = frac.to(torch.float32)
    true = None
    if scan.object is not None:
        with torch.no_grad():
            true = extract_patches(
                torch.from_numpy(scan.object), patch_pos, scan.patch_size
            ).to(torch.complex64)
    valid = None
    if scan.bad_pixel_mask is not None:
        valid = torch.from_numpy((~scan.bad_pixel_mask).astype(np.float32))
    counts_pp = float(np.mean(np.sum(amps.astype(np.float64) ** 2, axis=(1, 2))))
    return PreparedData(
        amplitudes=torch.from_numpy(amps),
        positions_px=torch.from_numpy(scan.positions_px),
        indices=torch.from_numpy(groups.indices),
        offsets_px=torch.from_numpy(offsets),
        true_patches=true,
        input_scale=input_scale_of(amps),
        counts_per_pattern=counts_pp,
        data_scale=data_scale,
        valid=valid,
        frac_px=frac,
    )


class GroupDataset(Dataset):
    """Groups of C patterns: ``(amplitudes (C,N,N), offsets (C,2)[, true (C,N,N)])``."""

    def __init__(
        self,
        data: PreparedData,
        group_ids: np.ndarray,
        with_truth: bool,
        prior=None,
    ) -> None:
        self.data = data
        self.group_ids = torch.as_tensor(group_ids, dtype=torch.long)
        self.with_truth = with_truth and data.true_patches is not None
        self.prior = prior  # models.scan_prior.ScanPrior: physics prior per pattern index

    def __len__(self) -> int:
        return int(self.group_ids.shape[0])

    def __getitem__(self, i: int):  # noqa: D105
        return self.__getitems__([i])

    def __getitems__(self, items: list[int]):
        g = self.group_ids[torch.as_tensor(items, dtype=torch.long)]
        idx = self.data.indices[g]
        batch = {"amplitudes": self.data.amplitudes[idx], "offsets": self.data.offsets_px[g]}
        if self.data.frac_px is not None:
            batch["frac"] = self.data.frac_px[idx]
        if self.with_truth:
            batch["true_patches"] = self.data.true_patches[idx]
        if self.prior is not None:
            batch["prior"] = self.prior(idx)
        return batch


def collate_batch(batch):
    """Batches are built whole by `GroupDataset.__getitems__`."""
    return batch


def split_groups(n_groups: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of group ids into training and validation."""
    rng = np.random.default_rng(seed + 1)
    perm = rng.permutation(n_groups)
    n_val = int(round(n_groups * val_fraction))
    if val_fraction > 0:
        n_val = max(1, min(n_val, n_groups - 1))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
