"""The CLI's options as a new user meets them: each command's ``--set`` example works for
that command, infer's refinement flags are refused where no refinement runs, ``train
--init`` names the model keys that differ before any model is built, ``pretrain`` does not
overwrite a model, and what ``-q`` and the logs say (exit status 2, no traceback)."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import yaml

from ptychopinn.cli.main import build_parser, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--set", "model.N=32", "--set", "model.n_filters_scale=0.125",
        "--set", "execution.logger=none", "--set", "save_reconstruction=false",
        "--accelerator", "cpu", "--no-progress"]
"""A training of seconds on the tiny scan (the model settings a fine-tuning must repeat)."""


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    """A tiny simulated scan file (N=32, 16 positions)."""
    path = tmp_path_factory.mktemp("scan") / "scan.npz"
    assert main(["simulate", str(path), "--N", "32", "--n-positions", "16", "-q"]) == 0
    return path


@pytest.fixture(scope="module")
def run_dir(scan_path, tmp_path_factory):
    """A run folder trained for one epoch on the tiny scan (gridsize 2, the default)."""
    run = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", "--data", str(scan_path), "--output-dir", str(run), "--epochs", "1",
                 *TINY, "-q"]) == 0
    return run


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _help(args, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*args, "--help"])
    return " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------- 1: --set examples
def _resolve(command: str, item: str) -> None:
    """Resolve ``command``'s config with ``--set item`` as the command does (no work)."""
    from ptychopinn.cli import commands

    args = build_parser().parse_args([command, *(["x.npz"] if command == "simulate" else []),
                                      *(["--output-dir", "o"] if command == "pretrain" else []),
                                      "--set", item])
    if command == "train":
        commands.train_config_from_args(args)
    elif command == "infer":
        commands.infer_config_from_args(args)
    elif command == "simulate":
        from ptychopinn.simulation import SimulationConfig

        commands._resolve(SimulationConfig, args, {})
    else:
        from ptychopinn.config.io import build
        from ptychopinn.config.schema import TrainingConfig
        from ptychopinn.pretraining.cli import split_options
        from ptychopinn.pretraining.dataset import PretrainConfig

        recipe, overrides = split_options(args)
        build(PretrainConfig, recipe, where="pretrain recipe")
        build(TrainingConfig, overrides, where="pretrain options")


@pytest.mark.parametrize("command", ["train", "infer", "simulate", "pretrain"])
def test_each_commands_set_example_is_a_key_it_takes(command, capsys) -> None:
    text = _help([command], capsys)
    # the --set option's own help: up to the next option that is not --set
    own = re.search(r" --set KEY=VALUE (.*?)(?= --(?!set\b)[a-z])", text)
    assert own, text
    examples = re.findall(r"--set ([\w.]+=[^\s,;)]+)", own.group(1))
    assert examples, own.group(1)
    for item in examples:
        _resolve(command, item)  # ConfigError ("unknown key") if the example is another's
    if command in ("infer", "simulate"):
        assert "model.N" not in own.group(1)


# ------------------------------------------------- 2: refinement flags without refinement
@pytest.mark.parametrize(
    "extra",
    [["--refine-probe"], ["--refine-positions"],
     ["--refine-probe", "--refine-positions", "--refine-epochs", "0"]],
)
def test_infer_refuses_refine_flags_without_refinement(extra, run_dir, scan_path, tmp_path,
                                                       capsys) -> None:
    out = tmp_path / "out"
    rc = main(["infer", "--model", str(run_dir), "--data", str(scan_path), "--output-dir",
               str(out), *extra, "-q"])
    err = _error(capsys)
    assert rc == 2
    for flag in ("--refine-probe", "--refine-positions"):
        assert (flag in err) == (flag in extra), err
    assert "--refine-epochs" in err and "found refine_epochs 0" in err
    if "--refine-positions" in extra:
        assert "--position-refine-epochs" in err
    assert not out.exists()


def test_infer_refine_flag_checks_the_resolved_config(run_dir, scan_path, tmp_path,
                                                      capsys) -> None:
    from ptychopinn.cli.commands import check_refine_options, infer_config_from_args

    cfg_file = tmp_path / "infer.yaml"
    cfg_file.write_text(yaml.safe_dump({"refine_probe": True}))
    rc = main(["infer", "--model", str(run_dir), "--data", str(scan_path), "--output-dir",
               str(tmp_path / "out"), "--config", str(cfg_file), "-q"])
    assert rc == 2 and "--refine-probe (refine_probe)" in _error(capsys)
    # refine epochs from the config file or --set are refinement enough
    cfg_file.write_text(yaml.safe_dump({"refine_epochs": 5}))
    parse = build_parser().parse_args
    for argv in (["--config", str(cfg_file)], ["--set", "refine_epochs=5"]):
        cfg = infer_config_from_args(parse(["infer", "--refine-positions", *argv]))
        assert cfg.refine_positions and cfg.refine_epochs == 5
        check_refine_options(cfg)


