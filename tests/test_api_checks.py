"""The Python API's entry points as a new user meets them after ``import ptychopinn as pp``:
every documented ``pp.`` name works after a plain import, wrong argument types are
TypeErrors naming the argument, ``train`` reads a scan file, ``reconstruct`` follows a
bundle's own backend unless one was chosen, and bad values name what was expected."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import ptychopinn as pp
from ptychopinn import api
from ptychopinn.errors import BundleError, ConfigError, DataError

DOCS = Path(__file__).resolve().parents[1] / "docs"
DOCUMENTED = ("usage.md", "backends.md", "pretraining.md", "ptychodus.md")


@pytest.fixture(scope="module")
def scan():
    return pp.simulate(pp.SimulationConfig(N=32, n_positions=16, seed=1))


@pytest.fixture(scope="module")
def scan_file(scan, tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.npz"
    pp.save_npz(scan, path)
    return path


# ------------------------------------------------------------------- documented names
def _documented_names() -> set[str]:
    names: set[str] = set()
    for doc in DOCUMENTED:
        names.update(
            re.findall(r"\bpp\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", (DOCS / doc).read_text())
        )
    return names


def test_documented_names_work_after_a_plain_import() -> None:
    """Each ``pp.X`` (and ``pp.X.Y``) of the docs resolves in a fresh interpreter where
    nothing but ``import ptychopinn`` ran (``pp.metrics`` included)."""
    names = sorted(_documented_names())
    assert "metrics.data_consistency" in names and "train" in names
    # the first part through the package's lazy lookup itself, so that a name is not
    # found only because resolving an earlier one imported its sub-package
    code = f"""
import sys
import ptychopinn as pp
bad = []
for name in {names!r}:
    head, *rest = name.split(".")
    try:
        obj = pp.__getattr__(head)
        for part in rest:
            obj = getattr(obj, part)
    except AttributeError as exc:
        bad.append(f"{{name}}: {{exc}}")
