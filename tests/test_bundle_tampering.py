"""Tampered and foreign bundles: every one is a `BundleError` naming the file and what
was wrong, never a traceback from numpy, torch or TensorFlow, and never a silent load.

Each case starts from a tiny real bundle and re-writes it as another writer would:
new tensors and/or manifest, with a recomputed ``tensors_sha256`` (`format.checksum`),
so that the weights checksum alone cannot catch it. ``seal`` also recomputes the
manifest digest (a writer that knows it); without it the digest is dropped, as in
bundles of earlier versions.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from ptychopinn.bundle.format import BUNDLE_FILENAME, FORMAT_VERSION, checksum, read_bundle
from ptychopinn.bundle.pytorch import load_pinn, save_pinn
from ptychopinn.config import TrainingConfig
from ptychopinn.errors import BundleError
from ptychopinn.models.pinn import PtychoPINN

MANIFEST_KEY = "ptychopinn_manifest"
DIGEST_KEY = "manifest_sha256"
CONV = "generator.stem.0.weight"  # a 4-d convolution weight of every generator
PROBE = "physics.probe::complex"


@pytest.fixture(scope="module")
def bundle_bytes(tmp_path_factory) -> bytes:
    """A tiny real bundle (N=32, n_filters_scale 0.25), as `save_pinn` writes it."""
    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25})
    probe = torch.polar(torch.rand(1, 32, 32) + 0.1, torch.rand(1, 32, 32))
    model = PtychoPINN(cfg.model, probe, log_intensity_scale=1.3).eval()
    path = save_pinn(tmp_path_factory.mktemp("tiny"), model, cfg)
    return path.read_bytes()


@pytest.fixture
def bundle(tmp_path, bundle_bytes) -> Path:
    path = tmp_path / BUNDLE_FILENAME
    path.write_bytes(bundle_bytes)
    return path


def _parts(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    return json.loads(header["__metadata__"][MANIFEST_KEY]), load_file(path)


def _digest(manifest: dict) -> str:
    """The manifest digest as the format documents it (written here independently)."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _rewrite(
    path: Path, *, tensors=None, change=None, manifest_text=None, seal: bool = False
) -> Path:
    """Write ``path`` again as another writer: ``tensors`` and/or ``change(manifest)``,
    with a recomputed weights checksum; ``seal`` recomputes the manifest digest."""
    manifest, stored = _parts(path)
    tensors = stored if tensors is None else tensors
    if change is not None:
        change(manifest)
    if isinstance(manifest, dict):
        manifest["tensors_sha256"] = checksum(tensors)
        manifest.pop(DIGEST_KEY, None)
        if seal:
            manifest[DIGEST_KEY] = _digest(manifest)
    text = json.dumps(manifest) if manifest_text is None else manifest_text
    save_file(tensors, str(path), metadata={MANIFEST_KEY: text})
    return path


def _with(path: Path, name: str, value: np.ndarray) -> dict[str, np.ndarray]:
    _, tensors = _parts(path)
    tensors[name] = value
    return tensors