def test_infer_flags_have_help(capsys) -> None:
    text = _help(["infer"], capsys)
    assert "--refine-probe With --refine-epochs K: also refine the probe" in text
    assert "--refine-positions With --refine-epochs K: also correct the scan positions" in text
    assert "--no-figures Write no PNG figures" in text
    assert "--n-groups N_GROUPS Groups to predict, drawn at random" in text
    assert "--seed SEED Seed of the groups drawn with --n-groups" in text


# ------------------------------------------------------- 2 and 6: refinement under -q
def test_infer_refines_the_probe_with_epochs_from_set_and_is_quiet(run_dir, scan_path,
                                                                   tmp_path, capsys) -> None:
    from ptychopinn.cli.commands import infer_config_from_args

    parse = build_parser().parse_args
    assert infer_config_from_args(parse(["infer", "-q"])).execution.progress_bar is False
    assert infer_config_from_args(parse(["infer"])).execution.progress_bar is True
    out = tmp_path / "out"
    rc = main(["infer", "--model", str(run_dir), "--data", str(scan_path), "--output-dir",
               str(out), "--refine-probe", "--set", "refine_epochs=2", "--accelerator", "cpu",
               "--no-figures", "-q"])
    err = _error(capsys)
    assert rc == 0, err
    assert "refine" not in err and "epoch/s" not in err, err  # no progress bar under -q
    with np.load(out / "reconstruction.npz") as r:
        assert "refined_probe" in r.files and "refined_object" in r.files
    assert not list(out.glob("*.png"))


# ------------------------------------------------ 3: --init with another model section
def test_init_with_another_model_names_the_keys_before_building(run_dir, scan_path, tmp_path,
                                                                capsys, caplog) -> None:
    caplog.set_level(logging.INFO)
    ft = tmp_path / "ft"
    rc = main(["train", "--init", str(run_dir), "--data", str(scan_path), "--output-dir",
               str(ft), "--epochs", "1", *TINY, "--set", "model.gridsize=1", "-q"])
    err = _error(capsys)
    assert rc == 2
    assert f"init_from {run_dir}: its model section differs" in err
    assert f"model.gridsize: 2 in {run_dir}, 1 here" in err
    assert "--set model.gridsize=2" in err
    assert "n_filters_scale" not in err  # only the keys that differ
    assert "built generator" not in caplog.text  # checked before any model is built
    assert not ft.exists()


def test_init_mismatch_message_writes_values_as_set_takes_them() -> None:
    from ptychopinn.config.schema import ModelConfig
    from ptychopinn.training.checks import init_model_mismatch

    a = ModelConfig(N=32)
    b = ModelConfig(N=64, architecture="cnn")
    msg = init_model_mismatch("pre", a, b)
    assert "model.N: 32 in pre, 64 here" in msg and "model.architecture: unet in pre, cnn here" in msg
    assert "--set model.N=32 --set model.architecture=unet" in msg


# ---------------------------------------------- 4 and 6: pretrain into a model's folder
def test_pretrain_does_not_overwrite_a_model_and_logs_the_generator_once(
        run_dir, scan_path, tmp_path, capsys, caplog) -> None:
    caplog.set_level(logging.INFO)
    pre = tmp_path / "pre"
    args = ["pretrain", "--scan", str(scan_path), "--output-dir", str(pre), "--n-objects", "1",
            "--set", "nepochs=1", *TINY]
    assert main(args) == 0, _error(capsys)
    assert caplog.text.count("built generator") == 1, caplog.text
    capsys.readouterr()
    bundle = pre / "model.ptychopinn.safetensors"
    before = bundle.read_bytes()
    for folder, what in ((pre, "a pretrained model"), (run_dir, "a trained model")):
        rc = main([*args[:3], "--output-dir", str(folder), *args[5:]])
        err = _error(capsys)
        assert rc == 2
        assert f"--output-dir (the run folder) {folder}: already holds {what}" in err, err
        assert "another --output-dir" in err
    assert bundle.read_bytes() == before


def test_pretrain_may_start_again_where_no_bundle_was_saved(tmp_path) -> None:
    from ptychopinn.errors import OutputPathError
    from ptychopinn.pretraining.pretrain import RECIPE_FILE, check_run_dir

    run = tmp_path / "interrupted"
    run.mkdir()
    (run / RECIPE_FILE).write_text('{"status": "training"}')
    assert check_run_dir(run) == run
    assert check_run_dir(tmp_path / "new") == tmp_path / "new"
    (run / "model.ptychopinn.safetensors").write_bytes(b"x")
    with pytest.raises(OutputPathError, match="already holds a pretrained model"):
        check_run_dir(run)


