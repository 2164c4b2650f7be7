"""`ptychopinn evaluate` refuses inputs that cannot belong together and reports every object.

A truth is the scan the reconstruction was made from: with scan positions in both files
they must be the same positions (up to the reconstruction's frame offset), and the truth
object must cover the scanned region; a truth without positions that cannot be registered
is warned about. ``--truth`` scores the refined object too and draws the comparison
figures; ``--scan`` names both files when the patch sizes differ; ``--siemens-star`` on a
non-star image fails with its own error and no numpy warnings.
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
from scipy import ndimage

from ptychopinn.cli.main import main
from ptychopinn.errors import DataError
from ptychopinn.metrics import evaluate_files, evaluate_reconstruction_files
from ptychopinn.metrics.siemens import siemens_star_resolution

SHAPE = (101, 93)  # odd, unequal sides: an axis mix-up shows
N = 24
OFFSET = np.array([4.0, 5.0])  # truth_frame = recon_frame + OFFSET


def smooth_object(shape=SHAPE, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    re = ndimage.gaussian_filter(rng.normal(size=shape), 2.5)
    im = ndimage.gaussian_filter(rng.normal(size=shape), 2.5)
    return (0.6 + 0.3 * np.tanh(re / re.std())) * np.exp(1j * im / im.std())


@pytest.fixture
def scan_positions() -> np.ndarray:
    """A jittered 7 x 7 raster of probe centres [y, x] inside SHAPE."""
    rng = np.random.default_rng(7)
    ys, xs = np.meshgrid(np.arange(26.0, 75.0, 7.0), np.arange(24.0, 67.0, 7.0), indexing="ij")
    pos = np.stack([ys.ravel(), xs.ravel()], 1)
    return pos + rng.uniform(-0.5, 0.5, pos.shape)


def write_truth(path, obj, pos=None, n=N):
    arrays = {"objectGuess": obj.astype(np.complex64), "probeGuess": np.ones((n, n), np.complex64)}
    if pos is not None:
        arrays.update(xcoords=pos[:, 1], ycoords=pos[:, 0])
    np.savez(path, **arrays)
    return path


def write_reconstruction(path, truth_obj, truth_pos, refined=False, noise=0.05):
    """A reconstruction.npz as infer writes it, in a frame OFFSET from the truth's: the
    network's object is the truth plus noise, the refined object (if any) nearly the truth."""
    rng = np.random.default_rng(3)
    oy, ox = OFFSET.astype(int)
    crop = truth_obj[oy:, ox:]

    def noisy(level):
        return (crop + level * (rng.normal(size=crop.shape) + 1j * rng.normal(size=crop.shape)))

    arrays = {"object": noisy(noise).astype(np.complex64), "positions_px": truth_pos - OFFSET,
              "frame_offset_px": OFFSET, "probe": np.ones((1, N, N), np.complex64)}
    if refined:
        arrays["refined_object"] = noisy(noise / 10).astype(np.complex64)
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------- 1. the truth must belong


def test_the_same_scan_is_accepted_within_float_tolerance(tmp_path, scan_positions):
    obj = smooth_object()
    truth = write_truth(tmp_path / "truth.npz", obj, scan_positions + 1e-6)
    rec = write_reconstruction(tmp_path / "rec.npz", obj, scan_positions)
    m = evaluate_files(rec, truth)
    assert m["frame_offset_px"] == pytest.approx(OFFSET.tolist())
    assert m["amp_ssim"] > 0.8 and m["phase_ssim"] > 0.8
    assert "warnings" not in m


def test_a_truth_with_other_positions_is_refused(tmp_path, scan_positions, capsys):
    obj = smooth_object()
    rec = write_reconstruction(tmp_path / "rec.npz", obj, scan_positions)
    jitter = np.random.default_rng(1).uniform(-0.5, 0.5, scan_positions.shape)
    moved = write_truth(tmp_path / "moved.npz", obj, scan_positions + jitter)
    with pytest.raises(DataError, match=r"moved.npz does not belong to .*rec.npz: their scan "
                                        r"positions differ by up to 0\.\d+ px"):
        evaluate_files(rec, moved)
    fewer = write_truth(tmp_path / "fewer.npz", obj, scan_positions[:-3])
    n = len(scan_positions)
    with pytest.raises(DataError, match=rf"the truth's scan has {n - 3} positions .* the "
                                        rf"reconstruction's has {n}"):
        evaluate_files(rec, fewer)
    # through the CLI: exit status 2, one line naming both files, no traceback
    assert main(["evaluate", "--reconstruction", str(rec), "--truth", str(moved)]) == 2
    err = capsys.readouterr().err
    assert "moved.npz does not belong to" in err and "rec.npz" in err
    assert "Traceback" not in err


def test_a_truth_object_not_covering_the_scan_is_refused(tmp_path, scan_positions):
    obj = smooth_object()
    rec = write_reconstruction(tmp_path / "rec.npz", obj, scan_positions)
    small = write_truth(tmp_path / "small.npz", obj[:60, :60])  # no positions: object only
    with pytest.raises(DataError, match=r"small.npz does not cover the region .*rec.npz "
                                        r"scanned.*\(60, 60\)"):
        evaluate_files(rec, small)


