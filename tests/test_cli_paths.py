"""The CLI on a new user's mistakes: output paths, the wrong config file, files that are not
what an option takes, and options checked before any work (exit status 2, a message
naming the path or option, no traceback, nothing left behind)."""

from __future__ import annotations

import logging
import re
import typing

import numpy as np
import pytest
import yaml

from ptychopinn.cli.main import build_parser, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    """A tiny simulated scan file (N=32, 16 positions)."""
    d = tmp_path_factory.mktemp("scan")
    path = d / "scan.npz"
    assert main(["simulate", str(path), "--N", "32", "--n-positions", "16", "-q"]) == 0
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------- output paths
def test_simulate_into_a_folder_names_it(tmp_path, capsys) -> None:
    rc = main(["simulate", str(tmp_path), "--N", "32", "--n-positions", "16", "-q"])
    err = _error(capsys)
    assert rc == 2
    assert f"simulate OUTPUT {tmp_path}: is a folder" in err
    assert "path of a file" in err and str(tmp_path / "scan.npz") in err
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_convert_into_a_folder_names_it(scan_path, tmp_path, capsys) -> None:
    rc = main(["convert", str(scan_path), str(tmp_path), "-q"])
    err = _error(capsys)
    assert rc == 2
    assert f"convert DESTINATION {tmp_path}: is a folder" in err
    assert list(tmp_path.iterdir()) == []


def test_convert_under_a_file_names_the_file(scan_path, tmp_path, capsys) -> None:
    blocker = tmp_path / "f.npz"
    blocker.write_bytes(b"x")
    rc = main(["convert", str(scan_path), str(blocker / "out.npz"), "-q"])
    err = _error(capsys)
    assert rc == 2
    assert f"{blocker} is a file, not a folder" in err


@pytest.mark.parametrize("command", ["train", "infer"])
def test_output_dir_that_is_a_file(command, scan_path, tmp_path, capsys) -> None:
    target = tmp_path / "taken.npz"
    target.write_bytes(b"keep me")
    args = [command, "--data", str(scan_path), "--output-dir", str(target), "-q"]
    if command == "infer":
        args += ["--model", str(tmp_path / "no_model")]
    rc = main(args)
    err = _error(capsys)
    assert rc == 2
    assert "--output-dir" in err and f"{target}: is an existing file, not a folder" in err
    assert target.read_bytes() == b"keep me"


def test_inspect_a_folder(tmp_path, capsys) -> None:
    for extra in ([], ["--format", "npz"]):
        rc = main(["inspect", str(tmp_path), *extra])
        err = _error(capsys)
        assert rc == 2
        assert f"{tmp_path}: is a folder; expected a data file" in err


def test_atomic_write_to_a_folder_is_an_output_path_error(tmp_path) -> None:
    from ptychopinn.atomic import atomic_write_text
    from ptychopinn.errors import OutputPathError, PtychoPINNError

    with pytest.raises(OutputPathError, match="is a folder") as info:
        atomic_write_text(tmp_path, "x")
    assert isinstance(info.value, PtychoPINNError) and isinstance(info.value, OSError)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match=r"f is a file, not a folder"):
        atomic_write_text(tmp_path / "f" / "g.txt", "y")


# --------------------------------------------------------- unknown keys, sections
@pytest.mark.parametrize(
    ("args", "section"),
    [
        (["simulate", "x.npz", "--set", "foo=1"], "simulate"),
        (["infer", "--set", "foo=1"], "infer"),
        (["train", "--set", "foo=1"], "train"),
        (["pretrain", "--set", "pretrain.foo=1"], "pretrain"),
    ],
)
def test_unknown_key_points_to_the_commands_config(args, section, tmp_path, capsys) -> None:
    if args[0] == "pretrain":
        args = [*args, "--output-dir", str(tmp_path / "pt")]
    rc = main(args)
    err = _error(capsys)
    assert rc == 2
    # the key as written: under pretrain: for the recipe
    assert f"- {'pretrain.' if section == 'pretrain' else ''}foo: unknown key" in err
    assert f"see `ptychopinn config {section}`" in err
    others = {"simulate", "infer", "train", "pretrain"} - {section}
    assert not any(f"ptychopinn config {o}`" in err for o in others), err


