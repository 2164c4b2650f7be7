"""Bad input to the data layer: `Scan` and `load_npz` refuse it with a `DataError`
naming the source and the key, or warn (a log record) when it is legal but suspect."""

from __future__ import annotations

import bz2
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.data.npz import load_npz, save_npz
from ptychopinn.data.scan import MAX_CANVAS_PX, Scan
from ptychopinn.errors import DataError

N = 12
SRC = "scan.npz"
DATA_LOGGERS = ("ptychopinn.data.scan", "ptychopinn.data.npz")


def _parts(n: int = 9, seed: int = 0) -> dict:
    """Tiny contract arrays: sqrt of Poisson counts, positions inside a 41 x 37 object."""
    rng = np.random.default_rng(seed)
    shape = (N, N)
    return {
        "diffraction": np.sqrt(rng.poisson(20.0, (n, N, N))).astype(np.float32),
        "positions_px": np.stack([rng.uniform(N / 2, 41 - N / 2, n),
                                  rng.uniform(N / 2, 37 - N / 2, n)], axis=1),
        "probe": (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64),
    }


def _scan(**changes) -> Scan:
    return Scan(**{**_parts(), "source": SRC, **changes})


def _refused(*words: str, **changes) -> str:
    with pytest.raises(DataError) as info:
        _scan(**changes)
    msg = str(info.value)
    assert msg.startswith(SRC + ": "), msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _npz_arrays(n: int = 9, seed: int = 0) -> dict:
    p = _parts(n, seed)
    return {
        "diffraction": p["diffraction"],
        "xcoords": p["positions_px"][:, 1],
        "ycoords": p["positions_px"][:, 0],
        "probeGuess": p["probe"],
    }


def _write(tmp_path: Path, arrays: dict, name: str = "scan.npz") -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _load_refused(path: Path, *words: str) -> str:
    with pytest.raises(DataError) as info:
        load_npz(path)
    msg = str(info.value)
    assert msg.startswith(str(path) + ": "), msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name in DATA_LOGGERS]


# ------------------------------------------------------------ 1. diffraction, mask
def test_all_zero_diffraction_is_refused():
    _refused("'diffraction'", "only zeros", diffraction=np.zeros((9, N, N), np.float32))


def test_bad_pixel_mask_every_pixel_bad_is_refused():
    _refused("'bad_pixel_mask'", f"all {N * N} pixels marked bad",
             bad_pixel_mask=np.ones((N, N), bool))


@pytest.mark.parametrize("mask, found", [
    (np.full((N, N), 0.5), "0.5"),
    (np.where(np.eye(N, dtype=bool), 2, 0), "2"),
    (np.full((N, N), "a"), "<U1"),
    ("none", "<U4"),
])
def test_bad_pixel_mask_not_boolean_is_refused(mask, found):
    _refused("'bad_pixel_mask'", "booleans", found, bad_pixel_mask=mask)


def test_bad_pixel_mask_of_zeros_and_ones_becomes_boolean():
    mask = np.eye(N, dtype=np.uint8)
    scan = _scan(bad_pixel_mask=mask.astype(np.float64))
    assert scan.bad_pixel_mask.dtype == bool
    np.testing.assert_array_equal(scan.bad_pixel_mask, mask.astype(bool))