def test_an_object_only_truth_still_works_and_a_foreign_one_is_warned(
        tmp_path, scan_positions, caplog):
    obj = smooth_object()
    rec = write_reconstruction(tmp_path / "rec.npz", obj, scan_positions)
    good = evaluate_files(rec, write_truth(tmp_path / "obj_only.npz", obj))
    assert good["amp_ssim"] > 0.8 and "warnings" not in good
    # another object (this one moved by 30 rows): no positions to refuse it, so a warning
    foreign = write_truth(tmp_path / "foreign.npz", np.roll(obj, 30, axis=0))
    with caplog.at_level(logging.WARNING, logger="ptychopinn.metrics.evaluate"):
        m = evaluate_files(rec, foreign)
    assert m["registered"] is False
    assert abs(m["rejected_shift_px"][0]) > 8
    assert len(m["warnings"]) == 1 and "scores are meaningless" in m["warnings"][0]
    assert "foreign.npz has no scan positions" in caplog.text


# ------------------------------------------------- 2 + 3. the refined object, the figures


def test_truth_scores_the_refined_object_and_draws_both_comparisons(
        tmp_path, scan_positions, capsys):
    obj = smooth_object()
    truth = write_truth(tmp_path / "truth.npz", obj, scan_positions)
    rec = write_reconstruction(tmp_path / "rec.npz", obj, scan_positions, refined=True)
    out = tmp_path / "eval"
    assert main(["evaluate", "--reconstruction", str(rec), "--truth", str(truth),
                 "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reconstruction vs truth: amp_ssim=" in printed
    assert "refined vs truth: amp_ssim=" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"reconstruction", "refined"}
    # the refined object (a tenth of the noise) scores better, as scored on its own
    assert m["refined"]["amp_ssim"] > m["reconstruction"]["amp_ssim"] + 0.05
    alone = evaluate_files(rec, truth, object_key="refined_object")
    assert m["refined"]["amp_ssim"] == pytest.approx(alone["amp_ssim"])
    for name in ("comparison.png", "refined_comparison.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a file without a refined object: the object alone, in the same layout
    plain = write_reconstruction(tmp_path / "plain.npz", obj, scan_positions)
    assert list(evaluate_reconstruction_files(plain, truth)) == ["reconstruction"]


def test_without_output_dir_nothing_is_written(tmp_path, scan_positions, capsys, monkeypatch):
    obj = smooth_object()
    truth = write_truth(tmp_path / "truth.npz", obj, scan_positions)
    rec = write_reconstruction(tmp_path / "rec.npz", obj, scan_positions, refined=True)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["evaluate", "--reconstruction", str(rec), "--truth", str(truth)]) == 0
    printed = capsys.readouterr().out
    assert "no files written: --output-dir DIR writes metrics.json and the figures" in printed
    assert "refined vs truth" in printed
    assert list(work.iterdir()) == []


# ----------------------------------------------------- 4. --siemens-star on a non-star


@pytest.mark.parametrize("kind", ["smooth", "ramp"])
def test_siemens_star_on_a_non_star_fails_without_numpy_warnings(kind):
    img = smooth_object((67, 71)) if kind == "smooth" else (
        np.add.outer(np.arange(50.0), np.arange(50.0)))  # real: amplitude-like
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would surface as an error here
        with pytest.raises(DataError, match="no spoke modulation.*Siemens star"):
            siemens_star_resolution(img)


def test_siemens_star_count_below_six_is_refused():
    with pytest.raises(DataError, match="n_spokes must be >= 6"):
        siemens_star_resolution(smooth_object((40, 40)), n_spokes=4)


# ---------------------------------------------- 5. --scan of another patch size


def test_scan_of_another_patch_size_names_both_files(tmp_path, scan_positions, capsys):
    rec = write_reconstruction(tmp_path / "rec.npz", smooth_object(), scan_positions)
    n_scan = 32
    np.savez(tmp_path / "star.npz",
             diffraction=np.ones((len(scan_positions), n_scan, n_scan), np.float32),
             xcoords=scan_positions[:, 1], ycoords=scan_positions[:, 0],
             probeGuess=np.ones((n_scan, n_scan), np.complex64))
    assert main(["evaluate", "--reconstruction", str(rec), "--scan",
                 str(tmp_path / "star.npz")]) == 2
    err = capsys.readouterr().err
    assert "rec.npz and" in err and "star.npz do not belong together" in err
    assert "N=24" in err and "N=32" in err
    assert "Traceback" not in err


def test_an_output_dir_that_is_a_file_is_refused_before_any_work(tmp_path, scan_positions,
                                                                 capsys):
    obj = smooth_object()
    truth = write_truth(tmp_path / "truth.npz", obj, scan_positions)
    rec = write_reconstruction(tmp_path / "rec.npz", obj, scan_positions)
    (tmp_path / "taken").write_text("")
    assert main(["evaluate", "--reconstruction", str(rec), "--truth", str(truth),
                 "--output-dir", str(tmp_path / "taken")]) == 2
    captured = capsys.readouterr()
    assert "--output-dir" in captured.err and "is an existing file" in captured.err
    assert "vs truth" not in captured.out
