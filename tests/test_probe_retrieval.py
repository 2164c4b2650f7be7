"""Probe retrieval before training (`refinement.retrieve_probe`, `probe_refine_epochs`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptychopinn.config import TrainingConfig
from ptychopinn.errors import ConfigError
from ptychopinn.refinement import retrieve_probe


def _probe_error(probe: np.ndarray, truth: np.ndarray) -> float:
    """Relative error after the best complex scale (probe and object share one)."""
    p, t = probe.reshape(-1), truth.reshape(-1)
    c = np.vdot(p, t) / np.vdot(p, p)
    return float(np.linalg.norm(c * p - t) / np.linalg.norm(t))


def _rough_guess(truth: np.ndarray) -> np.ndarray:
    """A blurred, phase-less version of the true probe (a poor model of the focus)."""
    amp = gaussian_filter(np.abs(truth[0]), 2.0)
    return (amp * np.exp(0j)).astype(np.complex64)[None]


def test_retrieval_moves_a_rough_probe_towards_the_truth(small_scan) -> None:
    guess = _rough_guess(small_scan.probe)
    scan = small_scan.replace(probe=guess)
    out = retrieve_probe(scan, 12)
    assert out.probe.shape == small_scan.probe.shape and out.probe.dtype == np.complex64
    before = _probe_error(guess, small_scan.probe)
    after = _probe_error(out.probe, small_scan.probe)
    assert after < 0.6 * before, (before, after)
    assert np.array_equal(out.diffraction, scan.diffraction)  # only the probe changes


def test_retrieval_rejects_too_few_epochs(small_scan) -> None:
    with pytest.raises(ConfigError, match="probe_refine_epochs"):
        retrieve_probe(small_scan, 2)
    with pytest.raises(ValueError, match="probe_refine_epochs"):
        TrainingConfig(probe_refine_epochs=1)
    assert TrainingConfig(probe_refine_epochs=0).probe_refine_epochs == 0


def test_training_uses_the_retrieved_probe(tmp_path, small_scan) -> None:
    from ptychopinn import api
    from ptychopinn.bundle.pytorch import load_pinn

    guess = _rough_guess(small_scan.probe)
    scan = small_scan.replace(probe=guess)
    cfg = TrainingConfig(
        output_dir=str(tmp_path / "run"), model={"N": 32, "n_filters_scale": 0.25}, nepochs=1,
        probe_refine_epochs=8, save_reconstruction=False,
        execution={"accelerator": "cpu", "logger": "none", "progress_bar": False},
    )
    api.train(cfg, scan)
    model_probe = load_pinn(tmp_path / "run").model.physics.probe.numpy()
    assert _probe_error(model_probe, small_scan.probe) < 0.6 * _probe_error(guess, small_scan.probe)


def _same_up_to_scale(a: np.ndarray, b: np.ndarray) -> bool:
    """The model keeps its probe normalised: the same probe up to a real factor."""
    return abs(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b)) > 1 - 1e-6


def test_resume_continues_with_the_probe_retrieved_before(tmp_path, small_scan, monkeypatch,
                                                           caplog) -> None:
    """The retrieval is kept in the run folder (it alone does not make the folder a
    training), ``resume`` uses it instead of retrieving again, ``overwrite`` retrieves
    anew, and a damaged file is said and retrieved again."""
    import logging

    import ptychopinn.refinement as refinement
    from ptychopinn import api
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.training.retrieved_probe import retrieved_probe_path

    calls = []

    def counted(*args, **kw):
        calls.append(args[1])
        return retrieve_probe(*args, **kw)

    monkeypatch.setattr(refinement, "retrieve_probe", counted)
    scan = small_scan.replace(probe=_rough_guess(small_scan.probe))
    run = tmp_path / "run"

    def cfg(nepochs: int) -> TrainingConfig:
        return TrainingConfig(
            output_dir=str(run), model={"N": 32, "n_filters_scale": 0.25}, nepochs=nepochs,
            probe_refine_epochs=4, save_reconstruction=False, max_time_minutes=None,
            execution={"accelerator": "cpu", "logger": "none", "progress_bar": False},
        )

    kept = retrieved_probe_path(run)
    api.train(cfg(1), scan)
    assert calls == [4] and kept.is_file()
    with np.load(kept, allow_pickle=False) as f:
        retrieved = f["probe"]
    assert _probe_error(retrieved, scan.probe) > 0  # a new probe, not the guess
    assert _same_up_to_scale(load_pinn(run).model.physics.probe.numpy(), retrieved)

    with caplog.at_level(logging.INFO, logger="ptychopinn.training.retrieved_probe"):
        api.train(cfg(2), scan, resume=True)
    assert calls == [4], "resume retrieved the probe again"
    assert "not retrieved again" in caplog.text
    assert _same_up_to_scale(load_pinn(run).model.physics.probe.numpy(), retrieved)

    kept.write_bytes(b"not an npz")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptychopinn.training.retrieved_probe"):
        api.train(cfg(3), scan, resume=True)
    assert calls == [4, 4] and "cannot be read" in caplog.text and str(kept) in caplog.text

    api.train(cfg(1), scan, overwrite=True)
    assert calls == [4, 4, 4] and kept.is_file()


def test_cli_flag_sets_probe_refine_epochs() -> None:
    from ptychopinn.cli.commands import train_config_from_args
    from ptychopinn.cli.main import build_parser

    args = build_parser().parse_args(
        ["train", "--data", "s.npz", "--output-dir", "o", "--probe-refine-epochs", "15"]
    )
    assert train_config_from_args(args).probe_refine_epochs == 15


def _perturbed(scan, amplitude_px: float = 2.0, seed: int = 1):
    rng = np.random.default_rng(seed)
    err = rng.uniform(-amplitude_px, amplitude_px, size=scan.positions_px.shape)
    return scan.replace(positions_px=scan.positions_px + err)


def _rms_error(positions: np.ndarray, truth: np.ndarray) -> float:
    """RMS position error after removing the common shift (the frame is arbitrary)."""
    e = positions - truth
    e = e - e.mean(axis=0)
    return float(np.sqrt((e ** 2).sum(axis=1).mean()))


def test_position_correction_moves_wrong_positions_towards_the_truth(small_scan,
                                                                    caplog) -> None:
    import logging

    from ptychopinn.refinement import correct_positions

    bad = _perturbed(small_scan)
    before = _rms_error(bad.positions_px, small_scan.positions_px)
    with caplog.at_level(logging.INFO, logger="ptychopinn.refinement.probe_retrieval"):
        fixed = correct_positions(bad, 12)
    # inference's correction is logged as what it is, not as training's probe retrieval
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "position correction (position_refine_epochs" in said and "probe retrieval" not in said
    with pytest.raises(ConfigError, match="position_refine_epochs: expected an integer >= 3"):
        correct_positions(bad, 2)
    after = _rms_error(fixed.positions_px, small_scan.positions_px)
    assert after < 0.4 * before, (before, after)
    assert np.array_equal(fixed.probe, bad.probe)  # only the positions change
    assert np.array_equal(fixed.diffraction, bad.diffraction)
    # with probe retrieval, positions=True returns both
    both = retrieve_probe(bad, 12, positions=True)
    assert _rms_error(both.positions_px, small_scan.positions_px) < 0.4 * before
    assert not np.array_equal(both.probe, bad.probe)
    # without it, the positions stay as given
    assert np.array_equal(retrieve_probe(bad, 3).positions_px, bad.positions_px)


def test_inference_at_corrected_positions_is_better(tmp_path, small_scan) -> None:
    """`InferenceConfig.position_refine_epochs`: an untrained residual network follows
    its physics prior, which wrong positions blur; corrected first, the object
    scores higher against the truth."""
    import torch

    from ptychopinn import api
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.metrics import evaluate
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe

    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 8})
    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    save_pinn(tmp_path / "model", PtychoPINN(cfg.model, probe), cfg)
    bad = _perturbed(small_scan)

    def amp_ssim(epochs: int) -> float:
        icfg = InferenceConfig(position_refine_epochs=epochs, execution={"num_threads": 1})
        rec = api.reconstruct(tmp_path / "model", bad, icfg)
        m = evaluate(rec.object, small_scan.object, positions_px=rec.positions_px,
                     patch_size=small_scan.patch_size)
        return m["amp_ssim"]

    given, corrected = amp_ssim(0), amp_ssim(12)
    assert corrected > given + 0.05, (given, corrected)


def test_a_miscalibrated_step_is_corrected_only_when_the_linear_part_is_kept(small_scan) -> None:
    """Positions given 3% too large about the centre (a wrong step size): by default
    the corrections lose their global linear part and the scale error stays;
    ``keep_linear`` (``--position-keep-linear``) corrects it."""
    from ptychopinn.refinement import correct_positions

    centre = small_scan.positions_px.mean(axis=0)
    bad = small_scan.replace(positions_px=centre + 1.03 * (small_scan.positions_px - centre))
    before = _rms_error(bad.positions_px, small_scan.positions_px)
    assert before > 0.5
    default = _rms_error(correct_positions(bad, 20).positions_px, small_scan.positions_px)
    kept = _rms_error(correct_positions(bad, 20, keep_linear=True).positions_px,
                      small_scan.positions_px)
    assert default > 0.9 * before, (before, default)  # 0.59 -> 0.60 px
    assert kept < 0.6 * before, (before, kept)  # 0.59 -> 0.31 px


def test_position_options_are_validated_and_parsed() -> None:
    from ptychopinn.cli.commands import train_config_from_args
    from ptychopinn.cli.main import build_parser
    from ptychopinn.config import InferenceConfig

    with pytest.raises(ValueError, match="position_refine_epochs"):
        InferenceConfig(position_refine_epochs=2)
    with pytest.raises(ValueError, match="probe_refine_positions needs probe_refine_epochs"):
        TrainingConfig(probe_refine_positions=True)
    # keep_linear without any position correction would silently do nothing
    with pytest.raises(ValueError, match="position_keep_linear applies to position corr"):
        TrainingConfig(position_keep_linear=True, probe_refine_epochs=10)
    with pytest.raises(ValueError, match="position_keep_linear applies to position corr"):
        InferenceConfig(position_keep_linear=True)
    assert InferenceConfig(position_keep_linear=True, refine_positions=True).position_keep_linear
    with pytest.raises(ValueError, match=r"must be 0 \(off\) or >= 3 .*found 1"):
        TrainingConfig(probe_refine_epochs=1)
    args = build_parser().parse_args(
        ["train", "--data", "s.npz", "--output-dir", "o", "--probe-refine-epochs", "15",
         "--probe-refine-positions"]
    )
    cfg = train_config_from_args(args)
    assert cfg.probe_refine_epochs == 15 and cfg.probe_refine_positions
    assert not cfg.position_keep_linear
    args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz",
                                      "--position-refine-epochs", "20"])
    assert args.position_refine_epochs == 20
    from ptychopinn.cli.commands import infer_config_from_args

    assert not infer_config_from_args(args).position_keep_linear
    args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz",
                                      "--position-refine-epochs", "20", "--position-keep-linear"])
    assert infer_config_from_args(args).position_keep_linear
    args = build_parser().parse_args(
        ["train", "--data", "s.npz", "--output-dir", "o", "--probe-refine-epochs", "15",
         "--probe-refine-positions", "--position-keep-linear"])
    assert train_config_from_args(args).position_keep_linear


def test_training_at_corrected_positions(tmp_path, small_scan) -> None:
    """probe_refine_positions: the model trains at the corrected positions (its training
    reconstruction is stitched there)."""
    from ptychopinn import api

    bad = _perturbed(small_scan)
    cfg = TrainingConfig(
        output_dir=str(tmp_path / "run"), model={"N": 32, "n_filters_scale": 0.25}, nepochs=1,
        probe_refine_epochs=12, probe_refine_positions=True,
        execution={"accelerator": "cpu", "logger": "none", "progress_bar": False},
    )
    res = api.train(cfg, bad)
    rec = np.load(tmp_path / "run" / "reconstruction" / "reconstruction.npz")
    frame = rec["positions_px"] - rec["positions_px"].mean(axis=0)
    assert _rms_error(frame, small_scan.positions_px - small_scan.positions_px.mean(axis=0)) < (
        0.4 * _rms_error(bad.positions_px, small_scan.positions_px))
    assert res.bundle_path is not None


def test_a_run_trained_at_corrected_positions_is_recognised_by_evaluate(tmp_path,
                                                                        small_scan) -> None:
    """Training at corrected positions (--probe-refine-positions) writes a reconstruction
    whose positions_px are the corrected ones; it keeps the scan's measured positions
    (measured_positions_px), so `evaluate --scan` recognises the measured scan."""
    from ptychopinn import api
    from ptychopinn.data import save_npz
    from ptychopinn.metrics import data_consistency_files

    scan = _perturbed(small_scan, amplitude_px=1.5)
    cfg = TrainingConfig(
        output_dir=str(tmp_path / "run"), model={"N": 32, "n_filters_scale": 0.25}, nepochs=1,
        probe_refine_epochs=4, probe_refine_positions=True, max_time_minutes=None,
        execution={"accelerator": "cpu", "logger": "none", "progress_bar": False},
    )
    api.train(cfg, scan)
    rec_path = tmp_path / "run" / "reconstruction" / "reconstruction.npz"
    with np.load(rec_path) as f:
        measured, corrected, off = f["measured_positions_px"], f["positions_px"], f["frame_offset_px"]
    np.testing.assert_allclose(measured + off, scan.positions_px)
    assert np.abs(corrected - measured).max() > 0.05  # the retrieval moved them
    scan_path = save_npz(scan, tmp_path / "scan.npz")
    assert np.isfinite(data_consistency_files(rec_path, scan_path)["reconstruction"]
                       ["deviance_ratio"])