def test_mask_over_half_the_detector_warns_once(caplog):
    mostly = np.ones((N, N), bool)
    mostly[: N // 3] = False
    with caplog.at_level(logging.WARNING):
        _scan(bad_pixel_mask=np.eye(N, dtype=bool))  # a few bad pixels: quiet
        assert _warnings(caplog) == []
        scan = _scan(bad_pixel_mask=mostly)
        said = _warnings(caplog)
        assert len(said) == 1 and said[0].startswith(SRC) and "'bad_pixel_mask'" in said[0]
        assert f"{mostly.sum()} of the {N * N}" in said[0] and "inverted" in said[0]
        scan.replace(amplitude_units="arbitrary")  # the mask unchanged: not said again
        scan.subset(np.arange(4))
        assert len(_warnings(caplog)) == 1
        scan.replace(bad_pixel_mask=~np.eye(N, dtype=bool))
        assert len(_warnings(caplog)) == 2


# ------------------------------------------------------------ 2. geometry
@pytest.mark.parametrize("factor", [1e7, 1e4])
def test_positions_far_too_large_for_pixels_are_refused(factor):
    pos = _parts()["positions_px"] * factor
    msg = _refused("'positions_px (xcoords/ycoords in an NPZ file)'", f"at most {MAX_CANVAS_PX}",
                   "not in pixels", positions_px=pos)
    span = pos[:, 0].max() - pos[:, 0].min() + N
    assert f"{span:.4g}" in msg


def test_canvas_limit_passes_large_real_scans():
    """The benchmarks' largest simulated scan (10^5 patterns, N=64, the default step of
    N/8: bench_memory.py) spans ~2,600 px; a scan up to the limit itself loads."""
    from ptychopinn.simulation import make_positions

    pos = make_positions("raster", 100_000, 8.0, 0.5, np.random.default_rng(0))
    assert np.all(np.ptp(pos, axis=0) + 64 < MAX_CANVAS_PX / 16)
    n = 4
    edge = np.array([[N / 2, N / 2], [MAX_CANVAS_PX - N / 2, MAX_CANVAS_PX - N / 2],
                     [N / 2, 100.0], [300.0, N / 2]])
    p = _parts(n)
    Scan(p["diffraction"], edge[:n], p["probe"])


def test_identical_positions_warn(caplog):
    pos = np.tile([[20.0, 18.5]], (9, 1))
    with caplog.at_level(logging.WARNING):
        _scan(positions_px=pos)
    said = _warnings(caplog)
    assert len(said) == 1 and "all 9 positions are the same point" in said[0]
    assert said[0].startswith(SRC) and "xcoords/ycoords" in said[0]


def test_positions_in_metres_warn(caplog):
    pos = _parts()["positions_px"] * 1e-8  # 10 nm pixels, positions left in metres
    with caplog.at_level(logging.WARNING):
        _scan(positions_px=pos)
    said = _warnings(caplog)
    assert len(said) == 1 and "not in pixels" in said[0] and "nearest neighbour" in said[0]


def test_ordinary_positions_and_repeated_passes_do_not_warn(caplog):
    p = _parts(18)
    p["positions_px"][9:] = p["positions_px"][:9]  # a second pass over the same points
    with caplog.at_level(logging.WARNING):
        Scan(**p)
        _scan()
    assert _warnings(caplog) == []


# ------------------------------------------------------------ 3. field types
@pytest.mark.parametrize("dtype", [complex, str, bool])
def test_positions_not_real_numbers_are_refused(dtype):
    pos = _parts()["positions_px"].astype(dtype)
    _refused("'positions_px (xcoords/ycoords in an NPZ file)'", "real numbers",
             f"dtype {pos.dtype}", positions_px=pos)


@pytest.mark.parametrize("name", ["pixel_size_m", "photon_energy_ev", "detector_distance_m"])
@pytest.mark.parametrize("value, found", [("10nm", "'10nm' (str)"),
                                          (np.array([1e-8, 2e-8]), "array of shape (2,)"),
                                          (True, "True (bool)")])
def test_scalar_fields_of_the_wrong_type_are_refused(name, value, found):
    _refused(f"'{name}'", "a positive number", found, **{name: value})


def test_scalar_fields_accept_numpy_numbers():
    scan = _scan(pixel_size_m=np.float32(1e-8), photon_energy_ev=np.array(8000),
                 detector_distance_m=2)
    assert scan.pixel_size_m == pytest.approx(1e-8) and type(scan.pixel_size_m) is float
    assert scan.photon_energy_ev == 8000.0 and scan.detector_distance_m == 2.0


def test_string_object_is_refused():
    _refused("'object'", "numbers", "<U1", object=np.full((41, 37), "a"))


@pytest.mark.parametrize("index, found", [(np.array(["a"] * 9), "dtype <U1"),
                                          (np.linspace(0, 3.7, 9), "non-integer values"),
                                          (np.r_[np.zeros(8), np.nan], "nan")])
def test_scan_index_not_integers_is_refused(index, found):
    _refused("'scan_index'", "integers", found, scan_index=index)


def test_scan_index_of_whole_floats_is_read_as_integers():
    scan = _scan(scan_index=np.repeat([0.0, 1.0, 2.0], 3))
    assert scan.scan_index.dtype == np.int64
    np.testing.assert_array_equal(scan.scan_index, np.repeat([0, 1, 2], 3))


def test_scan_index_of_another_shape_is_refused():
    _refused("'scan_index'", "9 entries", "(3, 3)", scan_index=np.zeros((3, 3), int))


# ------------------------------------------------------------ 7. the positions' key
def test_position_errors_name_the_key_the_reader_passes(caplog):
    wrong = _parts()["positions_px"][:5]
    _refused("'positions_px (xcoords/ycoords in an NPZ file)'", positions_px=wrong)
    msg = _refused("'positions_px (scan in the file)' must be 9 positions", positions_px=wrong,
                   positions_key="scan")
    assert "xcoords" not in msg
    cxi = "/entry_1/sample_1/geometry_1/translation"
    _refused(f"'positions_px ({cxi} in the file)'", "not in pixels", positions_key=cxi,
             positions_px=_parts()["positions_px"] * 1e9)
    with caplog.at_level(logging.WARNING):
        scan = _scan(positions_px=np.tile([[20.0, 18.5]], (9, 1)), positions_key="scan")
    assert "(scan in the file)" in _warnings(caplog)[0]
    assert scan.replace(amplitude_units="arbitrary").positions_key == "scan"


# ------------------------------------------------------------ 4. NPZ keys
@pytest.mark.parametrize("text, kind", [("[1,2]", "array"), ("null", "null"),
                                        ('"str"', "string"), ("3", "number")])
def test_metadata_json_not_an_object_is_refused(tmp_path, text, kind):
    path = _write(tmp_path, {**_npz_arrays(), "metadata_json": np.asarray(text)})
    _load_refused(path, "'metadata_json'", "JSON object", f"found a JSON {kind}")


@pytest.mark.parametrize("key, value", [
    ("metadata_json", np.array(['{"a": 1}', '{"b": 2}'])),
    ("metadata_json", np.frombuffer(b"{}", dtype=np.uint8)),
    ("amplitude_units", np.array(["sqrt_counts", "arbitrary"])),
    ("amplitude_units", np.array(3)),
])
def test_string_keys_that_are_not_one_string_are_refused(tmp_path, key, value):
    path = _write(tmp_path, {**_npz_arrays(), key: value})
    _load_refused(path, f"'{key}'", "a single string", f"dtype {value.dtype}")


def test_string_keys_accept_utf8_bytes(tmp_path):
    path = _write(tmp_path, {**_npz_arrays(), "amplitude_units": np.bytes_(b"arbitrary"),
                             "metadata_json": np.bytes_(json.dumps({"a": 1}).encode())})
    scan = load_npz(path)
    assert scan.amplitude_units == "arbitrary" and scan.metadata == {"a": 1}


@pytest.mark.parametrize("value", [np.full((9, N, N), "a"), np.ones((9, N, N), bool)])
def test_intensity_of_strings_or_bools_is_refused(tmp_path, value):
    a = _npz_arrays()
    a.pop("diffraction")
    path = _write(tmp_path, {**a, "intensity": value})
    _load_refused(path, "'intensity'", "real numbers", f"dtype {value.dtype}")


@pytest.mark.parametrize("value, words", [
    (np.zeros((9, N, N)), ("only zeros",)),
    (np.where(np.arange(9)[:, None, None] == 4, np.nan, np.ones((9, N, N))), ("NaN/Inf",)),
])
def test_intensity_errors_name_intensity(tmp_path, value, words):
    a = _npz_arrays()
    a.pop("diffraction")
    path = _write(tmp_path, {**a, "intensity": value})
    _load_refused(path, "'intensity'", *words)


@pytest.mark.parametrize("value, words", [
    (np.array(["a", "b"]), ("real numbers", "<U1")),
    (np.arange(3.0), ("9 nominal positions", "(3,)")),
    (np.zeros((9, 2)), ("1-D", "(9, 2)")),
])
def test_start_positions_of_the_wrong_type_or_length_are_refused(tmp_path, value, words):
    path = _write(tmp_path, {**_npz_arrays(), "xcoords_start": value})
    _load_refused(path, "'xcoords_start'", *words)


def test_both_names_of_a_key_say_which_is_used(tmp_path, caplog):
    a = _npz_arrays()
    same = _write(tmp_path, {**a, "diff3d": a["diffraction"], "probe": a["probeGuess"]}, "same.npz")
    with caplog.at_level(logging.WARNING):
        load_npz(same)
    assert _warnings(caplog) == []
    other = {**a, "diff3d": 2 * a["diffraction"], "probe": 2 * a["probeGuess"]}
    with caplog.at_level(logging.WARNING):
        scan = load_npz(_write(tmp_path, other, "both.npz"))
    said = _warnings(caplog)
    assert len(said) == 2 and all(s.startswith(str(tmp_path / "both.npz")) for s in said)
    assert "'diffraction' is used and 'diff3d' ignored" in said[0]
    assert "'probeGuess' is used and 'probe' ignored" in said[1]
    np.testing.assert_array_equal(scan.diffraction, a["diffraction"])
    np.testing.assert_array_equal(scan.probe[0], a["probeGuess"])


# ------------------------------------------------------------ 5. (N, N, N) stacks
def test_square_stack_without_format_version_is_refused(tmp_path):
    a = _npz_arrays(n=N)
    legacy = {**a, "diffraction": np.transpose(a["diffraction"], (1, 2, 0))}
    path = _write(tmp_path, legacy)
    _load_refused(path, "'diffraction'", f"({N}, {N}, {N})", "ambiguous",
                  "np.transpose(stack, (2, 0, 1))", "format_version=1")


def test_square_stack_with_format_version_is_the_contract_layout(tmp_path):
    a = _npz_arrays(n=N)
    scan = load_npz(_write(tmp_path, {**a, "format_version": np.asarray(1)}))
    np.testing.assert_array_equal(scan.diffraction, a["diffraction"])
    back = load_npz(save_npz(scan, tmp_path / "again.npz"))  # save_npz declares it
    np.testing.assert_array_equal(back.diffraction, a["diffraction"])


def test_legacy_stack_with_another_count_is_still_transposed(tmp_path, caplog):
    a = _npz_arrays(n=N + 3)
    stack = a.pop("diffraction")
    with caplog.at_level(logging.WARNING):
        scan = load_npz(_write(tmp_path, {**a, "diff3d": np.transpose(stack, (1, 2, 0))}))
    said = _warnings(caplog)
    assert len(said) == 1 and "'diff3d' has the legacy (N, N, n) layout" in said[0]
    np.testing.assert_array_equal(scan.diffraction, stack)


# ------------------------------------------------------------ 6. counts stored as amplitudes
@pytest.mark.parametrize("dtype, what", [(np.int32, "integer dtype int32"),
                                         (np.uint16, "integer dtype uint16"),
                                         (np.float32, "only whole numbers")])
def test_counts_stored_as_diffraction_warn(tmp_path, caplog, dtype, what):
    a = _npz_arrays()
    counts = np.round(a["diffraction"].astype(np.float64) ** 2)
    path = _write(tmp_path, {**a, "diffraction": counts.astype(dtype)})
    with caplog.at_level(logging.WARNING):
        scan = load_npz(path)
    said = _warnings(caplog)
    assert len(said) == 1 and said[0].startswith(str(path)) and "'diffraction'" in said[0]
    for w in (what, "amplitudes", "np.sqrt(counts)", "'intensity'"):
        assert w in said[0], (w, said[0])
    np.testing.assert_allclose(scan.diffraction, counts)  # read as it is: no guess


def test_amplitudes_and_simulated_scans_do_not_warn(tmp_path, caplog, small_scan):
    a = _npz_arrays()
    with caplog.at_level(logging.WARNING):
        load_npz(_write(tmp_path, a))
        load_npz(_write(tmp_path, {**a, "diffraction": (a["diffraction"] > 4).astype(np.float32)},
                        "binary.npz"))  # 0/1 amplitudes: nothing above 1
        back = load_npz(save_npz(small_scan, tmp_path / "sim.npz"))
    assert _warnings(caplog) == []
    np.testing.assert_array_equal(back.diffraction, small_scan.diffraction)
    np.testing.assert_array_equal(back.positions_px, small_scan.positions_px)


def test_real_siemens_star_loads_without_data_warnings(shared_data, caplog):
    from ptychopinn.data.readers import load_scan

    with caplog.at_level(logging.WARNING):
        scan = load_scan(shared_data / "siemens_star" / "siemens-star-small.npz.bz2")
    assert scan.n_patterns == 516 and _warnings(caplog) == []


# ------------------------------------------------------------ 8. bz2 to load_npz
def test_load_npz_of_a_bz2_archive_points_to_load_scan(tmp_path):
    plain = _write(tmp_path, _npz_arrays())
    packed = tmp_path / "scan.npz.bz2"
    packed.write_bytes(bz2.compress(plain.read_bytes()))
    msg = _load_refused(packed, "bz2-compressed", "load_scan", "bunzip2")
    assert "CXI or tike" not in msg


def test_load_npz_of_a_folder_says_so(tmp_path):
    folder = tmp_path / "run.npz"
    folder.mkdir()
    _load_refused(folder, "is a folder")


def test_load_npz_names_the_source_it_is_given(tmp_path, caplog):
    """A reader that decompressed ``x.npz.bz2`` to a temporary file passes ``source``:
    errors, warnings and ``Scan.source`` name the user's file, not the temporary one."""
    a = _npz_arrays()
    bad = _write(tmp_path, {**a, "metadata_json": np.asarray("[1]")}, "tmp1.npz")
    with pytest.raises(DataError) as info:
        load_npz(bad, source="measured.npz.bz2")
    assert str(info.value).startswith("measured.npz.bz2: 'metadata_json'")
    counts = _write(tmp_path, {**a, "diffraction": np.round(a["diffraction"] ** 2).astype(int)},
                    "tmp2.npz")
    with caplog.at_level(logging.WARNING):
        scan = load_npz(counts, source="measured.npz.bz2")
    assert scan.source == "measured.npz.bz2"
    assert [s.split(":")[0] for s in _warnings(caplog)] == ["measured.npz.bz2"]


def test_amplitudes_whose_squares_overflow_are_refused():
    """Amplitudes of 1e30 square to Inf counts in float32: refused at load (they gave NaN
    in inspect's JSON and a NaN object after a training)."""
    d = np.ones((4, 16, 16), np.float32)
    d[1, 3, 3] = 1e30
    with pytest.raises(DataError, match=r"huge\.npz.*'diffraction'.*maximum 1e\+30"):
        Scan(diffraction=d, positions_px=np.array([[8.0, 8], [8, 12], [12, 8], [12, 12]]),
             probe=np.ones((16, 16), np.complex64), source="huge.npz")
    d[1, 3, 3] = 1e9  # large but representable: fine
    Scan(diffraction=d, positions_px=np.array([[8.0, 8], [8, 12], [12, 8], [12, 12]]),
         probe=np.ones((16, 16), np.complex64))


def test_physical_scalars_in_a_wrong_unit_are_warned(caplog):
    """An energy in joules, a distance in millimetres or a pixel in nanometres is legal
    (nothing in the reconstruction reads them) but asked about, once."""
    kw = dict(diffraction=np.ones((4, 16, 16), np.float32),
              positions_px=np.array([[8.0, 8], [8, 12], [12, 8], [12, 12]]),
              probe=np.ones((16, 16), np.complex64), source="units.npz")
    with caplog.at_level(logging.WARNING, logger="ptychopinn.data.scan"):
        Scan(**kw, photon_energy_ev=8000.0, detector_distance_m=2.0, pixel_size_m=1e-8)
        assert not caplog.records
        scan = Scan(**kw, photon_energy_ev=1.28e-15, detector_distance_m=2000.0,
                    pixel_size_m=10.0)
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "photon_energy_ev = 1.28e-15" in said and "not joules" in said
        assert "detector_distance_m = 2000" in said and "not millimetres" in said
        assert "pixel_size_m = 10" in said
        caplog.clear()
        scan.replace(source="other.npz")  # not said again for unchanged fields
        assert not caplog.records


# ------------------------------------------------------------ Scan.subset
@pytest.mark.parametrize(("index", "words"), [
    ([], "selects no pattern"),
    (np.zeros(9, bool), "selects no pattern"),
    ([True, False], "one entry per pattern (9); found 2"),
    ([9], "position 9 is out of range for a scan of 9"),
    ([-10], "position -10 is out of range"),
    ([0.5], "found dtype float64"),
    (np.zeros((2, 2), int), "1-D index"),
])
def test_subset_refuses_a_bad_index_naming_it(index, words):
    with pytest.raises(DataError) as info:
        _scan().subset(index)
    assert str(info.value).startswith(f"{SRC}: Scan.subset") and words in str(info.value)


def test_subset_takes_positions_and_masks():
    scan = _scan()
    mask = np.zeros(9, bool)
    mask[[1, 4]] = True
    by_mask, by_position = scan.subset(mask), scan.subset([1, 4])
    np.testing.assert_array_equal(by_mask.diffraction, scan.diffraction[[1, 4]])
    np.testing.assert_array_equal(by_position.positions_px, scan.positions_px[[1, 4]])
    np.testing.assert_array_equal(scan.subset([-1]).diffraction, scan.diffraction[-1:])


@pytest.mark.parametrize(("version", "words"), [
    (99, "'format_version' is 99; this ptychopinn reads 1 to 1 (the file was written by a "
         "newer version"),
    (0, "'format_version' is 0; this ptychopinn reads 1 to 1."),
    (1.5, "'format_version' must be a whole number (1); found 1.5"),
    ("one", "'format_version' must be a whole number"),
])
def test_npz_format_version_outside_what_this_version_reads_is_refused(tmp_path, version,
                                                                       words):
    scan = _scan()
    save_npz(scan, tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as f:
        arrays = {k: f[k] for k in f.files}
    assert int(arrays["format_version"]) == 1
    load_npz(tmp_path / "ok.npz")  # what save_npz writes is read
    arrays["format_version"] = np.asarray(version)
    np.savez(tmp_path / "v.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_npz(tmp_path / "v.npz")
    assert str(info.value).startswith(str(tmp_path / "v.npz")) and words in str(info.value)
