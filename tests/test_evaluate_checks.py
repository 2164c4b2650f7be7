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
from ptychopinn.metrics import (
    data_consistency,
    data_consistency_files,
    evaluate_files,
    evaluate_reconstruction_files,
)
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


# ------------------------------------ 6. inputs refused or warned about (the audit's list)


def canvas_reconstruction(path, truth_obj, truth_pos, n=N):
    """An infer canvas without positions_px or frame_offset_px: the truth's object in a
    frame OFFSET from the truth's, zero outside the region the probe lit."""
    oy, ox = OFFSET.astype(int)
    obj = truth_obj[oy:, ox:].copy()
    lit = np.zeros(obj.shape, bool)
    for y, x in np.round(truth_pos - OFFSET).astype(int):
        lit[y - n // 2: y + n // 2, x - n // 2: x + n // 2] = True
    obj[~lit] = 0
    np.savez(path, object=obj.astype(np.complex64))
    return path


def test_registration_ignores_the_unlit_canvas_and_is_warned_about(
        tmp_path, scan_positions, caplog):
    # a weak object (contrast 0.1 on a mean of 0.8): centred on its mean over the whole
    # canvas, the unlit zeros became a step at the lit region's edge that outweighed it
    s = smooth_object()
    obj = (0.8 + 0.1 * (np.abs(s) - 0.6) / 0.3) * np.exp(0.1j * np.angle(s))
    truth = write_truth(tmp_path / "truth.npz", obj, scan_positions)
    rec = canvas_reconstruction(tmp_path / "canvas.npz", obj, scan_positions)
    with caplog.at_level(logging.WARNING, logger="ptychopinn.metrics.evaluate_files"):
        m = evaluate_files(rec, truth)
    assert m["frame_offset_source"] == "registration"
    assert m["frame_offset_px"] == pytest.approx(OFFSET.tolist())
    assert m["amp_ssim"] > 0.95 and m["phase_ssim"] > 0.95
    assert len(m["warnings"]) == 1
    assert "canvas.npz (object): the frame offset [4.0, 5.0] px" in m["warnings"][0]
    assert "registering the two objects alone" in caplog.text


def _with(path, src, **changes):
    arrays = dict(np.load(src))
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("bad, match", [
    ("nan_positions", r"bad\.npz: 'positions_px' must hold finite positions; found NaN/Inf at "
                      r"1 of its 49 positions \(the first: position 3\)"),
    ("real_object", r"bad\.npz: 'object' must be a complex object .* found real dtype float32"),
    ("zero_object", r"bad\.npz: 'object' is all zero: the object is empty"),
    ("small_object", r"bad\.npz: 'object' \(20, 20\) does not cover the region its scan lit: "
                     r"the probe centres expanded by N/4 = 6 px span rows"),
    ("small_refined", r"bad\.npz: 'refined_object' \(30, 30\) does not cover"),
])
def test_a_bad_reconstruction_file_is_named(tmp_path, scan_positions, bad, match):
    obj = smooth_object()
    truth = write_truth(tmp_path / "truth.npz", obj, scan_positions)
    rec = write_reconstruction(tmp_path / "rec.npz", obj, scan_positions, refined=True)
    d = np.load(rec)
    pos = d["positions_px"].copy()
    pos[3, 0] = np.nan
    change = {"nan_positions": {"positions_px": pos},
              "real_object": {"object": np.abs(d["object"])},
              "zero_object": {"object": np.zeros_like(d["object"])},
              "small_object": {"object": d["object"][:20, :20]},
              "small_refined": {"refined_object": d["refined_object"][:30, :30]}}[bad]
    path = _with(tmp_path / "bad.npz", rec, **change)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scikit-image warning leaks first
        with pytest.raises(DataError, match=match):
            evaluate_reconstruction_files(path, truth)


@pytest.mark.parametrize("bad, match", [
    ("short_x", r"truth\.npz: 'xcoords' and 'ycoords' must hold one value per scan position, "
                r"as many of each; found 10 xcoords and 49 ycoords"),
    ("nan_x", r"truth\.npz: 'xcoords' must hold finite scan positions; found NaN/Inf at 1 of "
              r"its 49 positions"),
    ("zero_truth", r"truth\.npz: 'objectGuess' is all zero"),
])
def test_a_bad_truth_file_is_named(tmp_path, scan_positions, bad, match):
    obj = smooth_object()
    rec = write_reconstruction(tmp_path / "rec.npz", obj, scan_positions)
    x = scan_positions[:, 1].copy()
    x[5] = np.nan
    change = {"short_x": {"xcoords": scan_positions[:10, 1]}, "nan_x": {"xcoords": x},
              "zero_truth": {"objectGuess": np.zeros(SHAPE, np.complex64)}}[bad]
    truth = _with(tmp_path / "truth.npz", write_truth(tmp_path / "t0.npz", obj, scan_positions),
                  **change)
    with pytest.raises(DataError, match=match):
        evaluate_files(rec, truth)


def test_bz2_files_are_read_as_truth_and_reconstruction(tmp_path, scan_positions, capsys):
    import bz2

    obj = smooth_object()
    files = [write_truth(tmp_path / "truth.npz", obj, scan_positions),
             write_reconstruction(tmp_path / "rec.npz", obj, scan_positions)]
    for f in files:
        f.with_suffix(".npz.bz2").write_bytes(bz2.compress(f.read_bytes()))
    truth, rec = (f.with_suffix(".npz.bz2") for f in files)
    assert evaluate_files(rec, truth) == evaluate_files(*files[::-1])
    assert main(["evaluate", "--reconstruction", str(rec), "--truth", str(truth)]) == 0
    assert "reconstruction vs truth: amp_ssim=" in capsys.readouterr().out


# ---------------------------------------------------------------- 7. --scan's inputs


def _scan_and_reconstruction(tmp_path, small_scan, **arrays):
    from ptychopinn.data import save_npz

    scan_path = save_npz(small_scan, tmp_path / "scan.npz")
    rec = {"object": small_scan.object.astype(np.complex64),
           "positions_px": small_scan.positions_px, "probe": small_scan.probe}
    rec.update(arrays)
    np.savez(tmp_path / "rec.npz", **rec)
    return tmp_path / "rec.npz", scan_path


@pytest.mark.parametrize("bad, match", [
    ("real", r"rec\.npz: 'object' must be a complex object .* found real dtype"),
    ("3d", r"rec\.npz: 'object' must be a 2-D complex object \(H, W\); found shape \(1, "),
    ("zero", r"rec\.npz: 'object' is all zero: the object is empty"),
    ("zero_refined", r"rec\.npz: 'refined_object' is all zero"),
])
def test_scan_refuses_an_object_that_is_not_one(tmp_path, small_scan, capsys, bad, match):
    obj = small_scan.object.astype(np.complex64)
    change = {"real": {"object": np.abs(obj)}, "3d": {"object": obj[None]},
              "zero": {"object": np.zeros_like(obj)},
              "zero_refined": {"refined_object": np.zeros_like(obj)}}[bad]
    rec, scan = _scan_and_reconstruction(tmp_path, small_scan, **change)
    with pytest.raises(DataError, match=match):
        data_consistency_files(rec, scan)
    assert main(["evaluate", "--reconstruction", str(rec), "--scan", str(scan)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "nan" not in captured.out


def test_data_consistency_refuses_an_object_that_predicts_no_counts(small_scan):
    obj = np.zeros(small_scan.object.shape, np.complex64)
    obj[0, 0] = 1  # not lit by any position
    with pytest.raises(DataError, match=r"data_consistency .*: the object predicts no counts"):
        data_consistency(small_scan, obj, small_scan.positions_px)


def test_scan_refuses_another_scan_of_the_same_size(tmp_path, small_scan, capsys):
    from dataclasses import replace

    from ptychopinn.data import save_npz

    off = np.array([-3.0, -2.0])  # the scan's frame = the reconstruction's + off
    padded = np.pad(small_scan.object, ((3, 0), (2, 0))).astype(np.complex64)
    rec, scan = _scan_and_reconstruction(tmp_path, small_scan, object=padded,
                                         positions_px=small_scan.positions_px - off,
                                         frame_offset_px=off)
    assert data_consistency_files(rec, scan)["reconstruction"]["deviance_ratio"] < 1.1
    jitter = np.random.default_rng(5).uniform(-1, 1, small_scan.positions_px.shape)
    other = tmp_path / "other.npz"
    save_npz(replace(small_scan, positions_px=small_scan.positions_px + jitter), other)
    with pytest.raises(DataError, match=r"other\.npz does not belong to .*rec\.npz: their scan "
                                        r"positions differ by up to [\d.]+ px .* in the scan and "
                                        r".* in the reconstruction \(positions_px plus the frame "
                                        r"offset \[-3\.0, -2\.0\] from frame_offset_px\)"):
        data_consistency_files(rec, other)
    assert main(["evaluate", "--reconstruction", str(rec), "--scan", str(other)]) == 2
    assert "Give --scan the scan the reconstruction was made from" in capsys.readouterr().err


def test_a_position_corrected_reconstruction_is_recognised_by_its_measured_positions(
        tmp_path, small_scan):
    """infer's position correction moves positions_px off the scan's; the reconstruction
    keeps the scan's measured positions (measured_positions_px), by which evaluate --scan
    and --truth recognise their scan (both refused the file before)."""
    import torch

    from ptychopinn import api
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.config import InferenceConfig, TrainingConfig
    from ptychopinn.data import save_npz
    from ptychopinn.inference.reconstruct import write_outputs
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe

    rng = np.random.default_rng(3)
    scan = small_scan.replace(positions_px=small_scan.positions_px
                              + rng.uniform(-1.5, 1.5, small_scan.positions_px.shape))
    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25})
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), cfg.model.probe_scale)
    torch.manual_seed(0)
    save_pinn(tmp_path / "run", PtychoPINN(cfg.model, probe).eval(), cfg)
    recon = api.reconstruct(tmp_path / "run", scan,
                            InferenceConfig(position_refine_epochs=4, figures=False))
    moved = np.abs(recon.positions_px - recon.measured_positions_px).max()
    assert moved > 0.05  # the correction moved them beyond the same-scan tolerance
    np.testing.assert_allclose(recon.measured_positions_px + recon.frame_offset_px,
                               scan.positions_px)
    write_outputs(recon, tmp_path / "out", figures=False)
    scan_path = save_npz(scan, tmp_path / "scan.npz")
    rec_path = tmp_path / "out" / "reconstruction.npz"
    assert np.isfinite(data_consistency_files(rec_path, scan_path)["reconstruction"]
                       ["deviance_ratio"])
    assert np.isfinite(evaluate_files(rec_path, scan_path)["amp_ssim"])
    # without the measured positions the file is taken for another scan's
    with np.load(rec_path) as f:
        arrays = {k: f[k] for k in f.files if k != "measured_positions_px"}
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(DataError, match="does not belong"):
        data_consistency_files(tmp_path / "old.npz", scan_path)