def _refused(path: Path, *needles: str) -> str:
    """`load_pinn` refuses ``path`` with a message naming the file and each needle."""
    with pytest.raises(BundleError) as info:
        load_pinn(path)
    msg = str(info.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def test_untouched_and_rewritten_bundles_load(bundle) -> None:
    """The rewrite itself is faithful: with nothing changed the bundle loads, sealed or
    without a digest (as written by earlier versions)."""
    assert load_pinn(bundle).config.model.N == 32
    assert load_pinn(_rewrite(bundle)).config.model.N == 32
    assert DIGEST_KEY not in _parts(bundle)[0]
    assert load_pinn(_rewrite(bundle, seal=True)).config.model.N == 32


# --------------------------------------------------------------- 1. shapes and names
def test_wrong_tensor_shape_is_named(bundle) -> None:
    _, tensors = _parts(bundle)
    expected = str(tuple(tensors[CONV].shape))
    _rewrite(bundle, tensors=_with(bundle, CONV, np.zeros((3, 3), np.float32)), seal=True)
    _refused(bundle, repr(CONV), "(3, 3)", expected)


def test_probe_shape_disagreeing_with_config_n(bundle) -> None:
    _rewrite(bundle, change=lambda m: m["extra"].update(probe_shape=[1, 64, 64]), seal=True)
    _refused(bundle, "extra.probe_shape", "[1, 64, 64]", "model.N is 32")


def test_config_n_disagreeing_with_the_tensors(bundle) -> None:
    """Config N and probe_shape agree with each other (64), not with the 32-pixel weights:
    the tensors that differ are named with both shapes."""

    def change(m):
        m["config"]["model"]["N"] = 64
        m["extra"]["probe_shape"] = [1, 64, 64]

    _rewrite(bundle, change=change, seal=True)
    _refused(bundle, "'physics.probe'", "(1, 32, 32)", "(1, 64, 64)", "model.N 64")


def test_missing_and_unexpected_tensors_are_named(bundle) -> None:
    _, tensors = _parts(bundle)
    del tensors[CONV]
    tensors["bogus.weight"] = np.zeros(3, np.float32)
    _rewrite(bundle, tensors=tensors, seal=True)
    _refused(bundle, f"missing 1 tensor(s): [{CONV!r}]", "unexpected 1 tensor(s): ['bogus.weight']")


def test_complex_tensor_stored_as_real_is_named(bundle) -> None:
    _, tensors = _parts(bundle)
    tensors["physics.probe"] = tensors.pop(PROBE)[..., 0].copy()
    _rewrite(bundle, tensors=tensors, seal=True)
    _refused(bundle, "'physics.probe' has dtype float32, expected complex64")


# --------------------------------------------------------------- 2. manifest structure
def test_manifest_that_is_a_list(bundle) -> None:
    _rewrite(bundle, manifest_text="[1, 2, 3]")
    _refused(bundle, "manifest must be a JSON object", "list")


def test_extra_that_is_a_list(bundle) -> None:
    _rewrite(bundle, change=lambda m: m.update(extra=[1, 2]), seal=True)
    _refused(bundle, "'extra'", "[1, 2]")


@pytest.mark.parametrize("shape", ["abc", [1, -1, 32], [1, 32.0, 32], [True, 32, 32], [32]])
def test_bad_probe_shape(bundle, shape) -> None:
    _rewrite(bundle, change=lambda m: m["extra"].update(probe_shape=shape), seal=True)
    _refused(bundle, "extra.probe_shape", repr(shape)[:20])


@pytest.mark.parametrize("key", ["history", "config", "backend"])
def test_fields_of_the_wrong_type(bundle, key) -> None:
    _rewrite(bundle, change=lambda m: m.update({key: 3}), seal=True)
    _refused(bundle, repr(key), "an integer 3")


def test_complex_tensor_with_last_axis_not_2(bundle) -> None:
    _rewrite(bundle, tensors=_with(bundle, PROBE, np.zeros((1, 32, 32, 3), np.float32)))
    _refused(bundle, repr(PROBE), "(1, 32, 32, 3)", "last axis of 2")


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_complex_tensor_of_another_dtype(bundle, dtype) -> None:
    """Not reinterpreted bit for bit as complex64 (float64 gave garbage values silently)."""
    _, tensors = _parts(bundle)
    _rewrite(bundle, tensors=_with(bundle, PROBE, tensors[PROBE].astype(dtype)), seal=True)
    _refused(bundle, repr(PROBE), f"dtype {np.dtype(dtype)}", "expected float32")


# --------------------------------------------------------------- 3. dtypes and values
@pytest.mark.parametrize("dtype", [np.float16, np.int64, np.float64])
def test_weights_of_another_dtype(bundle, dtype) -> None:
    _, tensors = _parts(bundle)
    _rewrite(bundle, tensors=_with(bundle, CONV, tensors[CONV].astype(dtype)), seal=True)
    _refused(bundle, repr(CONV), f"dtype {np.dtype(dtype)}", "expected float32")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", [CONV, "log_intensity_scale", PROBE])
def test_non_finite_weights(bundle, name, bad) -> None:
    _, tensors = _parts(bundle)
    value = tensors[name].copy()
    value.reshape(-1)[0] = bad
    _rewrite(bundle, tensors=_with(bundle, name, value), seal=True)
    _refused(bundle, repr(name), "1 non-finite value(s)")


# --------------------------------------------------------------- 4. manifest digest
def test_saved_manifest_carries_its_digest(bundle) -> None:
    manifest, _ = _parts(bundle)
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest[DIGEST_KEY] == _digest(manifest)
    assert read_bundle(bundle)[0][DIGEST_KEY] == manifest[DIGEST_KEY]


def _edit_without_resealing(path: Path, change) -> Path:
    manifest, tensors = _parts(path)
    change(manifest)
    save_file(tensors, str(path), metadata={MANIFEST_KEY: json.dumps(manifest)})
    return path


def test_edited_manifest_is_refused(bundle) -> None:
    manifest, _ = _parts(bundle)
    before = manifest["config"]["model"]["prior_iterations"]
    _edit_without_resealing(
        bundle, lambda m: m["config"]["model"].update(prior_iterations=before + 3)
    )
    _refused(bundle, "manifest was modified after saving", manifest[DIGEST_KEY])


def test_manifest_digest_covers_the_weights_checksum(bundle) -> None:
    """New weights with a recomputed ``tensors_sha256`` but the old digest: refused."""
    manifest, tensors = _parts(bundle)
    tensors[CONV] = tensors[CONV] + np.float32(1)
    manifest["tensors_sha256"] = checksum(tensors)
    save_file(tensors, str(bundle), metadata={MANIFEST_KEY: json.dumps(manifest)})
    _refused(bundle, "manifest was modified after saving")


def test_bundles_without_a_digest_load_as_before(bundle) -> None:
    """Earlier versions wrote no digest: such a manifest loads, edits and all."""
    _rewrite(bundle, change=lambda m: m["history"].append({"epoch": 0, "train/loss": 1.0}))
    assert DIGEST_KEY not in _parts(bundle)[0]
    assert load_pinn(bundle).history == [{"epoch": 0, "train/loss": 1.0}]


def test_existing_bundles_still_load() -> None:
    """Bundles saved by earlier versions (the repository's models/ folder) load unchanged."""
    models = Path(__file__).resolve().parents[1] / "models"
    found = sorted(models.rglob(BUNDLE_FILENAME))[:2] if models.is_dir() else []
    if not found:
        pytest.skip("no saved bundles in models/")
    for path in found:
        manifest, _ = _parts(path)
        assert DIGEST_KEY not in manifest  # written before the digest existed
        loaded = load_pinn(path)
        assert loaded.config.model.N == manifest["config"]["model"]["N"]
        assert loaded.model.probe.shape[-1] == manifest["extra"]["probe_shape"][-1]


# --------------------------------------------------------------- 5-7
@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_format_version_must_be_an_integer(bundle, version) -> None:
    _rewrite(bundle, change=lambda m: m.update(format_version=version), seal=True)
    _refused(bundle, f"format version {version!r}")


@pytest.mark.parametrize("backend", [None, "jax"])
def test_missing_or_unknown_backend(bundle, backend) -> None:
    import ptychopinn as pp

    def change(m):
        if backend is None:
            del m["backend"]
        else:
            m["backend"] = backend

    _rewrite(bundle, change=change, seal=True)
    found = "no 'backend'" if backend is None else repr(backend)
    for load in (pp.load_bundle, load_pinn):
        with pytest.raises(BundleError) as info:
            load(bundle)
        assert str(bundle) in str(info.value) and found in str(info.value)
    with pytest.raises(BundleError, match="jax|no 'backend'"):
        pp.reconstruct(bundle, None)


def test_config_without_model_section(bundle) -> None:
    _rewrite(bundle, change=lambda m: m["config"].pop("model"), seal=True)
    _refused(bundle, "config has no 'model' section")


# --------------------------------------------------------------- the TensorFlow loader
@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def test_tensorflow_loader_refuses_tampered_bundles(tf, bundle) -> None:
    """The same checks hold when the tensorflow backend converts a pytorch bundle; a weight
    of another rank is named instead of failing in the layout conversion."""
    from ptychopinn.tf.bundle import load_tf

    assert load_tf(bundle).backend == "tensorflow"
    raw = bundle.read_bytes()
    cases = [
        (dict(tensors=_with(bundle, CONV, np.zeros((3, 3), np.float32))), repr(CONV)),
        (dict(change=lambda m: m["extra"].update(probe_shape="abc")), "extra.probe_shape"),
        (dict(change=lambda m: m.update(backend="jax")), "'jax'"),
        (
            dict(tensors=_with(bundle, CONV, np.full_like(_parts(bundle)[1][CONV], np.nan))),
            "non-finite",
        ),
    ]
    for kwargs, needle in cases:
        bundle.write_bytes(raw)
        _rewrite(bundle, seal=True, **kwargs)
        with pytest.raises(BundleError) as info:
            load_tf(bundle)
        assert str(bundle) in str(info.value) and needle in str(info.value)