bad += [n for n in ("metrics", "refinement") if n not in dir(pp)]
print(bad)
sys.exit(int(bool(bad)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------- argument types
CASES = {
    "train: an InferenceConfig": (
        lambda s: pp.train(pp.InferenceConfig(), s),
        ["train(config, scan)", "config must be a TrainingConfig", "found InferenceConfig"],
    ),
    "train: swapped": (
        lambda s: pp.train(s, pp.TrainingConfig()),
        ["config must be a TrainingConfig", "found Scan", "swapped"],
    ),
    "train: an array as the scan": (
        lambda s: pp.train(pp.TrainingConfig(), s.diffraction),
        ["scan must be a Scan", "found ndarray of shape (16, 32, 32)"],
    ),
    "reconstruct: a TrainingConfig": (
        lambda s: pp.reconstruct("run", s, pp.TrainingConfig()),
        [
            "reconstruct(model, scan, config)",
            "config must be an InferenceConfig",
            "found TrainingConfig",
        ],
    ),
    "reconstruct: the scan forgotten": (
        lambda s: pp.reconstruct("run", pp.InferenceConfig()),
        ["scan must be a Scan", "found InferenceConfig", "the scan is missing"],
    ),
    "reconstruct: a number as the model": (
        lambda s: pp.reconstruct(5, s),
        ["model must be a loaded model", "found int"],
    ),
    "reconstruct: swapped": (
        lambda s: pp.reconstruct(s, "run"),
        ["model must be a loaded model", "found Scan", "swapped"],
    ),
    "reconstruct: an array as the scan": (
        lambda s: pp.reconstruct("run", np.zeros((3, 32, 32))),
        ["scan must be a Scan", "found ndarray of shape (3, 32, 32)"],
    ),
    "simulate: a TrainingConfig": (
        lambda s: pp.simulate(pp.TrainingConfig()),
        ["simulate(config, path)", "config must be a SimulationConfig", "found TrainingConfig"],
    ),
    "simulate: a path as the config": (
        lambda s: pp.simulate("x.npz"),
        ["config must be a SimulationConfig", "found str 'x.npz'", "path"],
    ),
    "load_bundle: a number": (
        lambda s: pp.load_bundle(5),
        ["load_bundle(path, backend)", "path must be", "found int"],
    ),
    "refine: a path as the scan": (
        lambda s: pp.refine("scan.npz"),
        [
            "refine(scan, initial_object)",
            "scan must be a Scan",
            "found str 'scan.npz'",
            "load_scan",
        ],
    ),
    "refine: swapped": (
        lambda s: pp.refine(np.ones((64, 64), np.complex64), s),
        ["scan must be a Scan", "found ndarray", "swapped"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_wrong_argument_types_are_type_errors_naming_the_argument(
    case, scan, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, and no 'run' exists here
    call, parts = CASES[case]
    with pytest.raises(TypeError) as ei:
        call(scan)
    for part in parts:
        assert part in str(ei.value), (case, str(ei.value))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------- train reads a file
def test_train_accepts_a_scan_file(scan, scan_file, tmp_path, monkeypatch) -> None:
    """A path is read as `reconstruct` reads it and the backend trains on the Scan."""
    seen = {}

    def fake_train(config, got, resume=False, **kw):
        seen["scan"] = got
        return "trained"

    monkeypatch.setattr(api, "get_backend", lambda name: SimpleNamespace(train=fake_train))
    cfg = pp.TrainingConfig(output_dir=str(tmp_path / "run"), model={"N": 32})
    for path in (scan_file, str(scan_file)):
        assert pp.train(cfg, path) == "trained"
        assert isinstance(seen["scan"], pp.Scan)
        np.testing.assert_array_equal(seen["scan"].diffraction, scan.diffraction)
    with pytest.raises(DataError, match="missing.npz"):
        pp.train(cfg, tmp_path / "missing.npz")


# ------------------------------------------------------------------- bundle's own backend
@pytest.fixture(scope="module")
def tf_bundle(scan, tmp_path_factory):
    """A TensorFlow bundle (a small PyTorch model converted and saved by the TF backend)."""
    pytest.importorskip("tensorflow")
    import torch

    from ptychopinn.backends import get_backend
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe
    from ptychopinn.tf.bundle import save_tf

    cfg = pp.TrainingConfig(model={"N": 32, "n_filters_scale": 0.25})
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), cfg.model.probe_scale)
    torch.manual_seed(0)
    torch_run = tmp_path_factory.mktemp("torchrun")
    save_pinn(torch_run, PtychoPINN(cfg.model, probe).eval(), cfg)
    loaded = get_backend("tensorflow").load_bundle(torch_run)
    tf_run = tmp_path_factory.mktemp("tfrun")
    save_tf(tf_run, loaded.model, cfg)
    return tf_run


def test_reconstruct_follows_the_bundles_backend_unless_one_is_chosen(tf_bundle, scan) -> None:
    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.cli.main import build_parser

    for cfg in (None, pp.InferenceConfig(figures=False)):
        recon = pp.reconstruct(tf_bundle, scan, cfg)
        assert recon.backend == "tensorflow"
        assert np.isfinite(recon.object).all()
    # an explicit choice keeps its meaning: the pytorch backend refuses a TF bundle
    with pytest.raises(BundleError, match="tensorflow"):
        pp.reconstruct(tf_bundle, scan, pp.InferenceConfig(backend="pytorch"))
    # `ptychopinn infer` without --backend leaves the choice to the bundle
    args = build_parser().parse_args(["infer", "--model", str(tf_bundle), "--data", "s.npz"])
    assert "backend" not in infer_config_from_args(args).model_fields_set
    args = build_parser().parse_args(["infer", "--model", "m", "--backend", "pytorch"])
    assert "backend" in infer_config_from_args(args).model_fields_set


def test_options_the_backend_cannot_honour_are_refused_before_it_loads(
        tf_bundle, scan, tmp_path, monkeypatch) -> None:
    """Half precision, mps, DDP or mlflow with backend 'tensorflow' are refused before
    TensorFlow loads (seconds) and before any probe retrieval or position correction
    (minutes): `get_backend` is never reached, for training and for inference, and for
    a bundle whose own backend is TensorFlow as well as for an explicit choice."""
    def not_reached(name):
        raise AssertionError(f"get_backend({name!r}) was reached")

    monkeypatch.setattr(api, "get_backend", not_reached)
    slow = {"probe_refine_epochs": 3}
    for execution in ({"precision": "16-mixed"}, {"accelerator": "mps"},
                      {"strategy": "ddp"}, {"logger": "mlflow"}):
        cfg = pp.TrainingConfig(backend="tensorflow", output_dir=str(tmp_path / "run"),
                                model={"N": 32}, execution=execution, **slow)
        with pytest.raises(ConfigError, match="tensorflow backend"):
            pp.train(cfg, scan)
    assert not (tmp_path / "run").exists()
    bf16 = {"execution": {"precision": "bf16-mixed"}, "position_refine_epochs": 3}
    for cfg in (pp.InferenceConfig(**bf16),  # the bundle's own backend
                pp.InferenceConfig(backend="tensorflow", **bf16)):
        with pytest.raises(ConfigError, match="precision='bf16-mixed'.*tensorflow backend"):
            pp.reconstruct(tf_bundle, scan, cfg)


def test_a_loaded_model_runs_on_its_own_backend_and_another_choice_is_refused(
        tf_bundle, scan, monkeypatch) -> None:
    """A loaded model cannot switch backends: an explicit other ``config.backend`` is a
    ConfigError naming both, before the position correction's minutes (it was silently
    ignored, and the options checked against the backend that did not run)."""
    import ptychopinn.refinement as refinement

    def not_reached(*a, **k):
        raise AssertionError("correct_positions ran before the refusal")

    monkeypatch.setattr(refinement, "correct_positions", not_reached)
    loaded_tf = pp.load_bundle(tf_bundle)
    with pytest.raises(ConfigError, match=r"'pytorch' but the model given is a loaded "
                                          r"'tensorflow' model"):
        pp.reconstruct(loaded_tf, scan, pp.InferenceConfig(backend="pytorch",
                                                           position_refine_epochs=3))


def test_a_loaded_pytorch_model_refuses_backend_tensorflow(scan, tmp_path) -> None:
    import torch

    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe

    cfg = pp.TrainingConfig(model={"N": 32, "n_filters_scale": 0.25})
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), cfg.model.probe_scale)
    save_pinn(tmp_path, PtychoPINN(cfg.model, probe).eval(), cfg)
    loaded = pp.load_bundle(tmp_path)
    with pytest.raises(ConfigError, match=r"load_bundle\(path, backend='tensorflow'\)"):
        pp.reconstruct(loaded, scan, pp.InferenceConfig(backend="tensorflow"))
    assert pp.reconstruct(loaded, scan, pp.InferenceConfig(backend="pytorch",
                                                           figures=False)).backend == "pytorch"


def test_callbacks_with_backend_tensorflow_are_refused_before_any_work(scan, tmp_path,
                                                                       monkeypatch) -> None:
    def not_reached(name):
        raise AssertionError(f"get_backend({name!r}) was reached")

    monkeypatch.setattr(api, "get_backend", not_reached)
    cfg = pp.TrainingConfig(backend="tensorflow", output_dir=str(tmp_path / "run"),
                            model={"N": 32})
    with pytest.raises(ConfigError, match=r"callbacks are Lightning callbacks.*'tensorflow'"):
        pp.train(cfg, scan, callbacks=[object()])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("execution", [{"devices": 2}, {"strategy": "ddp"}, {"num_nodes": 2}])
def test_inference_on_several_devices_is_refused_not_ignored(tmp_path, scan, execution,
                                                            monkeypatch) -> None:
    """Inference runs on one device: several devices, DDP or nodes were silently ignored;
    now a ConfigError naming them, before the bundle's backend loads; `infer` has no
    --devices flag."""
    from ptychopinn.cli.main import build_parser

    def not_reached(name):
        raise AssertionError(f"get_backend({name!r}) was reached")

    import torch

    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe

    cfg = pp.TrainingConfig(model={"N": 32, "n_filters_scale": 0.25})
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), cfg.model.probe_scale)
    save_pinn(tmp_path, PtychoPINN(cfg.model, probe).eval(), cfg)
    monkeypatch.setattr(api, "get_backend", not_reached)
    with pytest.raises(ConfigError, match=r"inference runs on one device.*" +
                       next(iter(execution))):
        pp.reconstruct(tmp_path, scan, pp.InferenceConfig(execution=execution))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["infer", "--model", "m", "--data", "s", "--devices", "2"])


