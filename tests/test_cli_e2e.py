"""End to end through the real CLI, each step in a fresh process:
simulate -> train -> (new process) load bundle -> infer -> files and quality."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from ptychopinn.physics.prior_frc import EXTRA_PASS_AGREEMENT

# Quality floor on amplitude and phase SSIM: an untrained network (its random
# corrections of the physics prior, averaged by the stitching) stays below it in
# amplitude (~0.34 / 0.68); trained ~0.64 / 0.82.
FLOOR = 0.5


def _cli(*args, cwd, check=True):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "ptychopinn.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ptychopinn {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    _cli("simulate", "scan.npz", "--N", "32", "--n-positions", "196", "--seed", "5", "-q", cwd=d)
    proc = _cli(
        "train",
        "--data",
        "scan.npz",
        "--output-dir",
        "run",
        "--accelerator",
        "cpu",
        "--max-minutes",
        "5",
        "--epochs",
        "20",
        "--logger",
        "csv",
        "--no-progress",
        "--set",
        "model.N=32",
        "--set",
        "save_reconstruction=false",
        cwd=d,
    )
    (d / "train_output.txt").write_text(proc.stdout + proc.stderr)
    return d


def test_train_outputs(trained):
    run = trained / "run"
    assert (run / "model.ptychopinn.safetensors").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file() and (run / "history.json").is_file()
    # no third-party advertising in what the user reads
    assert "litlogger" not in (trained / "train_output.txt").read_text().lower()



def test_train_prints_lightnings_lines_once(trained):
    """Lightning gives its loggers console handlers of their own on import; the CLI routes
    them through its own, so each line (the device) is printed once, and --quiet keeps
    them out."""
    out = (trained / "train_output.txt").read_text()
    assert out.count("GPU available:") == 1, out
    d = trained / "quiet"
    d.mkdir()
    proc = _cli("train", "--data", str(trained / "scan.npz"), "--output-dir", "run",
                "--accelerator", "cpu", "--epochs", "1", "--no-progress", "--logger", "none",
                "--set", "model.N=32", "--set", "model.n_filters_scale=0.25",
                "--set", "save_reconstruction=false", "-q", cwd=d)
    assert "GPU available:" not in proc.stdout + proc.stderr

def test_infer_in_fresh_process_beats_untrained(trained):
    proc = _cli("infer", "--model", "run", "--data", "scan.npz", "--output-dir", "out", cwd=trained)
    out = trained / "out"
    for name in (
        "reconstruction.npz",
        "reconstruction_amplitude.png",
        "reconstruction_phase.png",
        "metrics.json",
    ):
        assert (out / name).is_file(), name
    rec = np.load(out / "reconstruction.npz")
    truth = np.load(trained / "scan.npz")
    assert rec["object"].dtype == np.complex64
    assert rec["object"].shape == truth["objectGuess"].shape
    assert rec["amplitude"].dtype == np.float32 and rec["phase"].dtype == np.float32
    assert rec["positions_px"].shape == (196, 2)
    metrics = json.loads((out / "metrics.json").read_text())["reconstruction"]
    # an untrained network's amplitude stays below FLOOR (see test_untrained_floor)
    assert metrics["amp_ssim"] > FLOOR and metrics["phase_ssim"] > FLOOR, metrics
    assert "reconstruction vs truth" in proc.stdout
    # the network's precision is said and kept (execution.precision 'auto')
    from ptychopinn.inference.precision import cpu_has_amx_bf16

    dtype = "bfloat16" if cpu_has_amx_bf16() else "float32"
    passes = int(rec["prior_passes"])  # the model's 4, 6 where the prior's halves agree
    assert passes in (4, 6)
    agree = float(rec["prior_agreement"])  # what decided between 4 and 6
    assert 0.0 <= agree <= 1.0
    assert (passes == 6) is (agree >= EXTRA_PASS_AGREEMENT)
    # phase momentum 0.7 (the default) ran with the extra passes, where the halves agree
    momentum = float(rec["prior_phase_momentum"])
    assert momentum == (0.7 if passes == 6 else 0.0)
    said = " with phase momentum 0.7" if momentum else ""
    # the phase synchronisation: the default, global, said and recorded
    assert str(rec["phase_sync"]) == "global"
    # the groups per forward pass: 'auto' resolved (64 in bfloat16; for a float32 network
    # on a CPU by N), said and recorded
    from ptychopinn.inference.precision import network_batch_size

    n = int(truth["diffraction"].shape[-1])
    net = None if dtype == "float32" else torch.bfloat16
    groups = network_batch_size("auto", n, net, "cpu")
    assert int(rec["network_batch_size"]) == groups
    assert (f"(pytorch, network in {dtype} on {groups} groups at a time, {passes} prior "
            f"passes{said}, half-scan agreement {agree:.2f}, phase sync global)") in proc.stdout
    assert str(rec["network_dtype"]) == dtype
    assert float(rec["prior_step_scale"]) == 1.0  # plain PIE unless asked (and not said)
    # the fit to the measured counts, written and printed by default (no truth needed)
    fit = json.loads((out / "metrics.json").read_text())["data_consistency"]["reconstruction"]
    assert fit["n_patterns"] == 196 and fit["counts_are_integers"], fit
    assert "reconstruction vs the data (196 patterns)" in proc.stdout


def test_infer_prior_step_scale_is_applied_said_and_recorded(trained):
    """``infer --prior-step-scale`` over-relaxes the prior of a model trained without it:
    recorded in reconstruction.npz, said in the summary, and a different object."""
    proc = _cli("infer", "--model", "run", "--data", "scan.npz", "--output-dir", "relaxed",
                "--prior-step-scale", "2", "--no-figures", cwd=trained)
    rec = np.load(trained / "relaxed" / "reconstruction.npz")
    assert float(rec["prior_step_scale"]) == 2.0
    assert ", prior step scale 2, " in proc.stdout
    plain = trained / "plain"
    _cli("infer", "--model", "run", "--data", "scan.npz", "--output-dir", str(plain),
         "--no-figures", cwd=trained)
    assert not np.array_equal(rec["object"], np.load(plain / "reconstruction.npz")["object"])
    bad = _cli("infer", "--model", "run", "--data", "scan.npz", "--output-dir", "bad",
               "--prior-step-scale", "5", cwd=trained, check=False)
    assert bad.returncode != 0 and "prior_step_scale" in bad.stderr


def test_untrained_floor(tmp_path, trained):
    """Training beats the same network untrained (random weights, physics prior input)."""
    import torch

    from ptychopinn import api
    from ptychopinn.bundle.pytorch import load_pinn, save_pinn
    from ptychopinn.data import load_npz
    from ptychopinn.metrics import evaluate

    loaded = load_pinn(trained / "run")
    torch.manual_seed(0)
    for mod in loaded.model.generator.modules():
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    save_pinn(tmp_path, loaded.model, loaded.config)
    scan = load_npz(trained / "scan.npz")
    rec = api.reconstruct(api.load_bundle(tmp_path), scan)
    m = evaluate(rec.object, scan.object, positions_px=rec.positions_px, patch_size=32)
    got = _cli("infer", "--model", "run", "--data", "scan.npz", "--output-dir", "out2",
               cwd=trained)
    assert got.returncode == 0
    t = json.loads((trained / "out2" / "metrics.json").read_text())["reconstruction"]
    assert m["amp_ssim"] < FLOOR, m
    assert t["amp_ssim"] > m["amp_ssim"] + 0.2 and t["phase_ssim"] > m["phase_ssim"] + 0.1, (m, t)


def test_evaluate_command(trained):
    _cli(
        "evaluate",
        "--reconstruction",
        "out/reconstruction.npz",
        "--truth",
        "scan.npz",
        "--output-dir",
        "eval",
        cwd=trained,
    )
    assert (trained / "eval" / "metrics.json").is_file()
    # against the measured data (no truth), with the probe the network assumed
    assert "probe" in np.load(trained / "out" / "reconstruction.npz").files
    proc = _cli("evaluate", "--reconstruction", "out/reconstruction.npz", "--scan", "scan.npz",
                "--output-dir", "eval_data", cwd=trained)
    d = json.loads((trained / "eval_data" / "metrics.json").read_text())["data_consistency"]
    ratio = d["reconstruction"]["deviance_ratio"]
    assert d["reconstruction"]["counts_are_integers"] and 0.9 < ratio < 20, d
    assert "reconstruction vs the data" in proc.stdout


def test_bad_inputs_give_one_paragraph_errors(trained, tmp_path):
    (tmp_path / "notnpz.npz").write_text("hello")
    cases = [
        ("infer", "--model", "run", "--data", str(tmp_path / "notnpz.npz")),
        ("infer", "--model", str(tmp_path), "--data", "scan.npz"),
        ("train", "--data", "scan.npz", "--backend", "torch", "--output-dir", "x"),
        ("train", "--data", "missing.npz", "--output-dir", "x"),
        ("train", "--data", "scan.npz", "--set", "model.gridsiz=2", "--output-dir", "x"),
        ("inspect", "missing.npz"),
        ("infer", "--model", "run", "--data", "scan.npz", "--prior-orders", "0"),
    ]
    for args in cases:
        proc = _cli(*args, cwd=trained, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        # ours ("error: ...") or argparse's ("ptychopinn train: error: ...")
        errors = [ln for ln in proc.stderr.splitlines()
                  if re.match(r"(ptychopinn \w+: )?error: ", ln)]
        assert len(errors) == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)


def test_inspect_and_config(trained):
    proc = _cli("inspect", "scan.npz", cwd=trained)
    assert "196" in proc.stdout
    proc = _cli("config", "train", cwd=trained)
    assert "backend: pytorch" in proc.stdout


def test_infer_prior_iterations_and_refinement_flags(trained):
    """`--prior-iterations` and `--refine-epochs` reach the reconstruction; a bad
    value is refused with the option's name."""
    _cli("infer", "--model", "run", "--data", "scan.npz", "--output-dir", "out_pi",
         "--prior-iterations", "8", "--refine-epochs", "4", "--no-figures", cwd=trained)
    rec = np.load(trained / "out_pi" / "reconstruction.npz")
    assert rec["refined_object"].shape == rec["object"].shape
    assert rec["refinement_loss"].shape == (4,)
    base = np.load(trained / "out" / "reconstruction.npz") if (trained / "out").exists() else None
    if base is not None:  # 8 passes instead of the model's: a different first guess
        assert not np.allclose(rec["object"], base["object"])
    bad = _cli("infer", "--model", "run", "--data", "scan.npz", "--output-dir", "out_bad",
               "--prior-iterations", "0", cwd=trained, check=False)
    assert bad.returncode == 2 and "prior_iterations" in bad.stderr, bad.stderr


