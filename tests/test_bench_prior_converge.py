"""benchmarks/bench_prior_converge.py: the scan prior's decisions, as train and infer make
them; bad arguments are refused before any work, by name."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_prior_converge as bench  # noqa: E402

from ptychopinn.data import save_npz  # noqa: E402
from ptychopinn.models.scan_prior import INFERENCE_PLAIN_CONVERGE_PASSES  # noqa: E402
from ptychopinn.physics.coverage import scan_coverage  # noqa: E402
from ptychopinn.simulation import SimulationConfig, simulate_scan  # noqa: E402


@pytest.fixture(scope="module")
def strong_scan():
    """-3..3 rad: the plain halves disagree after 4 passes and the converge blocks are kept
    (tests/test_prior_train_converge.py)."""
    return simulate_scan(SimulationConfig(N=32, n_positions=100, seed=5,
                                          phase_range_rad=(-3.0, 3.0)))


@pytest.mark.parametrize("argv, message", [
    (["--converge-passes", "-1"], "--converge-passes must be >= 0"),
    (["--scan", "/nonexistent/scan.npz"], "--scan /nonexistent/scan.npz: no such file"),
    (["--only", "no-such-scan"], "--only ['no-such-scan'] matches none"),
    (["--priors", "bogus"], "invalid choice: 'bogus'"),
])
def test_bad_arguments_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert message in capsys.readouterr().err


def test_a_scan_without_its_truth_is_refused_by_file(tmp_path):
    scan = simulate_scan(SimulationConfig(N=32, seed=3, n_positions=16))
    path = tmp_path / "no_truth.npz"
    save_npz(replace(scan, object=None), path)
    with pytest.raises(SystemExit, match="no_truth.npz: the scan has no 'objectGuess'"):
        bench.load(str(path))


def test_the_priors_decide_as_train_and_infer_do(strong_scan):
    """Where the halves disagree, inference's prior and training's (model.prior_train_converge)
    are the same estimate, with the converge blocks kept and the momentum; without the
    blocks (infer's --prior-converge-passes 0, model.prior_train_converge off) the prior runs
    the 4 passes asked for and is another, less converged, estimate."""
    infer, _ = bench.prior(strong_scan, *bench.PRIORS["inference"])
    train, _ = bench.prior(strong_scan, *bench.PRIORS["training"])
    assert 4 < infer.passes == train.passes <= 4 + INFERENCE_PLAIN_CONVERGE_PASSES
    assert infer.phase_momentum == train.phase_momentum > 0
    assert torch.equal(infer.estimate.canvas, train.estimate.canvas)
    for name in ("inference, no blocks", "training, no blocks"):
        plain, _ = bench.prior(strong_scan, *bench.PRIORS[name])
        assert plain.passes == 4 and plain.phase_momentum == 0
        assert plain.agreement < infer.agreement
        assert bench.scores(plain.estimate, strong_scan)[0] < bench.scores(
            infer.estimate, strong_scan)[0]


def test_inference_passes_infers_defaults():
    """The inference priors take infer's pass options (None: the defaults, 2 extra passes
    and the momentum where the halves agree): a textured scan's prior runs 4 + 2 passes at
    inference, 4 at training."""
    scan = simulate_scan(SimulationConfig(N=32, n_positions=100, seed=3))
    infer, _ = bench.prior(scan, *bench.PRIORS["inference"])
    train, _ = bench.prior(scan, *bench.PRIORS["training"])
    assert infer.agreement >= infer.agreement_threshold
    assert (infer.passes, train.passes) == (6, 4)


def test_a_scan_file_gets_its_rows(strong_scan, tmp_path, capsys):
    path = tmp_path / "strong.npz"
    save_npz(strong_scan, path)
    bench.main(["--only", "no-such-scan", "--scan", str(path), "--priors", "inference",
                "--converge-passes", "4"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| strong.npz |")]
    assert len(rows) == 2
    cells = [row.split(" | ") for row in rows]
    infer, _ = bench.prior(strong_scan, *bench.PRIORS["inference"])
    assert (cells[0][1], cells[0][3]) == ("inference", f"4 + {infer.passes - 4}")
    assert (cells[1][1], cells[1][3]) == ("inference, 4 converge passes", "4 + 4")
    coverage = scan_coverage(strong_scan.positions_px, torch.from_numpy(strong_scan.probe))
    assert cells[0][2] == cells[1][2] == f"{coverage:.2f}"
    # the blocks tried: each kept one's passes, then the first dropped one, if any
    blocks = infer.converge_blocks
    assert blocks and cells[0][6] == bench.blocks_read(blocks)
    assert cells[0][6].split("; ")[0].startswith(f"{4 + 4}: {blocks[0].rise:+.3f}")
    assert [b.kept for b in blocks] == [True] * (len(blocks) - 1) + [blocks[-1].kept]
    assert cells[0][6].count(" kept") == infer.passes // 4 - 1


def test_the_training_prior_is_the_one_train_builds(strong_scan, tmp_path, monkeypatch):
    """The script's training prior is bit for bit the one `ptychopinn train` builds for the
    scan with train's defaults (the same probe, scale, recipe and options)."""
    from ptychopinn import api
    from ptychopinn.config import TrainingConfig
    from ptychopinn.models.scan_prior import ScanPrior

    built = []
    real = ScanPrior.for_config.__func__

    def spy(cls, *args, **kw):
        built.append(real(cls, *args, **kw))
        raise RuntimeError("stop after the prior")

    monkeypatch.setattr(ScanPrior, "for_config", classmethod(spy))
    cfg = TrainingConfig.model_validate(
        {"output_dir": str(tmp_path / "run"), "model": {"N": 32},
         "execution": {"logger": "none", "progress_bar": False, "accelerator": "cpu"}})
    with pytest.raises(RuntimeError, match="stop after the prior"):
        api.train(cfg, strong_scan)
    monkeypatch.undo()
    ours, _ = bench.prior(strong_scan, *bench.PRIORS["training"])
    assert len(built) == 1 and built[0].passes == ours.passes > 4
    assert torch.equal(built[0].estimate.canvas, ours.estimate.canvas)


def test_the_inference_prior_is_the_one_infer_builds(strong_scan, tmp_path, monkeypatch):
    """The script's inference prior is bit for bit the one `ptychopinn infer` builds with
    its defaults for a model trained with train's defaults on the scan (one epoch: the
    prior reads the model's probe and its initial scale, which training leaves)."""
    from ptychopinn import api
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig, TrainingConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.models.scan_prior import ScanPrior

    run = tmp_path / "run"
    cfg = TrainingConfig.model_validate(
        {"output_dir": str(run), "model": {"N": 32}, "nepochs": 1,
         "execution": {"logger": "none", "progress_bar": False, "accelerator": "cpu"}})
    api.train(cfg, strong_scan)
    built = []
    real = ScanPrior.for_config.__func__

    def spy(cls, *args, **kw):
        built.append(real(cls, *args, **kw))
        return built[-1]

    monkeypatch.setattr(ScanPrior, "for_config", classmethod(spy))
    rec = reconstruct_pytorch(load_pinn(run), strong_scan,
                              InferenceConfig(execution={"accelerator": "cpu"}))
    monkeypatch.undo()
    ours, _ = bench.prior(strong_scan, *bench.PRIORS["inference"])
    assert len(built) == 1 and built[0].passes == ours.passes == rec.prior_passes > 4
    assert built[0].converge_blocks == ours.converge_blocks
    assert torch.equal(built[0].estimate.canvas, ours.estimate.canvas)