@pytest.mark.parametrize(("backend", "planted", "other"), [
    ("tensorflow", "last.ckpt", "pytorch"), ("pytorch", "checkpoint", "tensorflow")])
def test_resume_of_the_other_backends_run_says_which_backend_before_loading(
        scan, tmp_path, monkeypatch, backend, planted, other) -> None:
    """--resume on a folder holding the other backend's checkpoint named that backend
    only by omission ('start without --resume', which is then refused); now it says
    which backend trained there, before either framework loads."""
    def not_reached(name):
        raise AssertionError(f"get_backend({name!r}) was reached")

    monkeypatch.setattr(api, "get_backend", not_reached)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / planted).write_bytes(b"x")
    cfg = pp.TrainingConfig(backend=backend, output_dir=str(tmp_path / "run"), model={"N": 32})
    with pytest.raises(ConfigError, match=rf"holds a '{other}' training: resume it with "
                                          rf"--backend {other}, or start again with "
                                          "--overwrite"):
        pp.train(cfg, scan, resume=True)


def test_init_from_a_tensorflow_bundle_into_a_pytorch_training_is_refused_first(
        tf_bundle, scan, tmp_path) -> None:
    from ptychopinn.training.checks import check_init_from

    cfg = pp.TrainingConfig(output_dir=str(tmp_path / "run"), init_from=str(tf_bundle),
                            model={"N": 32, "n_filters_scale": 0.25})
    with pytest.raises(ConfigError, match=r"init_from \(--init\) .*'tensorflow' bundle "
                                          r"cannot start a 'pytorch' training"):
        check_init_from(cfg)