# ------------------------------------------------------------- 8. --siemens-star's words


def test_siemens_star_errors_speak_to_the_cli_and_name_an_empty_object(tmp_path):
    from ptychopinn.metrics.siemens import siemens_star_files

    with pytest.raises(DataError, match="no spoke modulation") as err:
        siemens_star_resolution(smooth_object((67, 71)))
    assert "scanned region" in str(err.value) and "max_radius inside it" not in str(err.value)
    p = tmp_path / "zero.npz"
    np.savez(p, object=np.zeros((60, 60), np.complex64))
    with pytest.raises(DataError, match=r"zero\.npz: 'object' is all zero: the object is empty"):
        siemens_star_files(p)
    with pytest.raises(DataError, match="the image is all zero"):
        siemens_star_resolution(np.zeros((60, 60)))


def test_scan_warns_of_a_poor_fit_as_infer_does(tmp_path, small_scan, caplog):
    """`evaluate --scan` says, as infer does, when the object explains the counts poorly
    (a flat object here); the scores are still written."""
    flat = np.ones_like(small_scan.object, dtype=np.complex64)
    rec, scan = _scan_and_reconstruction(tmp_path, small_scan, object=flat)
    with caplog.at_level(logging.WARNING, logger="ptychopinn"):
        assert main(["evaluate", "--reconstruction", str(rec), "--scan", str(scan)]) == 0
    assert "explains the measured counts poorly" in caplog.text and str(rec) in caplog.text
    caplog.clear()
    good, scan = _scan_and_reconstruction(tmp_path, small_scan)
    with caplog.at_level(logging.WARNING, logger="ptychopinn"):
        assert main(["evaluate", "--reconstruction", str(good), "--scan", str(scan)]) == 0
    assert "poorly" not in caplog.text
