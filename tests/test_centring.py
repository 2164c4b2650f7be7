"""Diffraction centring: the periodic centre of mass, the uncentred-data warning, and
where it shows (``inspect``'s summary, the log when an NPZ is loaded)."""

from __future__ import annotations

import bz2
import logging

import numpy as np
import pytest

from ptychopinn.data.centring import (
    centring_warning,
    mean_counts,
    measure_centring,
    scan_centring,
)
from ptychopinn.data.npz import load_npz, save_npz


def _spot(n: int, y: float, x: float, sigma: float = 2.5, background: float = 0.0) -> np.ndarray:
    """A Gaussian spot at (y, x) on an n x n grid (periodic), plus a flat background."""
    idx = np.arange(n)
    dy = (idx - y + n / 2) % n - n / 2
    dx = (idx - x + n / 2) % n - n / 2
    return np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2 * sigma**2)) + background


def _shifted(scan, diffraction):
    return scan.replace(diffraction=diffraction, source="uncentred.npz")


# ------------------------------------------------------------------ measurement
@pytest.mark.parametrize("n", [37, 32])
def test_centre_of_mass_of_a_spot(n):
    c = n // 2
    got = measure_centring(_spot(n, c + 3.4, c - 2.1))
    assert got.com_px == pytest.approx((3.4, -2.1), abs=0.02)
    assert got.com_fraction > 0.99 and got.corner_fraction < 1e-4
    assert not got.looks_shifted


@pytest.mark.parametrize("n", [37, 32])
def test_corner_zero_order_reads_as_half_a_pattern_off(n):
    # a plain centre of mass would average the four corners back to ~the centre
    mean = np.fft.ifftshift(_spot(n, n // 2, n // 2, background=1e-3))
    got = measure_centring(mean)
    assert abs(got.com_px[0]) == pytest.approx(n // 2, abs=0.05)
    assert abs(got.com_px[1]) == pytest.approx(n // 2, abs=0.05)
    assert got.corner_fraction > 0.9 and got.centre_fraction < 0.05
    assert got.looks_shifted
    text = centring_warning(got, "f.npz")
    assert text.startswith("f.npz: the diffraction patterns look uncentred")
    assert "at the array corners" in text and "np.fft.fftshift(patterns, axes=(-2, -1))" in text


def test_one_axis_shift_names_that_axis():
    n = 37
    got = measure_centring(np.fft.ifftshift(_spot(n, n // 2, n // 2), axes=0))
    assert got.looks_shifted
    text = centring_warning(got, "f.npz")
    assert "top/bottom edges" in text and "np.fft.fftshift(patterns, axes=-2)" in text


def test_flat_or_empty_patterns_do_not_warn():
    assert not measure_centring(np.ones((31, 31))).looks_shifted
    empty = measure_centring(np.zeros((31, 31)))
    assert empty.com_px == (0.0, 0.0) and centring_warning(empty, "f.npz") is None


def test_mean_counts_in_chunks(rng):
    amp = rng.random((20, 13, 13)).astype(np.float32)
    np.testing.assert_allclose(
        mean_counts(amp, chunk=7), np.mean(amp.astype(np.float64) ** 2, 0), rtol=1e-6
    )
    np.testing.assert_allclose(mean_counts(amp, amplitudes=False, chunk=3), amp.mean(0), rtol=1e-6)
    mask = np.zeros((13, 13), dtype=bool)
    mask[0, 0] = True
    assert mean_counts(amp, bad_pixel_mask=mask)[0, 0] == 0.0


# ------------------------------------------------------------ simulated scans
def test_simulated_scan_centred_shifted_and_rolled(small_scan):
    assert centring_warning(scan_centring(small_scan), "s.npz") is None
    d = small_scan.diffraction
    flipped = scan_centring(_shifted(small_scan, np.fft.ifftshift(d, axes=(-2, -1))))
    assert flipped.looks_shifted
    assert "np.fft.fftshift(patterns, axes=(-2, -1))" in centring_warning(flipped, "u.npz")
    # a detector a couple of pixels off is normal, not a warning
    rolled = scan_centring(_shifted(small_scan, np.roll(d, (2, -2), axis=(-2, -1))))
    assert rolled.com_px == pytest.approx((2.0, -2.0), abs=0.5)
    assert centring_warning(rolled, "r.npz") is None


@pytest.fixture
def files(small_scan, tmp_path):
    good = save_npz(small_scan, tmp_path / "centred.npz")
    bad = save_npz(
        small_scan.replace(diffraction=np.fft.ifftshift(small_scan.diffraction, axes=(-2, -1))),
        tmp_path / "uncentred.npz",
    )
    return good, bad


def test_load_npz_logs_the_warning_once(files, caplog):
    good, bad = files
    with caplog.at_level(logging.WARNING, logger="ptychopinn.data.npz"):
        load_npz(good)
        assert not [r for r in caplog.records if "uncentred" in r.getMessage()]
        load_npz(bad)
    hits = [r for r in caplog.records if "look uncentred" in r.getMessage()]
    assert len(hits) == 1 and hits[0].levelno == logging.WARNING
    assert str(bad) in hits[0].getMessage()


def test_load_scan_logs_the_warning_once_in_any_format(files, caplog):
    """`load_scan` checks what it read (once, not again inside `load_npz`); inspect's
    reading does not log it (its summary prints it)."""
    from ptychopinn.data.readers import load_scan

    good, bad = files
    with caplog.at_level(logging.WARNING):
        load_scan(good)
        load_scan(bad)
        load_scan(bad, check_centring=False)
    hits = [r for r in caplog.records if "look uncentred" in r.getMessage()]
    assert len(hits) == 1 and str(bad) in hits[0].getMessage()


def test_inspect_prints_centre_and_warning(files, capsys, caplog):
    from ptychopinn.cli.main import main

    good, bad = files
    assert main(["inspect", str(good)]) == 0
    out = capsys.readouterr().out
    assert (
        "diffraction:       centre of mass (" in out and "px from the array centre [16, 16]" in out
    )
    assert "WARNING" not in out
    with caplog.at_level(logging.WARNING):
        assert main(["inspect", str(bad)]) == 0
    got = capsys.readouterr()
    assert "WARNING: " in got.out and "look uncentred" in got.out
    assert "np.fft.fftshift(patterns," in got.out
    # once: in the summary, not logged as well
    assert not [r for r in caplog.records if "look uncentred" in r.getMessage()]


# ------------------------------------------------------------------ real data
def test_real_siemens_star_is_centred(shared_data):
    from ptychopinn.data.readers import load_scan

    path = shared_data / "siemens_star" / "siemens-star-small.npz.bz2"
    if not path.exists():
        pytest.skip(f"real data absent: {path}")
    got = scan_centring(load_scan(path))
    # measured: com (-0.1, +3.0) px, 92% of the counts within 32 px of the centre, 0.05% of corners
    assert got.com_distance_px < 5 and got.centre_fraction > 0.9 and got.corner_fraction < 0.01
    assert centring_warning(got, str(path)) is None
    # the file's raw tike frames keep the zero order at [0, 0]: a real uncentred example
    raw = np.load(bz2.open(path))["data"][0]
    assert measure_centring(mean_counts(raw, amplitudes=False)).looks_shifted


def test_real_petra_cxi_is_centred(shared_data):
    from ptychopinn.data.readers import load_scan

    path = shared_data / "petra_nearfield_cxi" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
    if not path.exists():
        pytest.skip(f"real data absent: {path}")
    got = scan_centring(load_scan(path))
    assert got.com_distance_px < 5 and centring_warning(got, str(path)) is None