def test_config_pretrain_prints_the_recipe_pretrain_takes(tmp_path, capsys) -> None:
    from ptychopinn.pretraining.cli import split_options
    from ptychopinn.pretraining.dataset import PretrainConfig

    assert main(["config", "pretrain"]) == 0
    text = capsys.readouterr().out
    data = yaml.safe_load(text)
    assert set(data) == {"pretrain"}
    # every recipe key but pattern (whose default depends on --scan)
    assert set(data["pretrain"]) == set(PretrainConfig.model_fields) - {"pattern"}
    PretrainConfig.model_validate(data["pretrain"])
    path = tmp_path / "pretrain.yaml"
    path.write_text(text)
    args = build_parser().parse_args(["pretrain", "--output-dir", "o", "--config", str(path)])
    recipe, overrides = split_options(args)
    assert recipe == data["pretrain"] and "pretrain" not in overrides


def _dump(section: str, path, capsys):
    assert main(["config", section]) == 0
    path.write_text(capsys.readouterr().out)
    return path


@pytest.mark.parametrize(
    ("written", "given"),
    [("train", "infer"), ("infer", "train"), ("train", "simulate"), ("infer", "pretrain")],
)
def test_another_commands_config_file_is_one_line(written, given, scan_path, tmp_path,
                                                  capsys) -> None:
    cfg = _dump(written, tmp_path / "cfg.yaml", capsys)
    args = {"infer": ["infer", "--data", str(scan_path), "--model", str(tmp_path / "m")],
            "train": ["train", "--data", str(scan_path)],
            "simulate": ["simulate", str(tmp_path / "s.npz")],
            "pretrain": ["pretrain", "--output-dir", str(tmp_path / "pt")]}[given]
    rc = main([*args, "--config", str(cfg)])
    err = _error(capsys)
    assert rc == 2
    assert err.strip().count("\n") == 0, err  # one line, not one per key
    assert f"{cfg} looks like a `ptychopinn config {written}` file" in err
    assert f"{given} takes the keys of `ptychopinn config " in err
    assert "unknown key" not in err
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "pt").exists()


def test_a_typo_in_the_right_config_is_still_named(tmp_path, scan_path, capsys) -> None:
    cfg = tmp_path / "infer.yaml"
    cfg.write_text("n_groups: 4\nprior_iteratoins: 3\nseed: 1\n")
    rc = main(["infer", "--data", str(scan_path), "--model", "m", "--config", str(cfg)])
    err = _error(capsys)
    assert rc == 2
    assert "prior_iteratoins: unknown key" in err and "looks like" not in err


# ------------------------------------------------------------ files of the wrong kind
def test_object_file_that_is_text_is_not_an_npz(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_text("hello world\n")
    rc = main(["simulate", str(tmp_path / "o.npz"), "--N", "32", "--n-positions", "16",
               "--object", "file", "--object-file", str(bad), "-q"])
    err = _error(capsys)
    assert rc == 2
    assert f"{bad}: not a readable NPZ archive" in err and "objectGuess" in err
    assert "pickle" not in err
    assert not (tmp_path / "o.npz").exists()


def test_infer_with_a_lightning_checkpoint_says_what_a_model_is(scan_path, tmp_path,
                                                                capsys) -> None:
    import torch

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, ckpt)
    out = tmp_path / "out"
    rc = main(["infer", "--model", str(ckpt), "--data", str(scan_path),
               "--output-dir", str(out), "-q"])
    err = _error(capsys)
    assert rc == 2
    assert f"{ckpt}: not a ptychopinn bundle" in err
    assert "Lightning checkpoint" in err and "run folder written by `ptychopinn train`" in err
    assert "header says" not in err
    assert not out.exists()


# ------------------------------------------------- train checks before the run folder
def test_train_on_a_scan_missing_a_key_makes_no_run_folder(scan_path, tmp_path,
                                                           capsys) -> None:
    d = dict(np.load(scan_path))
    del d["xcoords"]
    nokey = tmp_path / "nokey.npz"
    np.savez(nokey, **d)
    run = tmp_path / "t3"
    rc = main(["train", "--data", str(nokey), "--output-dir", str(run), "-q"])
    err = _error(capsys)
    assert rc == 2 and "xcoords" in err and str(nokey) in err
    assert not run.exists()


