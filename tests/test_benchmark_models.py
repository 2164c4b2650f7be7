"""benchmarks/train_models.py: the commands that make the benchmarks' models stay valid.

A rerun of docs/benchmarks.md on a new machine starts with these commands, so
they must parse with today's CLI, simulate the very scans the benchmark
scripts simulate, and fail loudly on a wrong name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import train_models  # noqa: E402

from ptychopinn.cli.main import build_parser  # noqa: E402


def test_every_command_parses_with_the_cli(tmp_path):
    parser = build_parser()
    cmds = train_models.commands(tmp_path, list(train_models.MODELS))
    # every scan simulated once, then one command per model
    n_scans = len(train_models.SCANS)
    assert [c[0] for c in cmds[:n_scans]] == ["simulate"] * n_scans
    assert len(cmds) == n_scans + len(train_models.MODELS)
    for cmd in cmds:
        args = parser.parse_args(cmd)
        assert args.command == cmd[0]
    recipe = parser.parse_args(cmds[n_scans + list(train_models.MODELS).index("recipe_seed5")])
    assert recipe.set == ["model.subpixel=probe_shift", "model.prior_iterations=16",
                          "model.prior_frc_filter=false"]
    assert recipe.data.endswith("seed5.npz")


def test_trainings_are_not_cut_by_the_default_time_limit(tmp_path):
    """The train commands finish the config's epochs on a slow machine too."""
    from ptychopinn.config import TrainingConfig

    cmd = train_models.commands(tmp_path, ["seed5"])[-1]
    minutes = float(cmd[cmd.index("--max-minutes") + 1])
    assert minutes == train_models.TRAIN_MINUTES
    assert minutes >= 3 * TrainingConfig().max_time_minutes


def test_max_minutes_overrides_every_budget(tmp_path):
    cmds = train_models.commands(tmp_path, ["seed11", "pretrained_rp"], max_minutes=0.5)
    train, pretrain = cmds[-2], cmds[-1]
    for cmd in (train, pretrain):
        assert cmd.count("--max-minutes") == 1
        assert cmd[cmd.index("--max-minutes") + 1] == "0.5"


def test_settings_go_to_every_training(tmp_path):
    """``--set`` reaches every train / pretrain command (not the simulations) and
    parses with the CLI, so an option's recorded tables are reproducible."""
    parser = build_parser()
    cmds = train_models.commands(tmp_path, ["seed11", "pretrained_rp"],
                                 settings=["model.prior_batch_size=16"])
    sims = [c for c in cmds if c[0] == "simulate"]
    runs = [c for c in cmds if c[0] != "simulate"]
    assert len(runs) == 2 and all("--set" not in c for c in sims)
    for cmd in runs:
        assert parser.parse_args(cmd).set == ["model.prior_batch_size=16"]


@pytest.mark.parametrize("name", ["sead11", "seed07", "seed-3", "seed"])
def test_unknown_model_is_named(name):
    with pytest.raises(ValueError, match=f"unknown model '{name}'"):
        train_models.commands(Path("x"), [name])


def test_any_seed_is_a_model_of_its_own_scan(tmp_path):
    """``seedN`` outside the table: ``simulate --seed N``, then train's defaults, exactly
    as the tabled unseen seeds (so a hidden seed is checked with the same commands)."""
    parser = build_parser()
    sim, train = train_models.commands(tmp_path, ["seed99"])
    named_sim, named_train = train_models.commands(tmp_path, ["seed7"])
    assert sim == [c.replace("seed7", "seed99") for c in named_sim[:-3]] + ["--seed", "99",
                                                                            "--quiet"]
    assert train == [c.replace("seed7", "seed99") for c in named_train]
    assert parser.parse_args(sim).seed == 99
    assert parser.parse_args(train).data.endswith("seed99.npz")


