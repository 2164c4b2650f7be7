"""What ``--resume`` trusts and refuses, and how a training ends early.

The checkpoint is read as plain data only (a crafted one never runs code), and a
damaged one is a clear error; checkpoints are written atomically; a resume with
other options, fewer epochs or another scan than the checkpoint's is refused before
anything is written to the run folder; SIGINT / SIGTERM end a fit with
`TrainingInterrupted` and no bundle; the fit time adds up across resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch

from ptychopinn import api
from ptychopinn.config import TrainingConfig
from ptychopinn.errors import ConfigError
from ptychopinn.training.interrupt import TrainingInterrupted
from run_configs import tiny_training_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(run, **kw) -> TrainingConfig:
    return tiny_training_config(run, **kw)


def _state(run) -> dict:
    """Every file of a run folder with its size and modification time."""
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_scan):
    """A finished two-epoch PyTorch run (copy it before changing it: `run_copy`)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    api.train(_cfg(run), small_scan)
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


class _Evil:
    """Unpickling it makes the folder ``marker``: proof that code ran."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ------------------------------------------------------------------- reading checkpoints
def test_a_crafted_checkpoint_never_runs_code(run_copy, small_scan, tmp_path, monkeypatch):
    """Even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (which makes every torch.load that
    leaves weights_only unset unpickle), --resume reads last.ckpt as plain data: a
    checkpoint carrying a pickled callable is refused, by name, before anything is
    written, and its code never runs -- nor through Lightning's own load."""
    from ptychopinn.training.module import SafeCheckpointIO

    last = run_copy / "checkpoints" / "last.ckpt"
    raw = torch.load(last, map_location="cpu", weights_only=True)
    marker = tmp_path / "code_ran"
    raw["callbacks"]["evil"] = _Evil(marker)
    torch.save(raw, last)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    before = _state(run_copy)
    with pytest.raises(ConfigError, match=r"last\.ckpt cannot be read: .*could run code.*"
                                          r"--overwrite"):
        api.train(_cfg(run_copy, nepochs=3), small_scan, resume=True)
    with pytest.raises(ConfigError, match="could run code"):
        SafeCheckpointIO().load_checkpoint(str(last), weights_only=False)
    assert not marker.exists()
    assert _state(run_copy) == before


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_a_truncated_checkpoint_is_a_clear_error(run_copy, small_scan, keep):
    """A half-written or empty last.ckpt is a ConfigError naming it and the way on (not
    an EOFError / UnpicklingError traceback), raised before config.yaml is rewritten."""
    last = run_copy / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: int(len(data) * keep)])
    before = _state(run_copy)
    why = "empty" if keep == 0 else "truncated or damaged"
    with pytest.raises(ConfigError, match=rf"checkpoint .*last\.ckpt cannot be read: it is "
                                          rf"{why}.*--overwrite"):
        api.train(_cfg(run_copy, nepochs=3), small_scan, resume=True)
    assert _state(run_copy) == before


# ------------------------------------------------------------------- writing checkpoints
def test_checkpoints_are_written_atomically_beside_their_target(tmp_path, monkeypatch):
    """The Trainer writes checkpoints through `SafeCheckpointIO`: into a temporary file in
    the checkpoint's own folder, renamed over it; a write that fails half-way leaves the
    previous checkpoint as it was, and no temporary file."""
    import lightning as L

    from ptychopinn.training import runner
    from ptychopinn.training.module import SafeCheckpointIO

    trainer = runner._make_trainer(L, _cfg(tmp_path / "run"), tmp_path / "run", [], [0])
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)

    io = SafeCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, str(path))
    good = path.read_bytes()
    seen = []

    def failing_save(obj, fh, *a, **k):
        seen.append(os.path.dirname(os.readlink(f"/proc/self/fd/{fh.fileno()}")))
        fh.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, str(path))
    assert seen == [str(path.parent)]  # staged in the same folder: a rename, never a copy
    assert path.read_bytes() == good
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    monkeypatch.undo()
    assert io.load_checkpoint(str(path))["epoch"] == 0