def test_simulate_subpixel_flag(tmp_path):
    """`simulate --subpixel` reaches the scan's metadata (default probe_shift); a bad
    value is refused by name."""
    _cli("simulate", "a.npz", "--N", "32", "--n-positions", "16", "-q", cwd=tmp_path)
    _cli("simulate", "b.npz", "--N", "32", "--n-positions", "16", "--subpixel", "bilinear", "-q",
         cwd=tmp_path)
    from ptychopinn.data.readers import load_scan

    a, b = load_scan(tmp_path / "a.npz"), load_scan(tmp_path / "b.npz")
    assert a.metadata["simulation"]["subpixel"] == "probe_shift"
    assert b.metadata["simulation"]["subpixel"] == "bilinear"
    np.testing.assert_array_equal(a.positions_px, b.positions_px)
    assert not np.array_equal(a.diffraction, b.diffraction)
    proc = _cli("simulate", "c.npz", "--subpixel", "fourier", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "--subpixel" in proc.stderr


def test_train_chooses_the_featureless_recipe_under_a_gaussian_beam(tmp_path):
    """``ptychopinn train`` with its defaults on a Gaussian-probe scan: the log names the
    choice, config.yaml holds it, and ``infer`` runs the recipe's over-relaxed prior from
    the bundle alone (said in its summary, recorded in reconstruction.npz); with the FRC
    filter's halves on this scan (covered 2.4 times), without them where the model's
    ``prior_frc_min_coverage`` is above that (logged by train, said by infer)."""
    import yaml

    _cli("simulate", "g.npz", "--N", "32", "--n-positions", "36", "--probe", "gaussian",
         "--seed", "3", "-q", cwd=tmp_path)
    proc = _cli("train", "--data", "g.npz", "--output-dir", "run", "--accelerator", "cpu",
                "--epochs", "1", "--logger", "none", "--no-progress", "--set", "model.N=32",
                "--set", "model.n_filters_scale=0.25", "--set", "save_reconstruction=false",
                cwd=tmp_path)
    assert "prior recipe 'auto': 'featureless'" in proc.stdout + proc.stderr
    model = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]
    assert (model["prior_recipe"], model["prior_step_scale"], model["prior_batch_size"],
            model["prior_iterations"], model["prior_settle_passes"],
            model["prior_object_momentum"]) == ("featureless", 2.0, 32, 12, 4, 0.8)
    proc = _cli("infer", "--model", "run", "--data", "g.npz", "--output-dir", "out",
                "--no-figures", cwd=tmp_path)
    assert (", prior step scale 2 with object momentum 0.8 then 4 plain passes, "
            in proc.stdout)
    saved = np.load(tmp_path / "out" / "reconstruction.npz")
    assert float(saved["prior_step_scale"]) == 2.0 and int(saved["prior_settle_passes"]) == 4
    assert float(saved["prior_object_momentum"]) == 0.8
    # covered 2.4 times: at least model.prior_frc_min_coverage (2), so the FRC filter's halves ran
    assert bool(saved["prior_frc_filter"]) and "no FRC halves" not in proc.stdout
    assert str(saved["stitch_weight"]) == "probe" and "uniform stitching" not in proc.stdout
    assert int(saved["prior_orders"]) == 1 and "batch orders" not in proc.stdout
    # a minimum above the scan's coverage: the whole scan's passes, 8 more, no halves
    proc = _cli("train", "--data", "g.npz", "--output-dir", "whole", "--accelerator", "cpu",
                "--epochs", "1", "--logger", "none", "--no-progress", "--set", "model.N=32",
                "--set", "model.n_filters_scale=0.25", "--set", "save_reconstruction=false",
                "--set", "model.prior_frc_min_coverage=3", cwd=tmp_path)
    assert "prior: 20 whole-scan passes without the FRC filter's halves" in proc.stdout + proc.stderr
    proc = _cli("infer", "--model", "whole", "--data", "g.npz", "--output-dir", "out2",
                "--no-figures", cwd=tmp_path)
    assert "20 prior passes" in proc.stdout and "whole scan only (no FRC halves)" in proc.stdout
    saved = np.load(tmp_path / "out2" / "reconstruction.npz")
    assert not bool(saved["prior_frc_filter"]) and int(saved["prior_passes"]) == 20
    # there the over-relaxed estimate averages two batch orders unless told otherwise
    assert int(saved["prior_orders"]) == 2 and ", mean of 2 batch orders" in proc.stdout
    _cli("infer", "--model", "whole", "--data", "g.npz", "--output-dir", "out_one",
         "--no-figures", "--prior-orders", "1", cwd=tmp_path)
    one = np.load(tmp_path / "out_one" / "reconstruction.npz")
    assert int(one["prior_orders"]) == 1 and not np.array_equal(one["object"], saved["object"])
    assert not bool(one["prior_orders_filter"]) and "prior_orders_agreement" not in one
    # the two orders' mean is filtered by their FRC (model.prior_orders_filter, default on)
    assert bool(saved["prior_orders_filter"]) and 0 < float(saved["prior_orders_agreement"]) <= 1
    assert ", mean of 2 batch orders FRC-filtered (agreement " in proc.stdout
    _cli("infer", "--model", "whole", "--data", "g.npz", "--output-dir", "out_nofilter",
         "--no-figures", "--prior-orders-filter", "off", cwd=tmp_path)
    plain = np.load(tmp_path / "out_nofilter" / "reconstruction.npz")
    assert int(plain["prior_orders"]) == 2 and not bool(plain["prior_orders_filter"])
    assert not np.array_equal(plain["object"], saved["object"])
    # there 'auto' stitches uniformly: the same object as asked for by hand, not as 'probe'
    assert str(saved["stitch_weight"]) == "uniform" and ", uniform stitching" in proc.stdout
    for w in ("uniform", "probe"):
        _cli("infer", "--model", "whole", "--data", "g.npz", "--output-dir", f"out_{w}",
             "--no-figures", "--set", f"stitch_weight={w}", cwd=tmp_path)
    by_hand = {w: np.load(tmp_path / f"out_{w}" / "reconstruction.npz") for w in ("uniform", "probe")}
    assert np.array_equal(by_hand["uniform"]["object"], saved["object"])
    assert not np.array_equal(by_hand["probe"]["object"], saved["object"])
    assert str(by_hand["probe"]["stitch_weight"]) == "probe"
    # at the simulator's 1e6 photons no dose warning; a tenth of them: infer warns
    assert "photons per pattern, below" not in proc.stdout + proc.stderr
    _cli("simulate", "g5.npz", "--N", "32", "--n-positions", "36", "--probe", "gaussian",
         "--seed", "3", "--photons", "1e5", "-q", cwd=tmp_path)
    proc = _cli("infer", "--model", "whole", "--data", "g5.npz", "--output-dir", "out3",
                "--no-figures", cwd=tmp_path)
    assert "photons per pattern, below 5e+05" in proc.stdout + proc.stderr


def test_lightnings_logging_is_routed_only_where_training_uses_it(monkeypatch):
    """`train` / `pretrain` / `demo` route Lightning's loggers (importing it), but not
    `train --backend tensorflow` or commands that never train (its import costs seconds)."""
    from ptychopinn.cli import commands, main

    routed = []
    monkeypatch.setattr(main, "route_lightning_logging", lambda: routed.append(True))
    monkeypatch.setattr(commands, "cmd_train", lambda args: 0)
    monkeypatch.setattr(commands, "cmd_config", lambda args: 0)
    for argv, expected in ((["train", "--data", "x.npz"], 1),
                           (["train", "--data", "x.npz", "--backend", "tensorflow"], 0),
                           (["config", "train"], 0)):
        routed.clear()
        assert main.main(argv) == 0
        assert len(routed) == expected, argv