def test_resume_without_a_checkpoint_writes_nothing(scan_path, tmp_path, capsys) -> None:
    run = tmp_path / "t4"
    rc = main(["train", "--data", str(scan_path), "--output-dir", str(run), "--resume", "-q"])
    err = _error(capsys)
    assert rc == 2 and "--resume: no checkpoint" in err
    assert not run.exists()
    # an existing run folder without a checkpoint keeps its config
    run.mkdir()
    (run / "config.yaml").write_text("mine: 1\n")
    rc = main(["train", "--data", str(scan_path), "--output-dir", str(run), "--resume", "-q"])
    assert rc == 2 and "--resume: no checkpoint" in _error(capsys)
    assert (run / "config.yaml").read_text() == "mine: 1\n"


def test_a_run_folder_made_for_a_failed_training_is_removed(scan_path, tmp_path,
                                                            capsys) -> None:
    """A bad --init bundle (checked before the run folder is made) leaves no new run
    folder; an existing one stays."""
    bad = tmp_path / "bad_init.safetensors"
    bad.write_text("not a bundle")
    for run, existed in ((tmp_path / "t7", False), (tmp_path / "t8", True)):
        if existed:
            run.mkdir()
        rc = main(["train", "--data", str(scan_path), "--output-dir", str(run), "--init",
                   str(bad), "--set", "model.N=32", "--epochs", "1", "--accelerator", "cpu",
                   "-q"])
        err = _error(capsys)
        assert rc == 2 and f"{bad}: not a ptychopinn bundle" in err
        assert run.exists() == existed


def test_a_run_folder_the_runner_made_for_a_failed_training_is_removed(
        scan_path, tmp_path, capsys, monkeypatch) -> None:
    """An error the runner finds only after making the run folder, before any checkpoint,
    leaves no new run folder; a folder that existed, or one holding a checkpoint, stays."""
    import ptychopinn.api
    from ptychopinn.errors import DataError

    def failing(cfg, scan=None, **kw):  # noqa: ANN001, ANN202
        run = tmp_path / cfg.output_dir
        (run / "logs").mkdir(parents=True, exist_ok=True)
        if run.name == "t11":
            (run / "checkpoints").mkdir(exist_ok=True)
            (run / "checkpoints" / "last.ckpt").write_bytes(b"PK")
        raise DataError("found by the runner")

    monkeypatch.setattr(ptychopinn.api, "train", failing)
    monkeypatch.chdir(tmp_path)
    for name, existed, kept in (("t9", False, False), ("t10", True, True), ("t11", False, True)):
        if existed:
            (tmp_path / name).mkdir()
        rc = main(["train", "--data", str(scan_path), "--output-dir", name, "--set",
                   "model.N=32", "--accelerator", "cpu", "-q"])
        assert rc == 2 and "found by the runner" in _error(capsys)
        assert (tmp_path / name).exists() == kept, name


# ------------------------------------------------------------------ batch size
def test_train_refuses_batch_size_auto_at_parsing(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--batch-size", "auto"])
    assert info.value.code == 2
    err = _error(capsys)
    assert "--batch-size" in err and "'auto' is infer's only" in err and "'auto'" in err
    parser = build_parser()
    assert parser.parse_args(["train", "--batch-size", "8"]).batch_size == 8
    assert parser.parse_args(["infer", "--batch-size", "auto"]).batch_size == "auto"
    assert parser.parse_args(["infer", "--batch-size", "4"]).batch_size == 4


def _help(args, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*args, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_batch_size_help_is_per_command(capsys) -> None:
    train_help = _help(["train"], capsys)
    infer_help = _help(["infer"], capsys)
    assert "'auto'" not in train_help.split("--batch-size N", 2)[2].split("--seed")[0]
    assert "'auto'" in infer_help.split("--batch-size N", 2)[2].split("--seed")[0]


# ------------------------------------------------------------------------ demo
def test_demo_checks_its_options_before_writing(tmp_path, capsys) -> None:
    out = tmp_path / "d0"
    with pytest.raises(SystemExit) as info:
        main(["demo", "--minutes", "0", "--output-dir", str(out)])
    assert info.value.code == 2
    err = _error(capsys)
    assert "--minutes" in err and "> 0" in err and "found '0'" in err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["demo", "--accelerator", "tpu", "--output-dir", str(out)])
    assert "--accelerator" in _error(capsys) and not out.exists()


def test_run_demo_validates_before_simulating(tmp_path, capsys) -> None:
    from ptychopinn.cli.demo import run_demo
    from ptychopinn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"(?s)demo options.*max_time_minutes"):
        run_demo(tmp_path / "d", minutes=-1.0, accelerator="cpu", seed=0)
    assert not (tmp_path / "d").exists()
    assert "1/4" not in capsys.readouterr().out
    (tmp_path / "f").write_text("x")
    rc = main(["demo", "--output-dir", str(tmp_path / "f")])
    assert rc == 2 and "is an existing file, not a folder" in _error(capsys)