# ----------------------------------------------------------- what a resume may change
def test_resume_refuses_other_options_before_writing(run_copy, small_scan):
    """A resumed run keeps the options that shape its training: each differing key is
    named with both values and the --set that restores it, and nothing in the run folder
    changes (config.yaml included)."""
    before = _state(run_copy)
    with pytest.raises(ConfigError) as err:
        api.train(_cfg(run_copy, nepochs=3, learning_rate=1e-3, model={"gridsize": 1}),
                  small_scan, resume=True)
    msg = str(err.value)
    assert "learning_rate: 0.002 in the checkpoint, 0.001 here" in msg
    assert "model.gridsize: 2 in the checkpoint, 1 here" in msg
    assert "--set learning_rate=0.002" in msg and "--set model.gridsize=2" in msg
    with pytest.raises(ConfigError, match=r"optimizer: adam in the checkpoint, sgd here"):
        api.train(_cfg(run_copy, nepochs=3, optimizer="sgd"), small_scan, resume=True)
    with pytest.raises(ConfigError, match=r"nepochs \(--epochs\) is 1, but .*last\.ckpt has "
                                          r"already trained 2 epochs; expected 2 or more"):
        api.train(_cfg(run_copy, nepochs=1), small_scan, resume=True)
    assert _state(run_copy) == before


def test_resume_refuses_another_scan_before_writing(run_copy, small_scan):
    """The checkpoint keeps its training scan's fingerprint: a resume on another scan, or
    on part of it, is refused; the same scan resumes."""
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    other = simulate_scan(SimulationConfig(N=32, n_positions=144, photons_per_pattern=1e5,
                                           seed=4))
    before = _state(run_copy)
    with pytest.raises(ConfigError, match=r"training scan .* is not the one .*last\.ckpt was "
                                          r"trained on \(its diffraction patterns differ.*--data"):
        api.train(_cfg(run_copy, nepochs=3), other, resume=True)
    with pytest.raises(ConfigError, match=r"n_patterns: 144 there, 100 here"):
        api.train(_cfg(run_copy, nepochs=3), small_scan.subset(list(range(100))), resume=True)
    assert _state(run_copy) == before


def test_resume_may_change_how_long_and_where_it_runs(run_copy, small_scan):
    """nepochs upwards, the logger, the progress bar, threads and what follows training
    may change on resume; the checkpoint then records the new values."""
    cfg = _cfg(run_copy, nepochs=3, execution={"logger": "csv", "num_threads": 1},
               save_reconstruction=True)
    res = api.train(cfg, small_scan, resume=True)
    assert [h["epoch"] for h in res.history] == [0, 1, 2]
    raw = torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)
    assert raw["hyper_parameters"]["config"]["nepochs"] == 3
    assert raw["hyper_parameters"]["scan_fingerprint"]["n_patterns"] == small_scan.n_patterns


def test_a_checkpoint_without_fingerprint_resumes_unchecked(run_copy, small_scan, caplog):
    """A checkpoint from before the scan fingerprint resumes with a log line saying the
    scan was not compared."""
    import logging

    last = run_copy / "checkpoints" / "last.ckpt"
    raw = torch.load(last, map_location="cpu", weights_only=True)
    del raw["hyper_parameters"]["scan_fingerprint"]
    torch.save(raw, last)
    with caplog.at_level(logging.INFO, logger="ptychopinn.training.checks"):
        api.train(_cfg(run_copy), small_scan, resume=True)
    assert "records no fingerprint of its training scan" in caplog.text


# ---------------------------------------------------------------------- time
def test_fit_time_adds_up_across_resumes(run_copy, trained, small_scan):
    """The bundle's fit_seconds counts from the run's start: a resume of a finished run
    (nothing left to train) keeps the first session's time (it kept only its own
    moment before); resuming an unfinished one adds its epochs' time."""
    first = api.load_bundle(trained).manifest["extra"]["fit_seconds"]
    api.train(_cfg(run_copy), small_scan, resume=True)
    again = api.load_bundle(run_copy).manifest["extra"]["fit_seconds"]
    assert again == pytest.approx(first, abs=0.25)
    api.train(_cfg(run_copy, nepochs=3), small_scan, resume=True)
    assert api.load_bundle(run_copy).manifest["extra"]["fit_seconds"] > again


