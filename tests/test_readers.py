"""Readers of real formats (tike, CXI), format dispatch, `convert` and `inspect`."""

from __future__ import annotations

import bz2
import io
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.data.convert import convert
from ptychopinn.data.inspect import format_summary, summarize
from ptychopinn.data.npz import load_npz, save_npz
from ptychopinn.data.readers import SUPPORTED_FORMATS, detect_format, load_scan
from ptychopinn.data.readers.cxi import ELEMENTARY_CHARGE_C, PLANCK_C_JM, load_cxi
from ptychopinn.data.readers.tike import load_tike_npz
from ptychopinn.data.scan import Scan
from ptychopinn.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STAR = SHARED / "siemens_star" / "siemens-star-small.npz.bz2"
PETRA = SHARED / "petra_nearfield_cxi" / "PETRAIII_P25_Near_Field_Ptycho.cxi"


def _ours(probe: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Our forward model: counts = |fftshift(fft2(probe * patch, ortho))|^2."""
    return np.abs(np.fft.fftshift(np.fft.fft2(probe * patch, norm="ortho"))) ** 2


# ------------------------------------------------------------------------ tike
def _tike_fixture(tmp_path: Path, compress: bool):
    """A tike archive simulated with tike's own model (corner positions, no shift)."""
    rng = np.random.default_rng(0)
    n_pix, h, w = 16, 41, 57
    obj = np.exp(1j * rng.uniform(-2, 2, (h, w))) * rng.uniform(0.5, 1, (h, w))
    yy, xx = np.indices((n_pix, n_pix)) - n_pix / 2
    probe = (np.exp(-(yy**2 + 2 * xx**2) / 30) * np.exp(1j * 0.1 * yy)).astype(np.complex64)
    corners = np.stack([rng.integers(0, h - n_pix, 9), rng.integers(0, w - n_pix, 9)], axis=1)
    data = np.stack([
        np.abs(np.fft.fft2(probe * obj[r : r + n_pix, c : c + n_pix], norm="ortho")) ** 2
        for r, c in corners
    ]).astype(np.float32)
    offset = np.array([-23.0, -31.0])  # tike's origin is arbitrary
    buf = io.BytesIO()
    np.savez(buf, data=data[None], scan=(corners + offset)[None].astype(np.float32),
             probe=probe.reshape(1, 1, 1, 1, n_pix, n_pix))
    path = tmp_path / ("tike.npz.bz2" if compress else "tike.npz")
    path.write_bytes(bz2.compress(buf.getvalue()) if compress else buf.getvalue())
    return path, obj, probe, corners, data


@pytest.mark.parametrize("compress", [True, False])
def test_tike_conventions_match_our_physics(tmp_path, compress):
    path, obj, probe, corners, data = _tike_fixture(tmp_path, compress)
    assert detect_format(path) == "tike"
    scan = load_scan(path)
    raw = load_tike_npz(path, normalize_probe=False)
    assert scan.amplitude_units == "sqrt_counts" and scan.diffraction.shape == (9, 16, 16)
    # Positions are probe centres: patch edge = tike corner + constant integer shift.
    edge = raw.positions_px - 8
    off = edge - corners
    np.testing.assert_allclose(off, np.rint(off[:1]).repeat(9, 0), atol=1e-6)
    np.testing.assert_array_equal(raw.metadata["position_shift_px"], off[0] - [-23, -31])
    assert edge.min() == 0  # lowest patch edge at the canvas origin (integer corners)
    for i, (r, c) in enumerate(np.rint(edge).astype(int)):
        r0, c0 = corners[i]
        assert (r - r0, c - c0) == tuple(np.rint(off[0]).astype(int))
        expected = _ours(raw.probe[0], obj[r0 : r0 + 16, c0 : c0 + 16])
        np.testing.assert_allclose(raw.counts[i], expected, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(raw.counts, np.fft.fftshift(data, axes=(-2, -1)), rtol=1e-5)
    # Normalised probe: sum |probe|^2 = median counts per pattern, same shape.
    med = np.median(data.sum(axis=(1, 2)))
    assert np.sum(np.abs(scan.probe) ** 2) == pytest.approx(med, rel=1e-4)
    np.testing.assert_allclose(np.abs(scan.probe[0]) / np.abs(scan.probe).max(),
                               np.abs(probe) / np.abs(probe).max(), atol=1e-5)


def test_tike_archive_with_centred_patterns_is_read_as_centred(tmp_path, caplog):
    """tike writes the zero order at the corner; an archive whose patterns are already
    centred (written by another tool) is not shifted to the corners, and the reader says so."""
    import logging

    path, _, _, corners, data = _tike_fixture(tmp_path, compress=False)
    with caplog.at_level(logging.WARNING):
        as_tike = load_tike_npz(path, normalize_probe=False)
    assert as_tike.metadata["zero_frequency_as_stored"] == "corner" and not caplog.records
    centred = np.fft.fftshift(data, axes=(-2, -1))
    with np.load(path) as z:
        arrays = dict(z)
    arrays["data"] = centred[None]
    other = tmp_path / "centred.npz"
    np.savez(other, **arrays)
    with caplog.at_level(logging.WARNING):
        scan = load_scan(other)  # no second warning from the centring check either
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "centred.npz" in said[0] and "read as centred" in said[0]
    assert scan.metadata["zero_frequency_as_stored"] == "centre"
    np.testing.assert_allclose(scan.counts, as_tike.counts, rtol=1e-5)
    np.testing.assert_array_equal(scan.positions_px, as_tike.positions_px)


def test_tike_missing_key_and_bad_counts(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, data=np.ones((3, 8, 8), np.float32), scan=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"t\.npz.*'probe'"):
        load_tike_npz(path)
    np.savez(path, data=-np.ones((3, 8, 8), np.float32), scan=np.zeros((3, 2)),
             probe=np.ones((8, 8), np.complex64))
    with pytest.raises(DataError, match=r"'data' must be non-negative"):
        load_tike_npz(path)
    np.savez(path, data=np.ones((2, 3, 8, 8), np.float32), scan=np.zeros((2, 3, 2)),
             probe=np.ones((8, 8), np.complex64))
    with pytest.raises(DataError, match=r"'data' has leading axes \(2,\)"):
        load_tike_npz(path)


# ------------------------------------------------------------------------- CXI
ENERGY_EV = 8000.0
DIST_M, PIX_M = 2.0, 75e-6


def _cxi_fixture(tmp_path: Path, *, basis=None, drop=(), neg=False, name="scan.cxi"):
    import h5py

    rng = np.random.default_rng(1)
    n, h, w = 5, 20, 24
    counts = rng.poisson(40, (n, h, w)).astype(np.int32)
    if neg:
        counts[2, 3, 4] = -1
    trans = np.zeros((n, 3))
    trans[:, 0] = np.linspace(-1e-6, 1e-6, n)  # x: 2 um range
    trans[:, 1] = np.linspace(3e-6, 2e-6, n) ** 2 * 1e6  # y: other range and spacing
    mask = np.zeros((h, w), np.uint32)
    mask[0, 2] = 1  # cropped away (columns 2:22 kept, row 0 kept) -> at [0, 0]
    mask[10, 12] = 4
    path = tmp_path / name
    det = "entry_1/instrument_1/detector_1"
    with h5py.File(path, "w") as f:
        items = {
            f"{det}/data": counts,
            "entry_1/sample_1/geometry_1/translation": trans,
            f"{det}/x_pixel_size": PIX_M,
            f"{det}/y_pixel_size": PIX_M,
            f"{det}/distance": DIST_M,
            f"{det}/mask": mask,
            "entry_1/instrument_1/source_1/energy": ENERGY_EV * ELEMENTARY_CHARGE_C,
        }
        if basis is not None:
            items[f"{det}/basis_vectors"] = basis
        for k, v in items.items():
            if k not in drop:
                f[k] = v
    return path, counts, trans


def test_cxi_units_orientation_mask(tmp_path):
    path, counts, trans = _cxi_fixture(tmp_path)
    assert detect_format(path) == "cxi"
    scan = load_scan(path)
    assert scan.photon_energy_ev == pytest.approx(ENERGY_EV, rel=1e-9)
    wavelength = PLANCK_C_JM / (ENERGY_EV * ELEMENTARY_CHARGE_C)
    assert wavelength == pytest.approx(1.5498e-10, rel=1e-3)  # 8 keV
    dx = wavelength * DIST_M / (20 * PIX_M)  # cropped to the 20 x 20 centre
    assert scan.pixel_size_m == pytest.approx(dx, rel=1e-9)
    assert scan.detector_distance_m == DIST_M
    np.testing.assert_allclose(scan.counts, counts[:, :, 2:22], rtol=1e-6)
    assert scan.metadata["cropped_from"] == [20, 24]
    assert scan.bad_pixel_mask.dtype == bool and scan.bad_pixel_mask.sum() == 2
    assert scan.bad_pixel_mask[0, 0] and scan.bad_pixel_mask[10, 10]
    # Default CXI basis (rows -y, columns -x): positions = [t_y, t_x] / dx + shift.
    shift = np.asarray(scan.metadata["position_shift_px"])
    np.testing.assert_allclose(scan.positions_px - shift, trans[:, [1, 0]] / dx, rtol=1e-9)
    assert np.all(scan.positions_px - 10 >= 0)
    assert scan.metadata["probe_estimated"] is True
    assert np.sum(np.abs(scan.probe) ** 2) == pytest.approx(scan.counts.sum((1, 2)).mean(), 1e-4)


def test_cxi_estimated_probe_reproduces_mean_pattern(tmp_path):
    path, counts, _ = _cxi_fixture(tmp_path)
    scan = load_cxi(path)
    mean = np.where(scan.bad_pixel_mask, 0, scan.counts.mean(0))
    far = _ours(scan.probe[0], np.ones((20, 20)))
    np.testing.assert_allclose(far / far.sum(), mean / mean.sum(), rtol=1e-3, atol=1e-7)


def test_cxi_basis_vectors_flip_rows(tmp_path):
    basis = np.array([[0.0, PIX_M, 0.0], [-PIX_M, 0.0, 0.0]])  # rows along +y
    path, _, trans = _cxi_fixture(tmp_path, basis=basis)
    scan = load_cxi(path)
    rel = scan.positions_px - scan.positions_px[0]
    expected = np.stack([-trans[:, 1], trans[:, 0]], 1) / scan.pixel_size_m
    np.testing.assert_allclose(rel, expected - expected[0], rtol=1e-9, atol=1e-6)


def test_cxi_crop_probe_and_negative_counts(tmp_path):
    path, counts, _ = _cxi_fixture(tmp_path, neg=True)
    scan = load_scan(path, patch_size=16)
    np.testing.assert_allclose(scan.counts, np.clip(counts[:, 2:18, 4:20], 0, None), rtol=1e-6)
    assert scan.bad_pixel_mask[1, 0]  # the negative count at [3, 4] -> cropped [1, 0]
    probe = np.ones((16, 16), np.complex64)
    given = load_scan(path, patch_size=16, probe=probe)
    assert given.metadata["probe_estimated"] is False
    np.testing.assert_array_equal(given.probe[0], probe)
    pfile = tmp_path / "probe.npz"
    np.savez(pfile, probeGuess=probe * 2)
    np.testing.assert_array_equal(load_cxi(path, probe=str(pfile), patch_size=16).probe[0],
                                  probe * 2)
    with pytest.raises(DataError, match="N=20"):
        load_cxi(path, probe=probe)
    with pytest.raises(DataError, match="patch_size=32"):
        load_cxi(path, patch_size=32)


@pytest.mark.parametrize(
    "drop, where",
    [
        (("entry_1/sample_1/geometry_1/translation",), "/entry_1/sample_1/geometry_1/translation"),
        (("entry_1/instrument_1/detector_1/data",), "/entry_1/data_1/data"),
        (("entry_1/instrument_1/detector_1/distance",), "detector_1/distance"),
        (("entry_1/instrument_1/source_1/energy",), "source_1/energy"),
    ],
)
def test_cxi_missing_dataset(tmp_path, drop, where):
    path, _, _ = _cxi_fixture(tmp_path, drop=drop)
    with pytest.raises(DataError) as info:
        load_cxi(path)
    assert str(path) in str(info.value) and where in str(info.value)


def test_cxi_wavelength_fallback(tmp_path):
    import h5py

    path, _, _ = _cxi_fixture(tmp_path, drop=("entry_1/instrument_1/source_1/energy",))
    with h5py.File(path, "a") as f:
        f["entry_1/instrument_1/source_1/wavelength"] = 1e-10
    assert load_cxi(path).photon_energy_ev == pytest.approx(12398.42, rel=1e-5)


# ---------------------------------------------------------- dispatch / convert
def _contract_scan() -> Scan:
    rng = np.random.default_rng(2)
    grid = np.stack(np.meshgrid(np.arange(4) * 3.0, np.arange(5) * 3.0, indexing="ij"), -1)
    yy, xx = np.indices((16, 16)) - 8
    disk = ((yy**2 + xx**2) <= 25).astype(np.complex64)
    return Scan(
        diffraction=rng.uniform(1, 2, (20, 16, 16)).astype(np.float32),
        positions_px=grid.reshape(-1, 2) + [8.0, 9.0],
        probe=disk,
        pixel_size_m=1e-8,
    )


def test_dispatch_errors_and_overrides(tmp_path):
    assert SUPPORTED_FORMATS == ("npz", "tike", "cxi")
    path = save_npz(_contract_scan(), tmp_path / "c.npz")
    assert detect_format(path) == "npz"
    with pytest.raises(DataError, match="npz, tike, cxi"):
        load_scan(path, fmt="ptypy")
    text = tmp_path / "data.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"data\.txt.*npz, tike, cxi"):
        load_scan(text)
    fake = tmp_path / "fake.npz"
    fake.write_text("not a zip")
    with pytest.raises(DataError, match=r"fake\.npz.*not a readable NPZ"):
        load_scan(fake)
    with pytest.raises(DataError, match="patch_size=32"):
        load_scan(path, patch_size=32)
    scan = load_scan(path, amplitude_units="arbitrary", probe=np.full((16, 16), 2j, np.complex64))
    assert scan.amplitude_units == "arbitrary" and np.all(scan.probe == 2j)
    packed = tmp_path / "c.npz.bz2"
    packed.write_bytes(bz2.compress(path.read_bytes()))
    assert detect_format(packed) == "npz"
    np.testing.assert_array_equal(load_scan(packed).diffraction, load_npz(path).diffraction)


def test_convert_cxi_to_contract(tmp_path):
    src, counts, _ = _cxi_fixture(tmp_path)
    written = convert(src, tmp_path / "out.npz", patch_size=16)
    back = load_npz(tmp_path / "out.npz")
    np.testing.assert_array_equal(back.diffraction, written.diffraction)
    np.testing.assert_array_equal(back.positions_px, written.positions_px)
    np.testing.assert_array_equal(back.bad_pixel_mask, written.bad_pixel_mask)
    assert back.photon_energy_ev == written.photon_energy_ev == pytest.approx(ENERGY_EV)
    assert back.pixel_size_m == written.pixel_size_m
    assert back.metadata["probe_estimated"] is True
    with pytest.raises(DataError, match="must differ"):
        convert(tmp_path / "out.npz", tmp_path / "out.npz")


def test_summarize_known_geometry():
    scan = _contract_scan()
    d = summarize(scan)
    assert d["n_patterns"] == 20 and d["N"] == 16 and d["n_probe_modes"] == 1
    counts = scan.counts.sum((1, 2))
    assert d["counts_per_pattern"]["mean"] == pytest.approx(counts.mean(), rel=1e-6)
    assert d["counts_per_pattern"]["max"] == pytest.approx(counts.max(), rel=1e-6)
    assert d["position_extent_px"] == [9.0, 12.0]
    assert d["position_extent_m"] == pytest.approx([9e-8, 12e-8])
    assert d["mean_step_px"] == pytest.approx(3.0)
    diameter = 2 * np.sqrt(81 / np.pi)  # 81 pixels inside the radius-5 disk
    assert d["probe_diameter_px"] == pytest.approx(diameter)
    assert d["overlap"] == pytest.approx(1 - 3 / diameter)
    assert d["object_shape"] == [25, 29]
    text = format_summary(d)
    assert "20 of 16 x 16" in text and "overlap ~" in text and "9 x 12 px" in text
    from ptychopinn.physics.coverage import scan_coverage

    assert d["coverage"] == pytest.approx(scan_coverage(scan.positions_px, scan.probe))
    assert f"coverage {d['coverage']:.4g} (probe footprints per lit pixel" in text


# ------------------------------------------------------------------ real files
@pytest.fixture(scope="module")
def star() -> Scan:
    if not STAR.exists():
        pytest.skip(f"real data absent: {STAR} (needs ../shared/data next to the project)")
    return load_scan(STAR)


def test_real_siemens_star(star):
    assert star.metadata["reader"] == "tike"
    assert star.diffraction.shape == (516, 128, 128) and star.diffraction.min() >= 0
    assert star.probe.shape == (1, 128, 128) and star.probe.dtype == np.complex64
    lo = star.positions_px.min(0) - 64
    assert np.all(lo >= 0) and np.all(lo < 1)
    h, w = star.object_shape()
    assert star.positions_px[:, 0].max() + 64 <= h and star.positions_px[:, 1].max() + 64 <= w
    # Zero frequency centred: the zone-plate pupil (dark central stop, bright ring
    # ~16 px out) holds >90% of the mean counts within 32 px of [64, 64].
    mean = star.counts.mean(0)
    r = np.hypot(*(np.indices(mean.shape) - 64))
    assert mean[r < 32].sum() / mean.sum() > 0.9
    far = _ours(star.probe[0], np.ones((128, 128)))
    assert np.corrcoef(mean.ravel(), far.ravel())[0, 1] > 0.7
    # Physics scale: the raw probe guess is ~8.9e3 times weaker than the counts;
    # after normalisation each pattern holds 0.9-1.1 x sum|probe|^2 (weak absorber).
    assert 3e3 < star.metadata["probe_counts_ratio_raw"] < 3e4
    ratio = star.counts.sum((1, 2)) / np.sum(np.abs(star.probe) ** 2)
    assert 0.9 < ratio.min() and ratio.max() < 1.1
    d = summarize(star)
    assert d["mean_step_px"] == pytest.approx(8.2, abs=0.3) and 0.7 < d["overlap"] < 0.95


def test_real_petra_cxi():
    if not PETRA.exists():
        pytest.skip(f"real data absent: {PETRA} (needs ../shared/data next to the project)")
    scan = load_scan(PETRA)
    assert scan.diffraction.shape == (200, 100, 100) and scan.amplitude_units == "sqrt_counts"
    assert 1e3 < scan.photon_energy_ev < 1e5
    assert scan.photon_energy_ev == pytest.approx(12660, rel=1e-3)
    assert scan.detector_distance_m == pytest.approx(1.12)
    assert scan.bad_pixel_mask.dtype == bool and scan.bad_pixel_mask.sum() == 5
    assert scan.pixel_size_m == pytest.approx(9.7949e-11 * 1.12 / (100 * 55e-6), rel=1e-3)
    assert "NEAR-field" in scan.metadata["geometry_note"]
    assert np.all(scan.positions_px - 50 >= 0) and scan.metadata["probe_estimated"]
