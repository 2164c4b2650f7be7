"""Bad input to the readers (CXI, tike, format dispatch), to ``inspect`` / ``convert``
and to the other NPZ readers (simulation object/probe files, reconstructions): each is
a `DataError` (or `ConfigError`) naming the file and the key or HDF5 dataset, never a
traceback nor silent acceptance. Tiny synthetic files, no training."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ptychopinn.data import Scan, save_npz
from ptychopinn.data.inspect import format_summary, summarize
from ptychopinn.data.readers import load_cxi, load_scan, load_tike_npz
from ptychopinn.data.readers.cxi import ELEMENTARY_CHARGE_C
from ptychopinn.errors import ConfigError, DataError

DET = "entry_1/instrument_1/detector_1"
SRC = "entry_1/instrument_1/source_1"
TRANS = "entry_1/sample_1/geometry_1/translation"
N_FRAMES, H, W = 6, 21, 19


def _cxi(tmp_path: Path, name: str = "scan.cxi", **changes) -> Path:
    """A small CXI file (8 keV, 2 m, 75 um pixels, translations over ~1 um); ``changes``
    maps dataset paths to replacement values (None: drop it)."""
    import h5py

    rng = np.random.default_rng(3)
    trans = np.zeros((N_FRAMES, 3))
    trans[:, 0] = np.linspace(-0.5e-6, 0.5e-6, N_FRAMES)
    trans[:, 1] = np.linspace(0.2e-6, -0.4e-6, N_FRAMES)
    items = {
        f"{DET}/data": rng.poisson(30, (N_FRAMES, H, W)).astype(np.int32),
        TRANS: trans,
        f"{DET}/x_pixel_size": 75e-6,
        f"{DET}/y_pixel_size": 75e-6,
        f"{DET}/distance": 2.0,
        f"{SRC}/energy": 8000.0 * ELEMENTARY_CHARGE_C,
    }
    items.update(changes)
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        for k, v in items.items():
            if v is not None:
                f[k] = v
    return path


def _raises(path: Path, *parts: str, **kw) -> str:
    with pytest.raises(DataError) as info:
        load_scan(path, **kw)
    msg = str(info.value)
    assert str(path) in msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


def test_plausible_cxi_fixture_loads(tmp_path):
    scan = load_scan(_cxi(tmp_path))
    assert scan.patch_size == 19 and 1 < np.ptp(scan.positions_px, axis=0).max() < 20


# --------------------------------------------------------------- CXI units
@pytest.mark.parametrize(
    "dataset, value, unit",
    [
        (f"{SRC}/energy", 8000.0, "eV"),  # eV instead of joules
        (f"{SRC}/energy", 8.0, "keV"),
        (f"{DET}/distance", 2000.0, "millimetres"),
        (f"{DET}/x_pixel_size", 75.0, "micrometres"),
        (f"{DET}/x_pixel_size", 0.075, "millimetres"),
    ],
)
def test_cxi_scalar_in_the_wrong_unit_is_named(tmp_path, dataset, value, unit):
    path = _cxi(tmp_path, **{dataset: value})
    _raises(path, "/" + dataset, "plausible", unit)


def test_cxi_wavelength_in_angstroms(tmp_path):
    path = _cxi(tmp_path, **{f"{SRC}/energy": None, f"{SRC}/wavelength": 1.55})
    _raises(path, f"/{SRC}/wavelength", "angstroms")


def test_cxi_implausible_object_pixel(tmp_path):
    # each value inside its own (generous) range, their object pixel ~5e-15 m is not
    path = _cxi(tmp_path, **{f"{SRC}/energy": 9e-13, f"{DET}/distance": 2e-3,
                             f"{DET}/x_pixel_size": 1.5e-3, f"{DET}/y_pixel_size": 1.5e-3})
    _raises(path, "object pixel size", f"/{DET}/distance")


@pytest.mark.parametrize("scale, guess", [(1e6, "micrometres"), (None, "pixels already")])
def test_cxi_translations_not_in_metres(tmp_path, scale, guess):
    good = load_scan(_cxi(tmp_path, "good.cxi"))
    import h5py

    with h5py.File(_cxi(tmp_path, "good.cxi"), "r") as f:
        trans = f[TRANS][()]
    bad = trans * scale if scale else trans / good.pixel_size_m  # micrometres / pixels
    path = _cxi(tmp_path, **{TRANS: bad})
    _raises(path, "/" + TRANS, "metres", guess)


def test_cxi_energy_string_and_groups(tmp_path):
    _raises(_cxi(tmp_path, "s.cxi", **{f"{SRC}/energy": "8 keV"}), f"/{SRC}/energy",
            "must be a number", "8 keV")
    import h5py

    path = _cxi(tmp_path, "g.cxi", **{f"{DET}/data": None})
    with h5py.File(path, "a") as f:
        f.create_group(f"{DET}/data")
    _raises(path, f"/{DET}/data", "HDF5 group, not a dataset")


# ------------------------------------------------------------- CXI frames
def test_cxi_complex_frames_refused(tmp_path):
    frames = np.ones((N_FRAMES, H, W), np.complex64) * (3 + 4j)
    _raises(_cxi(tmp_path, **{f"{DET}/data": frames}), f"/{DET}/data", "complex")


@pytest.mark.parametrize("dtype", [np.uint32, np.uint16])
def test_cxi_dtype_maximum_marks_bad_pixels(tmp_path, caplog, dtype):
    frames = np.full((N_FRAMES, H, W), 7, dtype)
    top = np.iinfo(dtype).max
    frames[:, 10, :] = top  # a detector gap: one row, in every frame
    frames[2, 3, 4] = top  # a dead pixel in one frame
    path = _cxi(tmp_path, **{f"{DET}/data": frames,
                             f"{DET}/mask": np.pad(np.eye(1, dtype=np.uint32), ((0, H - 1),
                                                                              (0, W - 1)))})
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        scan = load_scan(path)
    # frames 21 x 19 are cropped to rows 1:20: the gap row 10 -> 9, the pixel (3, 4) -> (2, 4)
    mask = scan.bad_pixel_mask
    assert mask is not None and mask[9].all() and mask[2, 4]
    assert mask.sum() == 19 + 1  # the file's mask pixel (0, 0) is cropped away
    assert scan.counts.max() == pytest.approx(7) and scan.counts[:, 9].max() == 0
    lines = [r.getMessage() for r in caplog.records if str(top) in r.getMessage()]
    assert len(lines) == 1 and str(path) in lines[0]
    assert f"{N_FRAMES * 19 + 1} values" in lines[0] and "20 pixels" in lines[0]


# ------------------------------------------------------------------- tike
def _tike(tmp_path: Path, name: str = "t.npz", **changes) -> Path:
    yy, xx = np.indices((16, 16)) - 8
    arrays = {
        "data": np.random.default_rng(4).poisson(50, (1, 9, 16, 16)).astype(np.float32),
        "scan": (np.stack(np.meshgrid(np.arange(3), np.arange(3), indexing="ij"), -1)
                 .reshape(1, 9, 2) * 4.0),
        "probe": ((yy**2 + xx**2) < 20).astype(np.complex64)[None, None],
    }
    arrays.update(changes)
    path = tmp_path / name
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_tike_real_probe_and_string_scan(tmp_path):
    assert load_scan(_tike(tmp_path)).metadata["reader"] == "tike"
    yy, xx = np.indices((16, 16)) - 8
    real = ((yy**2 + xx**2) < 20).astype(np.float32)
    path = _tike(tmp_path, "real.npz", probe=real)
    with pytest.raises(DataError, match=r"real\.npz: 'probe' must be a complex array"):
        load_tike_npz(path)
    path = _tike(tmp_path, "str.npz", scan=np.full((9, 2), "a"))
    with pytest.raises(DataError, match=r"str\.npz: 'scan' must be real numbers.*<U1"):
        load_scan(path)


# --------------------------------------------------------------- dispatch
def test_npz_with_an_hdf5_suffix_is_read_as_npz(tmp_path, caplog):
    scan = Scan(diffraction=np.ones((4, 16, 16), np.float32),
                positions_px=np.array([[8.0, 8], [8, 12], [12, 8], [12, 12]]),
                probe=np.ones((16, 16), np.complex64))
    path = tmp_path / "looks.cxi"
    save_npz(scan, tmp_path / "real.npz").rename(path)
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        loaded = load_scan(path)
    assert loaded.n_patterns == 4
    assert any("zip (NPZ)" in r.getMessage() and str(path) in r.getMessage()
               for r in caplog.records)
    # forced as CXI: the error says what it is
    _raises(path, "zip (NPZ) archive", fmt="cxi")


def test_tike_archive_without_probe_gets_the_tike_message(tmp_path):
    path = _tike(tmp_path, probe=None)
    msg = _raises(path, "missing tike key(s) ['probe']")
    assert "xcoords" not in msg


def test_load_scan_argument_types(tmp_path):
    cxi = _cxi(tmp_path)
    _raises(cxi, "fmt must be one of", "found 3", fmt=3)
    _raises(cxi, "patch_size must be a whole number", "16.7", patch_size=16.7)
    _raises(cxi, "patch_size", patch_size="16")
    assert load_scan(cxi, patch_size=np.int64(16)).patch_size == 16
    with pytest.raises(DataError, match=r"scan\.cxi: patch_size must be a whole number"):
        load_cxi(cxi, patch_size=16.7)  # the reader itself, not only load_scan


# ---------------------------------------------------- CLI convert / inspect
def test_convert_and_inspect_take_patch_size(tmp_path, capsys):
    from ptychopinn.cli.main import main

    cxi = _cxi(tmp_path)
    out = tmp_path / "scan.npz"
    assert main(["convert", str(cxi), str(out), "--patch-size", "16", "-q"]) == 0
    assert load_scan(out).patch_size == 16
    capsys.readouterr()
    assert main(["inspect", str(cxi), "--patch-size", "16", "-q"]) == 0
    assert "of 16 x 16" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["convert", str(cxi), str(tmp_path / "b.npz"), "--patch-size", "16.5"])
    assert "--patch-size" in capsys.readouterr().err


def _scan_of(n: int, source: str) -> Scan:
    return Scan(diffraction=np.ones((4, n, n), np.float32),
                positions_px=np.array([[0.0, 0], [0, 3], [3, 0], [3, 3]]) + n,
                probe=np.ones((n, n), np.complex64), source=source,
                metadata={"reader": "cxi"} if source.endswith(".cxi") else {})


def test_model_n_advice_names_allowed_sizes_and_the_fix():
    from ptychopinn.config.schema import TrainingConfig
    from ptychopinn.training.data import prepare

    cfg = TrainingConfig(model={"N": 64})
    with pytest.raises(ConfigError) as info:
        prepare(_scan_of(100, "petra.cxi"), cfg)
    msg = str(info.value)
    assert "(32, 64, 128, 256)" in msg and "ptychopinn convert petra.cxi" in msg
    assert "--patch-size 64" in msg and "model.N=100" not in msg
    with pytest.raises(ConfigError) as info:
        prepare(_scan_of(100, "scan.npz"), cfg)
    assert "cropped or binned" in str(info.value) and "model.N=100" not in str(info.value)
    with pytest.raises(ConfigError, match=r"--set model\.N=32"):
        prepare(_scan_of(32, "scan.npz"), cfg)


# ----------------------------------------------------------------- inspect
def test_inspect_canvas_for_negative_and_small_positions():
    yy, xx = np.indices((16, 16)) - 8
    probe = ((yy**2 + xx**2) < 20).astype(np.complex64)
    neg = Scan(diffraction=np.ones((4, 16, 16), np.float32),
               positions_px=np.array([[-170.0, -160], [-170, -156], [-166, -160], [-166, -156]]),
               probe=probe)
    d = summarize(neg)
    assert d["object_shape"] == [20, 20] and d["canvas_shift_px"] == [178, 168]
    text = format_summary(d)
    assert "object canvas:     20 x 20 px" in text and "shifted by [+178, +168]" in text
    one = Scan(diffraction=np.ones((1, 16, 16), np.float32), positions_px=np.array([[2.5, 3.0]]),
               probe=probe)
    h, w = summarize(one)["object_shape"]
    assert h >= 16 and w >= 16
    framed = neg.in_object_frame()  # the shifted positions fit in the printed canvas
    assert np.all(framed.positions_px.max(0) + 8 <= d["object_shape"])


# ------------------------------------------------- other NPZ readers
def _truncated(tmp_path: Path, name: str, **arrays) -> Path:
    whole = tmp_path / ("whole_" + name)
    np.savez(whole, **arrays)
    raw = whole.read_bytes()
    path = tmp_path / name
    path.write_bytes(raw[: len(raw) // 2])  # starts with the zip magic "PK"
    return path


def test_simulation_object_and_probe_files(tmp_path, capsys):
    from ptychopinn.cli.main import main
    from ptychopinn.simulation import load_object_file, load_probe_file

    obj = np.ones((40, 40), np.complex64)
    trunc = _truncated(tmp_path, "obj.npz", objectGuess=obj, probeGuess=obj[:16, :16])
    with pytest.raises(DataError, match=r"obj\.npz: .*truncated or corrupt"):
        load_object_file(trunc)
    with pytest.raises(DataError, match=r"obj\.npz: .*truncated or corrupt"):
        load_probe_file(trunc, 16)
    with pytest.raises(DataError, match="is a folder"):
        load_object_file(tmp_path)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, objectGuess=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match=r"pickled\.npz: holds object \(pickled\) arrays"):
        load_object_file(pickled)
    out = str(tmp_path / "sim.npz")
    for args in (["--object", "file", "--object-file", str(trunc)],
                 ["--probe", "file", "--probe-file", str(trunc)]):
        assert main(["simulate", out, "--N", "32", "-q", *args]) == 2
        assert f"error: {trunc}" in capsys.readouterr().err


def test_reconstruction_files_truncated_or_pickled(tmp_path):
    from ptychopinn.metrics.consistency import data_consistency_files
    from ptychopinn.metrics.siemens import siemens_star_files

    trunc = _truncated(tmp_path, "rec.npz", object=np.ones((40, 40), np.complex64),
                       positions_px=np.zeros((4, 2)))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, object=np.array([{"a": 1}], dtype=object), positions_px=np.zeros((4, 2)))
    scan = tmp_path / "unused.npz"  # the reconstruction is read first
    for bad, what in ((trunc, "not an NPZ"), (pickled, "pickled")):
        for fn in (lambda p: data_consistency_files(p, scan), siemens_star_files):
            with pytest.raises(DataError) as info:
                fn(bad)
            assert str(bad) in str(info.value) and what in str(info.value)


# --------------------------------------------------------------- the positions' own key
def test_bad_positions_are_named_by_the_files_own_key(tmp_path):
    """tike's positions are its 'scan', CXI's the translation dataset read: a NaN there is
    reported under that name, not under the NPZ contract's xcoords/ycoords."""
    scan = np.stack(np.meshgrid(np.arange(3), np.arange(3), indexing="ij"), -1) * 4.0
    scan = scan.reshape(1, 9, 2)
    scan[0, 4, 0] = np.nan
    msg = _raises(_tike(tmp_path, "nan.npz", scan=scan), "(scan in the file)")
    assert "xcoords" not in msg
    trans = np.zeros((N_FRAMES, 3))
    trans[:, 0] = np.linspace(-0.5e-6, 0.5e-6, N_FRAMES)
    trans[3, 1] = np.nan
    with pytest.raises(DataError) as info:
        load_scan(_cxi(tmp_path, "nan.cxi", **{TRANS: trans}))
    assert TRANS in str(info.value) and "xcoords" not in str(info.value)


def test_pretrain_scan_of_a_size_models_do_not_take_is_refused_with_the_fix():
    """`pretrain --scan` of 48x48 patterns: the sizes models take and how to crop, not an
    advice to set model.N=48 that validation refuses."""
    from ptychopinn.pretraining import resolve_source

    yy, xx = np.indices((48, 48)) - 24
    scan = Scan(diffraction=np.ones((4, 48, 48), np.float32),
                positions_px=np.array([[30.0, 30], [30, 40], [40, 30], [40, 40]]),
                probe=((yy**2 + xx**2) < 100).astype(np.complex64), source="s48.npz")
    with pytest.raises(ConfigError, match=r"s48\.npz holds 48x48.*one of \(32, 64, 128, 256\)"
                       r".*cropped or binned"):
        resolve_source(scan=scan)