def test_a_rerun_keeps_finished_models_unless_told_to_overwrite(tmp_path, capsys):
    """A second run into the same --out skips models whose bundle exists (an interrupted
    one trains again: its command carries --overwrite); --overwrite trains them all."""
    (tmp_path / "seed11").mkdir()
    (tmp_path / "seed11" / "model.ptychopinn.safetensors").write_bytes(b"x")
    (tmp_path / "seed5").mkdir()  # interrupted: no bundle
    assert train_models.main(["--out", str(tmp_path), "--only", "seed11", "seed5",
                              "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"kept {tmp_path / 'seed11'}" in out
    assert "--output-dir " + str(tmp_path / "seed11") not in out
    assert "--output-dir " + str(tmp_path / "seed5") + " " in out and "--overwrite" in out
    assert train_models.main(["--out", str(tmp_path), "--only", "seed11", "--overwrite",
                              "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "kept" not in out and "--output-dir " + str(tmp_path / "seed11") in out


def test_cli_refuses_an_unknown_model_by_name(capsys):
    with pytest.raises(SystemExit):
        train_models.main(["--only", "seed11", "sead5", "--dry-run"])
    assert "unknown model 'sead5'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["seed5"])
def test_simulated_scan_is_the_benchmarks_scan(tmp_path, name):
    """The seed-5 scan of train_models is bench_hard_scans' seed-5 scan."""
    from bench_hard_scans import simulate_case

    from ptychopinn.cli.main import main
    from ptychopinn.data import load_npz

    cmd = train_models.commands(tmp_path, [name])[0]
    assert main(cmd) == 0
    ours = load_npz(cmd[1])
    theirs = simulate_case("seed5")
    np.testing.assert_array_equal(ours.diffraction, theirs.diffraction)
    np.testing.assert_allclose(ours.positions_px, theirs.positions_px)


@pytest.mark.parametrize("seed", [7, 2])
def test_unseen_seed_scan_is_the_side_by_side_scan(tmp_path, seed):
    """The seed-7 scan of train_models (and any seedN's) is bench_side_by_side's
    'textured' case with ``--seed N`` (the same simulation), so its model is trained on
    the scan compared."""
    from bench_ptychi import simulate_case

    from ptychopinn.cli.main import main
    from ptychopinn.data import load_npz

    cmd = train_models.commands(tmp_path, [f"seed{seed}"])[0]
    assert main(cmd) == 0
    ours = load_npz(cmd[1])
    theirs, _ = simulate_case("textured", tmp_path / "bench", seed=seed)
    np.testing.assert_array_equal(ours.diffraction, theirs.diffraction)
    np.testing.assert_allclose(ours.positions_px, theirs.positions_px)


def test_seed_models_finds_the_layout_and_names_what_is_missing(tmp_path) -> None:
    (tmp_path / "seed3").mkdir()
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "seed3.npz").write_bytes(b"")
    assert train_models.seed_models(tmp_path, [3]) == [
        (3, tmp_path / "seed3", tmp_path / "scans" / "seed3.npz")]
    with pytest.raises(SystemExit, match=r"seed 4: missing .*seed4.*--only seed4"):
        train_models.seed_models(tmp_path, [3, 4])


def test_seed_model_runs_name_what_is_missing_and_load_the_scans(tmp_path):
    """`seed_model_runs`: a missing model or scan is named with the command that makes
    it; an unknown case is named with the choices; each run loads its scan lazily."""
    with pytest.raises(SystemExit, match=r"seed 3: missing .*seed3.*--only seed3"):
        train_models.seed_model_runs(tmp_path, [3])
    from ptychopinn.data import save_npz
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    (tmp_path / "seed3").mkdir()
    (tmp_path / "scans").mkdir()
    scan = simulate_scan(SimulationConfig(N=32, n_positions=16, seed=3))
    save_npz(scan, tmp_path / "scans" / "seed3.npz")
    ((label, model, load),) = train_models.seed_model_runs(tmp_path, [3])
    assert (label, model) == ("3", tmp_path / "seed3")
    loaded, path = load()
    assert path == tmp_path / "scans" / "seed3.npz"
    np.testing.assert_array_equal(loaded.positions_px, scan.positions_px)
    with pytest.raises(SystemExit, match=r"unknown \['bogus'\]; choose from"):
        train_models.seed_model_runs(tmp_path, [3], ["textured", "bogus"])
    runs = train_models.seed_model_runs(tmp_path, [3], ["textured_1e3", "image"])
    assert [r[0] for r in runs] == ["3, textured_1e3", "3, image"]
    case_scan, case_path = runs[0][2]()  # simulated with the seed, its folder removed
    assert case_scan.object is not None and case_scan.n_patterns == 625
    assert not case_path.parent.exists()


def test_case_arguments_keep_their_order_and_name_a_missing_path(tmp_path, capsys):
    """`add_case_argument` / `checked_cases`: the cases come back in the order given; a
    MODEL or SCAN that does not exist is refused naming the case, the part and the path;
    no case at all is refused by argparse."""
    import argparse

    model, scan = tmp_path / "run", tmp_path / "scan.npz"
    model.mkdir()
    scan.write_bytes(b"")
    ap = argparse.ArgumentParser()
    train_models.add_case_argument(ap, "a case")
    args = ap.parse_args(["--case", "b", str(model), str(scan), "--case", "a", str(model),
                          str(scan)])
    assert train_models.checked_cases(ap, args) == [("b", str(model), str(scan)),
                                                    ("a", str(model), str(scan))]
    for bad, part in (([str(tmp_path / "gone"), str(scan)], "MODEL"),
                      ([str(model), str(tmp_path / "gone.npz")], "SCAN")):
        args = ap.parse_args(["--case", "x", *bad])
        with pytest.raises(SystemExit):
            train_models.checked_cases(ap, args)
        assert f"--case 'x': {part} {tmp_path}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ap.parse_args([])
