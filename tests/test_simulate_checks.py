"""Option checks of simulate, convert and config files: a file given without its kind,
sizes that cannot be simulated, an output that is its own input, a binary config."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ptychopinn.config.io import build, read_mapping
from ptychopinn.errors import ConfigError, DataError
from ptychopinn.simulation import SimulationConfig, simulate_scan, simulate_to_file
from ptychopinn.simulation.probes import fit_probe_to_size, fresnel_propagate

SMALL = dict(N=32, n_positions=16)


def _probe_file(path: Path) -> Path:
    p = np.zeros((32, 32), np.complex64)
    p[12:20, 12:20] = 1 + 1j
    np.save(path, p)
    return path


# ------------------------------------------------- a file given without its kind
def test_probe_file_alone_selects_probe_kind_file(tmp_path):
    f = str(_probe_file(tmp_path / "p.npy"))
    cfg = SimulationConfig(**SMALL, probe_file=f)
    assert cfg.probe_kind == "file"
    scan = simulate_scan(cfg)
    assert np.count_nonzero(np.abs(scan.probe[0]) > 0) == 64  # the file's 8 x 8 square


def test_object_file_alone_selects_object_kind_file(tmp_path):
    np.save(tmp_path / "o.npy", np.full((80, 80), 0.7 + 0.1j, np.complex64))
    cfg = SimulationConfig(**SMALL, object_file=str(tmp_path / "o.npy"))
    assert cfg.object_kind == "file"
    assert simulate_scan(cfg).object.shape == (80, 80)


@pytest.mark.parametrize(
    ("kw", "names"),
    [
        (dict(probe_kind="disk", probe_file="p.npy"), ("probe_file", "probe_kind", "'disk'")),
        (dict(object_kind="grf", object_file="o.npy"), ("object_file", "object_kind", "'grf'")),
        (dict(object_kind="lines", object_image="camera"),
         ("object_image", "object_kind", "'lines'")),
        (dict(photons_per_pattern=None, poisson_noise=True),
         ("poisson_noise", "photons_per_pattern")),
    ],
)
def test_a_setting_the_chosen_kind_ignores_is_refused(kw, names):
    with pytest.raises(ValidationError) as err:
        SimulationConfig(**kw)
    for name in names:
        assert name in str(err.value)


def test_photons_null_alone_means_noise_free():
    cfg = SimulationConfig(**SMALL, photons_per_pattern=None)
    assert cfg.poisson_noise is False and not cfg.noisy


def test_cli_probe_file_without_probe_kind_is_read(tmp_path):
    """`simulate --probe-file F` reads F (a file of NaN is refused, not ignored)."""
    from ptychopinn.cli.main import main

    np.save(tmp_path / "nan.npy", np.full((32, 32), np.nan, np.complex64))
    rc = main(["simulate", str(tmp_path / "a.npz"), "--N", "32", "--n-positions", "16",
               "--probe-file", str(tmp_path / "nan.npy"), "-q"])
    assert rc != 0 and not (tmp_path / "a.npz").exists()


# --------------------------------------------------------------- size guards
@pytest.mark.parametrize(
    ("kw", "names"),
    [
        (dict(step_px=float("inf")), ("step_px", "finite")),
        (dict(step_px=float("nan")), ("step_px", "finite")),
        (dict(defocus_fresnel_number=float("inf")), ("defocus_fresnel_number", "finite")),
        (dict(photons_per_pattern=float("nan")), ("photons_per_pattern", "finite")),
        (dict(N=32, n_positions=64, step_px=1e6), ("step_px", "65536")),
        (dict(N=32, n_positions=64, object_margin_px=100_000_000),
         ("object_margin_px", "65536")),
        (dict(N=256, n_positions=10_000_000), ("n_positions", "65536")),
        (dict(N=256, n_positions=2_000_000, object_kind="grf"), ("n_positions", "GiB")),
        (dict(N=32, n_positions=64, defocus_fresnel_number=1e-4),
         ("defocus_fresnel_number", "0.00625")),
        (dict(N=32, n_positions=64, defocus_fresnel_number=1e-9), ("defocus_fresnel_number",)),
    ],
)
def test_sizes_that_cannot_be_simulated_are_refused_up_front(kw, names):
    with pytest.raises(ConfigError) as err:
        build(SimulationConfig, kw, where="options")
    for name in names:
        assert name in str(err.value)


def test_the_size_guards_leave_the_usual_scans_alone():
    for kw in (dict(N=256, n_positions=10_000), dict(N=64, n_positions=200_000),
               dict(N=256, probe_diameter_px=256.0), dict(N=32, defocus_fresnel_number=0.01)):
        SimulationConfig(**kw)


def test_fresnel_grid_is_bounded():
    with pytest.raises(ConfigError, match="defocus_fresnel_number"):
        fresnel_propagate(np.ones((32, 32)), 1e12)


def test_huge_probe_file_is_refused_before_it_is_squared(tmp_path):
    wide = np.ones((2, 30000), np.complex64)
    with pytest.raises(DataError, match=r"wide\.npy.*4096.*\(2, 30000\)"):
        fit_probe_to_size(wide, 32, source=str(tmp_path / "wide.npy"))
    np.save(tmp_path / "wide.npy", wide)
    with pytest.raises(DataError, match="wide.npy"):
        simulate_scan(SimulationConfig(**SMALL, probe_file=str(tmp_path / "wide.npy")))


# ------------------------------------------------ convert onto its own input
def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_convert_refuses_its_own_input_through_a_missing_folder(tmp_path, monkeypatch):
    from ptychopinn.data.convert import convert

    monkeypatch.chdir(tmp_path)
    simulate_to_file(SimulationConfig(**SMALL), "in.npz")
    before = _md5(tmp_path / "in.npz")
    with pytest.raises(DataError, match=r"nodir/\.\./in\.npz: the output must differ from the "
                                        r"input.*in\.npz"):
        convert("in.npz", "nodir/../in.npz")
    assert _md5(tmp_path / "in.npz") == before and not (tmp_path / "nodir").exists()


def test_convert_refuses_a_hard_link_to_its_input(tmp_path):
    from ptychopinn.data.convert import convert

    src = tmp_path / "in.npz"
    simulate_to_file(SimulationConfig(**SMALL), src)
    os.link(src, tmp_path / "hard.npz")
    with pytest.raises(DataError, match="the output must differ from the input"):
        convert(src, tmp_path / "hard.npz")
    convert(src, tmp_path / "copy.npz")  # another file is fine


# ------------------------------------------------------------ config files
def test_binary_config_names_the_file(tmp_path):
    f = tmp_path / "s.npz"
    f.write_bytes(b"PK\x03\x04\x94\xff\xfe binary")
    with pytest.raises(ConfigError, match=r"s\.npz: not a YAML/JSON text file"):
        read_mapping(f)


def test_folder_as_config_says_it_is_a_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"is a folder"):
        read_mapping(tmp_path)