def test_the_cosine_schedule_counts_time_from_the_runs_start() -> None:
    """The schedule's time fraction is the Trainer's Timer's, which a resume restores:
    with half of max_time_minutes spent before the resume, the schedule is half-way."""
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    from ptychopinn.training.module import PINNModule

    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25}, max_time_minutes=4.0,
                         nepochs=100000)
    module = PINNModule(cfg.model_dump(mode="json"), [1, 32, 32])
    timer = Timer(duration={"minutes": 4})
    timer.load_state_dict({"time_elapsed": {"train": 120.0}})
    module._trainer = SimpleNamespace(callbacks=[timer], num_training_batches=10,
                                      global_step=0)
    assert module._progress() == pytest.approx(0.5, abs=0.01)


# ------------------------------------------------------------------ signals
class _Signal:
    """A Lightning callback that, in ``epoch``, raises KeyboardInterrupt (what Ctrl-C
    does) or sends this process SIGTERM (what a batch scheduler does)."""

    def __new__(cls, epoch: int, how: str):
        import lightning as L

        class _CB(L.Callback):
            def on_train_batch_end(self, trainer, *args) -> None:
                if trainer.current_epoch != epoch:
                    return
                if how == "sigint":
                    raise KeyboardInterrupt
                assert signal.getsignal(signal.SIGTERM) not in (None, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        return _CB()


@pytest.mark.parametrize(("how", "status"), [("sigint", 130), ("sigterm", 143)])
def test_an_interrupted_fit_writes_no_bundle_and_says_resume(tmp_path, small_scan, how,
                                                             status):
    """SIGINT or SIGTERM during fit: `TrainingInterrupted` (a KeyboardInterrupt) with the
    signal's exit status and the way on, no bundle as if finished (SIGTERM ended with
    status 0 and no word before); --resume then finishes the run."""
    from ptychopinn.training.runner import train_pytorch

    run = tmp_path / "run"
    sigint = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as err:
        train_pytorch(_cfg(run, nepochs=3), small_scan, extra_callbacks=[_Signal(1, how)])
    assert err.value.exit_status == status
    assert isinstance(err.value, KeyboardInterrupt)
    assert f"training interrupted ({how.upper()})" in str(err.value)
    assert "holds 1 finished epoch: continue with --resume" in str(err.value)
    assert not (run / "model.ptychopinn.safetensors").exists()
    assert signal.getsignal(signal.SIGINT) == sigint  # Lightning ignored it while stopping
    res = api.train(_cfg(run, nepochs=3), small_scan, resume=True)
    assert [h["epoch"] for h in res.history] == [0, 1, 2]


def test_the_cli_returns_130_with_the_resume_hint(tmp_path, small_scan, monkeypatch, capsys):
    """Through `ptychopinn train`, an interrupted fit ends with status 130 and the hint."""
    from ptychopinn.cli.main import main
    from ptychopinn.data.npz import save_npz
    from ptychopinn.training import runner

    data = tmp_path / "scan.npz"
    save_npz(small_scan, data)
    make = runner._make_trainer

    def interrupted(L, cfg, run_dir, callbacks, train_dl):  # noqa: N803
        return make(L, cfg, run_dir, [*callbacks, _Signal(0, "sigint")], train_dl)

    monkeypatch.setattr(runner, "_make_trainer", interrupted)
    code = main(["train", "--data", str(data), "--output-dir", str(tmp_path / "run"),
                 "--set", "model.N=32", "--set", "model.n_filters_scale=0.25", "--epochs", "2",
                 "--accelerator", "cpu", "--no-progress", "-q"])
    assert code == 130
    assert "--resume" in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.ptychopinn.safetensors").exists()


def test_sigterm_interrupts_a_loop_without_lightning() -> None:
    """`sigterm_interrupts` (the TensorFlow loop's): SIGTERM raises TrainingInterrupted
    instead of killing the process; the previous handler is back afterwards."""
    import time

    from ptychopinn.training.interrupt import sigterm_interrupts

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as err, sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert err.value.signum == signal.SIGTERM and err.value.exit_status == 143
    assert signal.getsignal(signal.SIGTERM) == before


# ------------------------------------------------------------------ tensorflow
def test_tensorflow_resume_checks_interrupts_and_time(tmp_path, small_scan, monkeypatch):
    """The TensorFlow backend records its options and scan beside its checkpoints
    (resume.json) and refuses a resume with others before writing; an interrupted loop
    raises TrainingInterrupted; the fit time adds up across resumes."""
    pytest.importorskip("tensorflow")
    from ptychopinn.simulation import SimulationConfig, simulate_scan
    from ptychopinn.tf import training as tf_training

    run = tmp_path / "run"

    def cfg(**kw) -> TrainingConfig:
        return _cfg(run, backend="tensorflow", batch_size=32, nepochs=kw.pop("nepochs", 1),
                    execution={"logger": "none", "accelerator": "auto"}, **kw)

    api.train(cfg(), small_scan)
    state = json.loads((run / "checkpoints" / "resume.json").read_text())
    assert state["epochs_done"] == 1 and state["config"]["backend"] == "tensorflow"
    first = api.load_bundle(run).manifest["extra"]["fit_seconds"]
    before = _state(run)
    with pytest.raises(ConfigError, match=r"learning_rate: 0.002 in the checkpoint, 0.01 here"):
        api.train(cfg(nepochs=2, learning_rate=1e-2), small_scan, resume=True)
    other = simulate_scan(SimulationConfig(N=32, n_positions=144, photons_per_pattern=1e5,
                                           seed=4))
    with pytest.raises(ConfigError, match="is not the one"):
        api.train(cfg(nepochs=2), other, resume=True)
    assert _state(run) == before

    run_batches = tf_training._run_batches
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(tf_training, "_run_batches", interrupted)
    with pytest.raises(TrainingInterrupted, match=r"\(SIGINT\).*holds 1 finished epoch"):
        api.train(cfg(nepochs=2), small_scan, resume=True)
    monkeypatch.setattr(tf_training, "_run_batches", run_batches)
    res = api.train(cfg(nepochs=2), small_scan, resume=True)
    assert calls and [h["epoch"] for h in res.history] == [0, 1]
    assert api.load_bundle(run).manifest["extra"]["fit_seconds"] >= first


def test_cli_exit_status_and_words_of_an_interruption(monkeypatch, capsys):
    """The CLI returns the signal's status (143 for a scheduler's SIGTERM) with the
    runner's words; Ctrl-C in a command that is not a training does not suggest --resume."""
    import signal

    from ptychopinn.cli import commands
    from ptychopinn.cli.main import main

    def stopped(args):
        raise TrainingInterrupted(signal.SIGTERM, "training interrupted (SIGTERM): continue")

    def ctrl_c(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "cmd_train", stopped)
    assert main(["train", "--data", "s.npz", "--output-dir", "run", "-q"]) == 143
    assert "interrupted: training interrupted (SIGTERM)" in capsys.readouterr().err
    monkeypatch.setattr(commands, "cmd_infer", ctrl_c)
    assert main(["infer", "--model", "m", "--data", "s.npz", "-q"]) == 130
    err = capsys.readouterr().err
    assert "interrupted." in err and "--resume" not in err
    # pretrain has no --resume: its interruption says to run it again, with the status
    monkeypatch.setattr(commands, "cmd_pretrain", stopped)
    assert main(["pretrain", "--probe", "p.npz", "--output-dir", "pre", "-q"]) == 143
    err = capsys.readouterr().err
    assert "run pretrain into the same folder again" in err and "continue" not in err