def test_training_on_a_gpu_torch_does_not_see_is_refused_before_the_run(scan, tmp_path) -> None:
    import torch

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("a GPU is present: 'gpu' is honoured here")
    cfg = pp.TrainingConfig(output_dir=str(tmp_path / "run"), execution={"accelerator": "gpu"},
                            model={"N": 32, "n_filters_scale": 0.25}, nepochs=1)
    with pytest.raises(ConfigError, match=r"--accelerator gpu \(execution.accelerator\): "
                                          "expected a device this machine has; torch finds no "
                                          "CUDA GPU"):
        pp.train(cfg, scan)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------- bad values
def test_unknown_backend_of_load_bundle_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError) as ei:
        pp.load_bundle(tmp_path, backend="jax")
    assert isinstance(ei.value, ValueError)  # callers catching ValueError still do
    msg = str(ei.value)
    assert "'pytorch', 'tensorflow'" in msg and "'jax'" in msg and "backend" in msg


def test_evaluate_names_both_shapes_when_their_common_region_is_too_small() -> None:
    with pytest.raises(DataError) as ei:
        pp.metrics.evaluate(np.ones((10, 10), np.complex64), np.ones((5, 5), np.complex64))
    msg = str(ei.value)
    assert "(10, 10)" in msg and "(5, 5)" in msg and "differ" in msg and "crop" not in msg
