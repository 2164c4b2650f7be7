"""The NPZ data contract: `Scan` validation and `load_npz`/`save_npz`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.data.npz import load_npz, save_npz
from ptychopinn.data.scan import Scan
from ptychopinn.errors import DataError

N = 12


def _arrays(n: int = 36, npix: int = N, obj_shape: tuple[int, int] = (61, 53), seed: int = 0):
    """Raw contract arrays with distinct row/column ranges (catches axis swaps)."""
    rng = np.random.default_rng(seed)
    ys = rng.uniform(npix / 2, obj_shape[0] - npix / 2, n)
    xs = rng.uniform(npix / 2, obj_shape[1] - npix / 2, n)
    shape = (npix, npix)
    probe = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    obj = np.exp(1j * rng.uniform(-1, 1, obj_shape)).astype(np.complex64)
    return {
        "diffraction": rng.uniform(0, 5, (n, npix, npix)).astype(np.float32),
        "xcoords": xs,
        "ycoords": ys,
        "probeGuess": probe,
        "objectGuess": obj,
    }


def _write(tmp_path: Path, arrays: dict, name: str = "scan.npz") -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _raises(path: Path, *words: str) -> str:
    with pytest.raises(DataError) as info:
        load_npz(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ------------------------------------------------------------------ good files
def test_odd_shapes_keep_axes(tmp_path):
    a = _arrays()
    scan = load_npz(_write(tmp_path, a))
    assert scan.diffraction.shape == (36, N, N) and scan.diffraction.dtype == np.float32
    np.testing.assert_array_equal(scan.positions_px[:, 0], a["ycoords"])  # y = row
    np.testing.assert_array_equal(scan.positions_px[:, 1], a["xcoords"])  # x = column
    assert scan.object.shape == (61, 53) and scan.object_shape() == (61, 53)
    assert scan.probe.shape == (1, N, N) and scan.probe.dtype == np.complex64
    np.testing.assert_array_equal(scan.probe[0], a["probeGuess"])
    assert scan.amplitude_units == "sqrt_counts"


def test_round_trip_identical(tmp_path):
    a = _arrays(seed=1)
    a.update(
        scan_index=np.arange(36) % 3,
        bad_pixel_mask=np.eye(N, dtype=bool),
        pixel_size_m=np.float64(2.5e-8),
        photon_energy_ev=np.float64(8000.0),
        detector_distance_m=np.float64(1.5),
        amplitude_units=np.asarray("arbitrary"),
        metadata_json=np.asarray(json.dumps({"beamline": "x", "n": 3})),
        xcoords_start=a["xcoords"] - 1.0,
        ycoords_start=a["ycoords"] + 1.0,
    )
    first = load_npz(_write(tmp_path, a))
    out1 = save_npz(first, tmp_path / "one.npz")
    second = load_npz(out1)
    out2 = save_npz(second, tmp_path / "two.npz")
    with np.load(out1) as f1, np.load(out2) as f2:
        assert sorted(f1.files) == sorted(f2.files)
        for k in f1.files:
            assert f1[k].dtype == f2[k].dtype, k
            np.testing.assert_array_equal(f1[k], f2[k], err_msg=k)
    for k in ("diffraction", "probeGuess", "objectGuess", "scan_index", "bad_pixel_mask",
              "xcoords", "ycoords", "xcoords_start"):
        with np.load(out1) as f1:
            np.testing.assert_array_equal(f1[k], a[k], err_msg=k)
    assert second.amplitude_units == "arbitrary"
    assert second.pixel_size_m == 2.5e-8 and second.photon_energy_ev == 8000.0
    assert second.detector_distance_m == 1.5
    assert second.metadata["beamline"] == "x" and second.metadata["n"] == 3
    np.testing.assert_array_equal(second.metadata["ycoords_start"], a["ycoords"] + 1.0)


def test_probe_modes_round_trip(tmp_path):
    a = _arrays(seed=2)
    rng = np.random.default_rng(2)
    a["probeGuess"] = (rng.normal(size=(3, N, N)) + 1j).astype(np.complex64)
    scan = load_npz(_write(tmp_path, a))
    assert scan.n_probe_modes == 3
    back = load_npz(save_npz(scan, tmp_path / "modes.npz"))
    np.testing.assert_array_equal(back.probe, a["probeGuess"])


def test_original_ptychopinn_layout(tmp_path):
    a = _arrays(n=20, seed=3)
    stack = a.pop("diffraction")
    legacy = {
        **a,
        "diff3d": np.transpose(stack, (1, 2, 0)).astype(np.float64),  # (N, N, n)
        "scan_index": np.zeros(20, dtype=np.int32),
        "xcoords_start": a["xcoords"] + 0.5,
        "ycoords_start": a["ycoords"] - 0.5,
    }
    scan = load_npz(_write(tmp_path, legacy))
    np.testing.assert_allclose(scan.diffraction, stack)
    assert scan.scan_index.dtype == np.int64 and scan.scan_index.shape == (20,)
    assert scan.object.shape == (61, 53)
    np.testing.assert_allclose(scan.metadata["xcoords_start"], a["xcoords"] + 0.5)
    np.testing.assert_allclose(scan.metadata["ycoords_start"], a["ycoords"] - 0.5)


def test_intensity_key_gives_square_root(tmp_path):
    a = _arrays(seed=4)
    counts = np.random.default_rng(4).poisson(30.0, a["diffraction"].shape).astype(np.float32)
    a.pop("diffraction")
    scan = load_npz(_write(tmp_path, {**a, "intensity": counts}))
    np.testing.assert_allclose(scan.diffraction, np.sqrt(counts), rtol=1e-6)
    np.testing.assert_allclose(scan.counts, counts, rtol=1e-5)
    assert scan.amplitude_units == "sqrt_counts"


def test_in_object_frame_integer_shift():
    rng = np.random.default_rng(5)
    pos = np.stack([rng.uniform(-40, 30, 9), rng.uniform(-7, 90, 9)], axis=1)
    scan = Scan(np.ones((9, 8, 8), np.float32), pos, np.ones((8, 8), np.complex64))
    moved = scan.in_object_frame(margin=2)
    shift = moved.positions_px - pos
    np.testing.assert_allclose(shift, np.rint(shift), atol=1e-9)
    np.testing.assert_allclose(shift, shift[0][None].repeat(9, 0))
    lo = moved.positions_px.min(axis=0) - 4
    assert np.all((lo >= 2) & (lo < 3))
    h, w = moved.object_shape(margin=2)
    assert moved.positions_px[:, 0].max() + 4 + 2 <= h and moved.positions_px[:, 1].max() + 6 <= w


# ------------------------------------------------------------------- bad files
@pytest.mark.parametrize("drop", ["xcoords", "ycoords", "diffraction", "probeGuess"])
def test_missing_key(tmp_path, drop):
    a = _arrays()
    a.pop(drop)
    _raises(_write(tmp_path, a), drop)


def test_wrong_rank(tmp_path):
    a = _arrays()
    a["diffraction"] = a["diffraction"][0]
    _raises(_write(tmp_path, a), "'diffraction'", "3-D")


def test_complex_diffraction(tmp_path):
    a = _arrays()
    a["diffraction"] = a["diffraction"].astype(np.complex64)
    _raises(_write(tmp_path, a), "'diffraction'", "real")


def test_non_square(tmp_path):
    a = _arrays()
    a["diffraction"] = a["diffraction"][:, :, :-1]
    _raises(_write(tmp_path, a), "'diffraction'", "square")


def test_probe_size_mismatch(tmp_path):
    a = _arrays()
    a["probeGuess"] = a["probeGuess"][:-2, :-2]
    _raises(_write(tmp_path, a), "'probe'", f"N={N}")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite(tmp_path, bad):
    a = _arrays()
    a["diffraction"][3, 2, 1] = bad
    _raises(_write(tmp_path, a), "'diffraction'", "NaN/Inf")


def test_negative_amplitudes(tmp_path):
    a = _arrays()
    a["diffraction"][0, 0, 0] = -0.5
    _raises(_write(tmp_path, a), "'diffraction'", "non-negative")


def test_negative_intensity(tmp_path):
    a = _arrays()
    a["intensity"] = a.pop("diffraction") - 1.0
    _raises(_write(tmp_path, a), "'intensity'", "non-negative")


def test_positions_count_mismatch(tmp_path):
    a = _arrays()
    a["xcoords"], a["ycoords"] = a["xcoords"][:-1], a["ycoords"][:-1]
    _raises(_write(tmp_path, a), "positions", "36")


def test_x_y_length_mismatch(tmp_path):
    a = _arrays()
    a["xcoords"] = a["xcoords"][:-1]
    _raises(_write(tmp_path, a), "'xcoords'", "'ycoords'")


def test_real_probe(tmp_path):
    a = _arrays()
    a["probeGuess"] = np.abs(a["probeGuess"])
    _raises(_write(tmp_path, a), "'probe'", "complex")


def test_positions_outside_object(tmp_path):
    a = _arrays()
    a["xcoords"] = a["xcoords"] + 40.0  # beyond the 53 columns
    _raises(_write(tmp_path, a), "positions", "(61, 53)")


def test_truncated_npz(tmp_path):
    good = _write(tmp_path, _arrays())
    data = good.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    _raises(cut, "NPZ")


def test_text_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("xcoords,ycoords\n1,2\n")
    _raises(path, "not an NPZ")


def test_missing_file(tmp_path):
    _raises(tmp_path / "absent.npz", "not found")


def test_pickled_object_array(tmp_path):
    a = _arrays()
    a["objectGuess"] = np.array([{"evil": 1}, None], dtype=object)
    _raises(_write(tmp_path, a), "pickle")


def test_bad_amplitude_units(tmp_path):
    a = _arrays()
    a["amplitude_units"] = np.asarray("photons")
    _raises(_write(tmp_path, a), "'amplitude_units'", "photons")