def test_backend_flag_takes_the_configs_backends_and_names_itself(capsys) -> None:
    from ptychopinn.cli.main import CLI_BACKENDS, build_parser
    from ptychopinn.config.schema import BACKENDS

    assert CLI_BACKENDS == BACKENDS
    for command in ("train", "infer"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--backend", "keras"])
        assert "argument --backend: invalid choice: 'keras'" in capsys.readouterr().err


# ------------------------------------------------- infer's audit: inputs kept, bounds, coverage
def test_infer_refuses_to_write_over_its_input_scan(run_dir, scan_path, tmp_path, capsys):
    import shutil

    folder = tmp_path / "d"
    folder.mkdir()
    data = folder / "reconstruction.npz"
    shutil.copy(scan_path, data)
    before = data.read_bytes()
    rc = main(["infer", "--model", str(run_dir), "--data", str(data), "--output-dir",
               str(folder), "-q"])
    assert rc == 2 and "would replace it" in _error(capsys)
    assert data.read_bytes() == before


def test_infer_bounds_n_groups_and_warns_when_groups_leave_patterns_out(
        run_dir, scan_path, tmp_path, capsys, caplog):
    out = tmp_path / "o"
    rc = main(["infer", "--model", str(run_dir), "--data", str(scan_path), "--output-dir",
               str(out), "--n-groups", "100000", "-q"])
    assert rc == 2 and "n_groups (--n-groups) is 100000, but the scan has 16 patterns" in \
        _error(capsys)
    with caplog.at_level(logging.WARNING):
        assert main(["infer", "--model", str(run_dir), "--data", str(scan_path),
                     "--output-dir", str(out), "--n-groups", "1", "--no-figures", "-q"]) == 0
    assert "n_groups=1 predicts 4 of the scan's 16 patterns" in caplog.text


@pytest.mark.parametrize("setting", ["prior_iterations=100000000", "refine_epochs=1000000000",
                                     "refine_phase_first=10000000", "n_groups=100000000"])
def test_infer_counts_that_would_run_for_ever_are_refused(setting) -> None:
    from ptychopinn.cli.commands import infer_config_from_args

    with pytest.raises(ValueError, match=setting.split("=")[0]):
        infer_config_from_args(build_parser().parse_args(["infer", "--set", setting]))


def test_a_scan_at_one_position_is_refused_by_infer_and_train(run_dir, scan_path, tmp_path,
                                                              capsys):
    with np.load(scan_path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["xcoords"][:] = arrays["xcoords"][0]
    arrays["ycoords"][:] = arrays["ycoords"][0]
    same = tmp_path / "same.npz"
    np.savez(same, **arrays)
    for argv in (["infer", "--model", str(run_dir), "--data", str(same), "--output-dir",
                  str(tmp_path / "o")],
                 ["train", "--data", str(same), "--output-dir", str(tmp_path / "r"), *TINY]):
        assert main([*argv, "-q"]) == 2
        assert "all 16 positions are the same point" in _error(capsys)
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_infer_says_when_the_orders_asked_for_did_not_apply(run_dir, scan_path, tmp_path,
                                                            caplog):
    """--prior-orders with a model whose prior runs the FRC filter's halves (one order)
    changed nothing without a word; now a warning says so and how to apply it."""
    with caplog.at_level(logging.WARNING):
        assert main(["infer", "--model", str(run_dir), "--data", str(scan_path),
                     "--output-dir", str(tmp_path / "o"), "--prior-orders", "2",
                     "--no-figures", "-q"]) == 0
    with np.load(tmp_path / "o" / "reconstruction.npz") as f:
        ran = int(f["prior_orders"]) if "prior_orders" in f.files else 1
    assert ran == 1  # train's defaults: the FRC filter's halves
    assert "prior_orders=2 did not apply" in caplog.text


def test_infer_says_a_missing_model_before_reading_the_scan(tmp_path, capsys, monkeypatch):
    import ptychopinn.data.readers as readers

    def not_read(*a, **k):
        raise AssertionError("the scan was read before the model was checked")

    monkeypatch.setattr(readers, "load_scan", not_read)
    for model, words in ((str(tmp_path / "nope"), "--model "), (None, "infer needs --model")):
        argv = ["infer", "--data", "s.npz", "--output-dir", str(tmp_path / "o"), "-q"]
        assert main(argv + (["--model", model] if model else [])) == 2
        assert words in _error(capsys)


def test_running_out_of_memory_is_one_line_not_a_traceback(monkeypatch, capsys):
    from ptychopinn.cli import commands

    def too_big(args):
        raise MemoryError

    monkeypatch.setattr(commands, "cmd_simulate", too_big)
    assert main(["simulate", "x.npz", "-q"]) == 1
    err = capsys.readouterr().err
    assert "error: simulate ran out of memory" in err and "Traceback" not in err
