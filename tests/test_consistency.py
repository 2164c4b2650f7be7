"""Data consistency of a reconstruction (`metrics.consistency`): no truth needed."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from ptychopinn.errors import DataError
from ptychopinn.metrics import data_consistency, data_consistency_files


def _perturbed(obj: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape)
    return (obj * (1 + strength * noise)).astype(np.complex64)


def test_the_truth_explains_poisson_counts_to_the_noise_floor(small_scan) -> None:
    d = data_consistency(small_scan, small_scan.object, small_scan.positions_px)
    assert d["counts_are_integers"]
    assert d["deviance_ratio"] == pytest.approx(1.0, abs=0.05)
    assert d["intensity_scale"] == pytest.approx(1.0, rel=0.01)
    assert 0 < d["amplitude_r_factor"] < 0.05
    assert d["n_patterns"] == small_scan.n_patterns and d["n_valid_pixels"] == 32 * 32


def test_misfit_grows_with_the_error_and_ignores_the_amplitude_units(small_scan) -> None:
    pos = small_scan.positions_px
    ratios = [data_consistency(small_scan, _perturbed(small_scan.object, s), pos)["deviance_ratio"]
              for s in (0.0, 0.05, 0.2)]
    assert ratios[0] < ratios[1] < ratios[2], ratios
    assert ratios[2] > 2.0
    base = data_consistency(small_scan, small_scan.object, pos)
    scaled = data_consistency(small_scan, small_scan.object * 3.0, pos, small_scan.probe * 0.5)
    assert scaled["deviance_ratio"] == pytest.approx(base["deviance_ratio"], rel=1e-5)
    assert scaled["intensity_scale"] == pytest.approx(base["intensity_scale"] / 2.25, rel=1e-5)
    shifted = data_consistency(small_scan, small_scan.object, pos + [0.0, 1.0])
    assert shifted["deviance_ratio"] > 2 * base["deviance_ratio"]


def test_bad_pixels_are_left_out(small_scan) -> None:
    bad = np.zeros((32, 32), bool)
    bad[3, 4] = bad[20, 7] = True
    masked = replace(small_scan, bad_pixel_mask=bad)
    ref = data_consistency(masked, small_scan.object, small_scan.positions_px)
    corrupt = small_scan.diffraction.copy()
    corrupt[:, bad] = 1000.0
    got = data_consistency(replace(masked, diffraction=corrupt), small_scan.object,
                           small_scan.positions_px)
    assert got["deviance_ratio"] == pytest.approx(ref["deviance_ratio"], rel=1e-9)
    assert got["n_valid_pixels"] == 32 * 32 - 2
    unmasked = data_consistency(replace(small_scan, diffraction=corrupt), small_scan.object,
                                small_scan.positions_px)
    assert unmasked["deviance_ratio"] > 10 * ref["deviance_ratio"]


def test_non_counts_are_flagged(small_scan) -> None:
    scaled = replace(small_scan, diffraction=small_scan.diffraction * 0.37)
    d = data_consistency(scaled, small_scan.object, small_scan.positions_px)
    assert not d["counts_are_integers"]
    assert np.isfinite(d["amplitude_r_factor"])


def test_bad_input_is_named(small_scan) -> None:
    pos = small_scan.positions_px
    with pytest.raises(DataError, match=r"data_consistency .*positions_px must be \(144, 2\)"):
        data_consistency(small_scan, small_scan.object, pos[:10])
    with pytest.raises(DataError, match="data_consistency .*must lie inside the object"):
        data_consistency(small_scan, small_scan.object[:40, :40], pos)
    with pytest.raises(DataError, match="probe must be"):
        data_consistency(small_scan, small_scan.object, pos, np.ones((16, 16), np.complex64))


def test_files_score_the_object_and_the_refined_object(small_scan, tmp_path) -> None:
    from ptychopinn.data import save_npz

    scan_path = tmp_path / "scan.npz"
    save_npz(small_scan, scan_path)
    rec = tmp_path / "reconstruction.npz"
    np.savez(rec, object=_perturbed(small_scan.object, 0.2), positions_px=small_scan.positions_px,
             refined_object=small_scan.object.astype(np.complex64), probe=small_scan.probe)
    got = data_consistency_files(rec, scan_path)
    assert set(got) == {"reconstruction", "refined"}
    assert got["refined"]["deviance_ratio"] < got["reconstruction"]["deviance_ratio"]
    assert got["refined"]["deviance_ratio"] == pytest.approx(1.0, abs=0.05)
    bad = tmp_path / "bad.npz"
    np.savez(bad, object=small_scan.object)
    with pytest.raises(DataError, match="bad.npz: missing key 'positions_px'"):
        data_consistency_files(bad, scan_path)
    short = tmp_path / "short.npz"
    np.savez(short, object=small_scan.object, positions_px=small_scan.positions_px[:5])
    with pytest.raises(DataError, match=r"short.npz \(object\) against .*scan.npz"):
        data_consistency_files(short, scan_path)


def test_cli_evaluate_against_the_data(small_scan, tmp_path, capsys) -> None:
    from ptychopinn.cli.main import main
    from ptychopinn.data import save_npz

    save_npz(small_scan, tmp_path / "scan.npz")
    np.savez(tmp_path / "rec.npz", object=small_scan.object.astype(np.complex64),
             positions_px=small_scan.positions_px)
    rc = main(["evaluate", "--reconstruction", str(tmp_path / "rec.npz"),
               "--scan", str(tmp_path / "scan.npz"), "--output-dir", str(tmp_path / "ev")])
    assert rc == 0
    assert "x the photon-noise floor" in capsys.readouterr().out
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["data_consistency"]["reconstruction"]["deviance_ratio"] == pytest.approx(1, abs=0.05)
    rc = main(["evaluate", "--reconstruction", str(tmp_path / "rec.npz")])
    assert rc != 0
    assert "--truth" in capsys.readouterr().err


def test_infer_outputs_carry_the_fit_to_the_data(small_scan, tmp_path) -> None:
    """write_outputs scores the object (with its probe) and the refined object (with the
    refined probe and positions) on evenly spread patterns, also without a truth."""
    from ptychopinn.inference.reconstruct import (
        Reconstruction,
        sampled_data_consistency,
        write_outputs,
    )

    pos = small_scan.positions_px
    rec = Reconstruction(object=_perturbed(small_scan.object, 0.2), positions_px=pos,
                         weight=np.ones(small_scan.object.shape, np.float32), backend="pytorch",
                         probe=small_scan.probe * 3.0,
                         refined_object=small_scan.object.astype(np.complex64),
                         refined_positions_px=pos + [0.0, 1.0])
    full = sampled_data_consistency(rec, small_scan, 10_000)
    assert full["reconstruction"] == data_consistency(small_scan, rec.object, pos, rec.probe)
    # the refined object is scored at the refined positions (here 1 px off: a worse fit)
    assert full["refined"] == data_consistency(small_scan, rec.refined_object, pos + [0.0, 1.0])
    some = sampled_data_consistency(rec, small_scan, 40)
    assert some["reconstruction"]["n_patterns"] == 40
    assert some["reconstruction"]["deviance_ratio"] == pytest.approx(
        full["reconstruction"]["deviance_ratio"], rel=0.15)
    no_truth = replace(small_scan, object=None)
    files = write_outputs(rec, tmp_path / "a", scan=no_truth, figures=False,
                          data_consistency_patterns=40)
    m = json.loads(files["metrics"].read_text())
    assert "reconstruction" not in m and m["data_consistency"]["refined"]["n_patterns"] == 40
    files = write_outputs(rec, tmp_path / "b", scan=no_truth, figures=False)
    assert "metrics" not in files  # off, and no truth: nothing to score


def test_kept_and_recomputed_expected_counts_agree(small_scan, monkeypatch) -> None:
    import ptychopinn.metrics.consistency as mc

    obj = _perturbed(small_scan.object, 0.1)
    kept = data_consistency(small_scan, obj, small_scan.positions_px, chunk=50)
    monkeypatch.setattr(mc, "CACHE_LIMIT_BYTES", 0)
    again = data_consistency(small_scan, obj, small_scan.positions_px, chunk=50)
    assert kept == again


def test_a_poor_fit_is_warned_about_with_what_to_do(small_scan, tmp_path, caplog) -> None:
    """`write_outputs` warns (log and metrics.json) when the final object explains the
    counts far worse than the photon noise: a flat object here; the truth, or a poor
    reconstruction whose refined object fits, gets no warning."""
    from ptychopinn.inference.reconstruct import (
        POOR_FIT_RATIO,
        Reconstruction,
        poor_fit_warning,
        write_outputs,
    )

    pos = small_scan.positions_px
    shape = small_scan.object.shape
    flat = np.full(shape, np.abs(small_scan.object).mean(), np.complex64)
    rec = Reconstruction(object=flat, positions_px=pos, weight=np.ones(shape, np.float32),
                         backend="pytorch", probe=small_scan.probe)
    no_truth = replace(small_scan, object=None)
    with caplog.at_level("WARNING", logger="ptychopinn.inference.reconstruct"):
        files = write_outputs(rec, tmp_path / "flat", scan=no_truth, figures=False,
                              data_consistency_patterns=1000)
    m = json.loads(files["metrics"].read_text())
    ratio = m["data_consistency"]["reconstruction"]["deviance_ratio"]
    assert ratio > POOR_FIT_RATIO
    assert len(m["warnings"]) == 1 and f"{ratio:.1f} times" in m["warnings"][0]
    assert "--refine-epochs 40" in m["warnings"][0]
    assert "model.prior_recipe=featureless" in m["warnings"][0]
    assert [r.getMessage() for r in caplog.records] == m["warnings"]
    # the truth fits to the noise floor: no warning
    good = replace(rec, object=small_scan.object.astype(np.complex64))
    m = json.loads(write_outputs(good, tmp_path / "good", scan=no_truth, figures=False,
                                 data_consistency_patterns=1000)["metrics"].read_text())
    assert "warnings" not in m
    # the refined object is what is judged when there is one
    refined = replace(rec, refined_object=small_scan.object.astype(np.complex64))
    m = json.loads(write_outputs(refined, tmp_path / "refined", scan=no_truth, figures=False,
                                 data_consistency_patterns=1000)["metrics"].read_text())
    assert "warnings" not in m and m["data_consistency"]["reconstruction"]["deviance_ratio"] > 5
    assert "refined object" in poor_fit_warning({"refined": {"deviance_ratio": 7.0}})
    assert poor_fit_warning({"reconstruction": {"deviance_ratio": POOR_FIT_RATIO}}) is None
    assert poor_fit_warning({}) is None