def test_demo_help_shows_its_defaults(capsys) -> None:
    from ptychopinn.cli.main import ACCELERATORS
    from ptychopinn.config.schema import ExecutionConfig, TrainingConfig

    text = _help(["demo"], capsys)
    minutes = re.search(r"--minutes MINUTES .*?\(default: ([0-9.]+),", text)
    assert minutes and float(minutes.group(1)) == TrainingConfig().max_time_minutes
    assert "(default: demo_run)" in text and "(default: cpu)" in text
    accel = typing.get_args(ExecutionConfig.model_fields["accelerator"].annotation)
    assert set(ACCELERATORS) == set(accel)


def test_demo_is_documented() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert "ptychopinn demo" in (root / "docs" / "usage.md").read_text()
    assert "ptychopinn demo" in (root / "README.md").read_text()


# ------------------------------------------------------------------ cosmetics
def test_output_dir_defaults_in_help(capsys) -> None:
    from ptychopinn.config.schema import InferenceConfig, TrainingConfig

    assert f"(default: {TrainingConfig().output_dir})" in _help(["train"], capsys)
    assert f"(default: {InferenceConfig().output_dir})" in _help(["infer"], capsys)


def test_simulate_and_convert_say_wrote_once(scan_path, tmp_path, capsys, caplog) -> None:
    caplog.set_level(logging.INFO)
    out = tmp_path / "s.npz"
    assert main(["simulate", str(out), "--N", "32", "--n-positions", "16"]) == 0
    said = caplog.text + capsys.readouterr().out
    assert said.count(f"wrote {out}") == 1, said
    caplog.clear()
    dst = tmp_path / "c.npz"
    assert main(["convert", str(scan_path), str(dst)]) == 0
    said = caplog.text + capsys.readouterr().out
    assert said.count(str(dst)) == 1, said


def test_one_pattern_is_singular(tmp_path, caplog, capsys) -> None:
    path = tmp_path / "one.npz"
    assert main(["simulate", str(path), "--N", "32", "--n-positions", "1", "-q"]) == 0
    caplog.set_level(logging.INFO)
    assert main(["inspect", str(path)]) == 0
    assert "loaded 1 pattern of 32x32" in caplog.text


def test_python_api_output_folder_that_is_a_file(scan_path, tmp_path) -> None:
    """The Python API (not only the CLI) names a run or output folder that is a file."""
    from ptychopinn import api
    from ptychopinn.config import TrainingConfig
    from ptychopinn.data.readers import load_scan
    from ptychopinn.errors import OutputPathError
    from ptychopinn.inference.reconstruct import write_outputs

    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    cfg = TrainingConfig(train_data_file=str(scan_path), output_dir=str(blocker))
    with pytest.raises(OutputPathError, match="taken: is an existing file"):
        api.train(cfg, load_scan(scan_path))
    with pytest.raises(OutputPathError, match="taken: is an existing file"):
        write_outputs(None, blocker)


def test_the_infer_template_leaves_the_backend_to_the_bundle(scan_path, tmp_path,
                                                              capsys) -> None:
    """`ptychopinn config infer` lists every key but the backend (a backend written in a
    --config file is a choice; left out, reconstruct follows the bundle's), and the
    template is read back whole."""
    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.config.schema import InferenceConfig

    cfg_file = _dump("infer", tmp_path / "infer.yaml", capsys)
    data = yaml.safe_load(cfg_file.read_text())
    assert "backend" not in data and set(data) == set(InferenceConfig.model_fields) - {"backend"}
    args = build_parser().parse_args(["infer", "--model", "m", "--data", str(scan_path),
                                      "--config", str(cfg_file)])
    cfg = infer_config_from_args(args)
    assert "backend" not in cfg.model_fields_set and cfg == InferenceConfig(
        **{**data, "model_path": "m", "data_file": str(scan_path)})
