"""Probe-specific pretraining: the tiled synthetic scan, `pretrain`, fine-tuning, errors."""

from __future__ import annotations

import contextlib
import io
import json
import shlex

import numpy as np
import pytest

from ptychopinn.errors import ConfigError, DataError
from ptychopinn.grouping import group_neighbors
from ptychopinn.pretraining import (
    PretrainConfig,
    build_pretraining_scan,
    mean_neighbor_distance,
    resolve_source,
)
from ptychopinn.pretraining.dataset import expected_counts, sample_object
from ptychopinn.simulation import HELD_OUT_IMAGES, make_probe

N = 32
TINY = [
    "--set", "model.n_filters_scale=0.125",
    "--set", "execution.logger=none",
    "--set", "batch_size=16",
    "--set", "val_fraction=0",
]


@pytest.fixture(scope="module")
def probe() -> np.ndarray:
    return make_probe("disk", N, diameter_px=12.8, fresnel_number=4.0)


def _tile_of(scan, t: int) -> dict:
    return scan.metadata["pretraining"]["tiles"][t]


def test_tiled_scan_is_valid_and_groups_stay_in_one_tile(probe):
    recipe = PretrainConfig(n_objects=5, positions_per_object=40, jitter_px=1.0)
    scan = build_pretraining_scan(probe, recipe, step_px=4.0, photons=1e5, seed=3,
                                  neighbor_count=12)
    assert scan.n_patterns == 5 * 40 and scan.patch_size == N
    assert sorted(set(scan.scan_index.tolist())) == [0, 1, 2, 3, 4]
    h, w = scan.object.shape
    lo, hi = scan.positions_px - N / 2, scan.positions_px + N / 2
    assert lo.min() >= 0 and hi[:, 0].max() <= h and hi[:, 1].max() <= w
    regions = []
    for t in range(5):
        tile = _tile_of(scan, t)
        (r0, c0), (th, tw) = tile["origin_px"], tile["shape"]
        sel = scan.scan_index == t
        # every patch of the tile lies inside the tile's own region ...
        assert lo[sel, 0].min() >= r0 and hi[sel, 0].max() <= r0 + th
        assert lo[sel, 1].min() >= c0 and hi[sel, 1].max() <= c0 + tw
        regions.append((r0, r0 + th, c0, c0 + tw))
    # ... and regions never overlap
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            assert a[1] <= b[0] or b[1] <= a[0] or a[3] <= b[2] or b[3] <= a[2]
    for k in (6, 12):
        groups = group_neighbors(scan.positions_px, 2, neighbor_count=k, seed=1)
        tiles = scan.scan_index[groups.indices]
        assert np.all(tiles == tiles[:, :1]), f"a neighbour group (K={k}) spans two tiles"


def test_probe_is_the_given_one_and_noise_free_data_follow_the_physics(probe):
    recipe = PretrainConfig(n_objects=3, positions_per_object=20, poisson_noise=False,
                            dose_range=(0.2, 5.0))
    scan = build_pretraining_scan(probe, recipe, step_px=5.0, photons=2e4, seed=0)
    p = scan.probe[0]
    ratio = p[np.abs(probe) > 0.1] / probe[np.abs(probe) > 0.1]
    assert np.allclose(ratio, ratio[0], rtol=1e-4) and abs(ratio[0].imag) < 1e-6
    # whatever each tile's dose, the stored amplitudes are those of the common probe scale
    lam = expected_counts(scan.object, scan.probe, scan.positions_px)
    np.testing.assert_allclose(scan.counts, lam, rtol=2e-3, atol=1e-3)
    assert np.mean(lam.sum(axis=(1, 2))) == pytest.approx(2e4, rel=1e-4)


def test_dose_per_tile_is_in_range_and_noise_matches_the_dose(probe):
    recipe = PretrainConfig(n_objects=12, positions_per_object=16, dose_range=(0.25, 4.0),
                            object_kinds=("grf",))
    scan = build_pretraining_scan(probe, recipe, step_px=4.0, photons=3e4, seed=7)
    doses = np.array([t["dose_factor"] for t in scan.metadata["pretraining"]["tiles"]])
    assert np.all((doses >= 0.25) & (doses <= 4.0))
    assert doses.min() < 0.6 and doses.max() > 1.6  # spread over the range, not constant
    assert scan.metadata["pretraining"]["dose_range"] == [0.25, 4.0]
    lam = expected_counts(scan.object, scan.probe, scan.positions_px)
    for t, f in enumerate(doses):
        sel = scan.scan_index == t
        # counts/f of a Poisson draw at f * lam: variance lam / f
        rel_var = np.sum((scan.counts[sel] - lam[sel]) ** 2) / np.sum(lam[sel])
        assert rel_var == pytest.approx(1.0 / f, rel=0.15)


def test_training_objects_never_use_held_out_pictures():
    rng = np.random.default_rng(0)
    used = set()
    for _ in range(40):
        _, info, style, amp, phase = sample_object(
            (48, 48), rng, N, ("textured", "image"))
        used.update(info.get("pictures", []))
        assert 0 <= amp[0] <= amp[1] <= 1.0 and phase[0] <= phase[1]
    assert used and not used & set(HELD_OUT_IMAGES)


def test_scan_gives_probe_step_dose_and_pattern(small_scan):
    src = resolve_source(None, small_scan)
    assert src.N == small_scan.patch_size
    np.testing.assert_array_equal(src.probe, small_scan.probe)
    assert src.step_px == pytest.approx(mean_neighbor_distance(small_scan.positions_px))
    assert src.step_px == pytest.approx(4.0, rel=0.2)  # N/8 raster with 0.5 px jitter
    assert src.photons == pytest.approx(1e5, rel=0.05)
    recipe = PretrainConfig(n_objects=2, positions_per_object=30, pattern="scan")
    big = build_pretraining_scan(src.probe, recipe, step_px=src.step_px, photons=src.photons,
                                 template_px=src.template_px)
    for t in range(2):
        pos = big.positions_px[big.scan_index == t]
        assert mean_neighbor_distance(pos) == pytest.approx(src.step_px, rel=0.25)


# ------------------------------------------------------ pretrain, fine-tune, errors
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, probe):
    from ptychopinn.cli.main import main

    d = tmp_path_factory.mktemp("pre")
    np.save(d / "probe.npy", probe.astype(np.complex64))
    run = d / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([
            "pretrain", "--probe", str(d / "probe.npy"), "--output-dir", str(run),
            "--n-objects", "2", "--accelerator", "cpu", "--seed", "4", "-q",
            "--set", "nepochs=1", "--set", "pretrain.positions_per_object=32",
            "--set", "pretrain.dose_range=[0.5,2]", *TINY,
        ])
    assert rc == 0
    (d / "stdout.txt").write_text(out.getvalue())
    return run


def test_pretrain_writes_bundle_and_recipe(pretrained, probe):
    from ptychopinn.api import load_bundle

    assert (pretrained / "model.ptychopinn.safetensors").is_file()
    meta = json.loads((pretrained / "pretraining.json").read_text())
    assert meta["status"] == "done" and meta["N"] == N and meta["seed"] == 4
    assert meta["dose_range"] == [0.5, 2.0] and len(meta["tiles"]) == 2
    assert meta["n_patterns"] == 64 and meta["step_px"] == pytest.approx(N / 8)
    assert "probe.npy" in meta["probe_source"] and meta["model_type"] == "pinn"
    model = load_bundle(pretrained)
    assert model.config.model.N == N and model.config.save_reconstruction is False
    saved = np.load(pretrained / "pretraining_probe.npz")["probeGuess"]
    assert saved.shape == (1, N, N)
    r = saved[0][np.abs(probe) > 0.1] / probe[np.abs(probe) > 0.1]
    assert np.allclose(r, r[0], rtol=1e-4)


def test_finetune_starts_from_pretrained_weights(pretrained, small_scan, tmp_path):
    from ptychopinn.api import load_bundle
    from ptychopinn.cli.main import main
    from ptychopinn.data.npz import save_npz
    from ptychopinn.models.registry import build_generator

    data = save_npz(small_scan, tmp_path / "scan.npz")
    # the command `pretrain` printed, as the user would paste it
    (hint,) = [ln for ln in (pretrained.parent / "stdout.txt").read_text().splitlines()
               if ln.startswith("fine-tune on a scan: ")]
    argv = shlex.split(hint.split(": ", 1)[1].replace("SCAN.npz", str(data)))[1:]
    assert argv[:2] == ["train", "--init"] and "model.n_filters_scale=0.125" in argv
    rc = main([
        *argv, "--output-dir", str(tmp_path / "ft"), "--epochs", "1", "--lr", "1e-9",
        "--accelerator", "cpu", "-q", "--set", "n_subsample=32",
        "--set", "save_reconstruction=false", *TINY,
    ])
    assert rc == 0
    def weights(gen) -> dict:
        return {k: v.detach().float() for k, v in gen.named_parameters()}

    before = weights(load_bundle(pretrained).model.generator)
    after = weights(load_bundle(tmp_path / "ft").model.generator)
    fresh = weights(build_generator(load_bundle(pretrained).config.model))
    diff = max(float((before[k] - after[k]).abs().max()) for k in before)
    far = max(float((before[k] - fresh[k]).abs().max()) for k in before)
    assert diff < 1e-5 < 1e-2 < far


def test_evaluate_generalisation_on_held_out_object(pretrained):
    from ptychopinn.pretraining import evaluate_generalisation

    out = evaluate_generalisation(pretrained, seed=11, images=("clock",), n_positions=25)
    (row,) = out["per_scan"]
    assert row["image"] == "clock" and row["n_patterns"] == 25, out
    assert -1 <= out["amp_ssim"] <= 1 and -1 <= out["phase_ssim"] <= 1, out
    assert out["ms_per_pattern"] > 0 and row["predict_seconds"] > 0, out


def test_missing_probe_and_scan_is_a_clear_cli_error(tmp_path, capsys):
    from ptychopinn.cli.main import main

    assert main(["pretrain", "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--probe" in err and "--scan" in err


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("scan.npz", {"diffraction": np.ones((2, N, N), np.float32)}, "probeGuess"),
        ("real.npy", np.ones((N, N), np.float32), "complex"),
        ("probe.txt", None, "suffix"),
        ("odd.npy", np.ones((40, 40), np.complex64), "model.N"),
    ],
)
def test_wrong_probe_file_names_the_file(tmp_path, name, content, needle):
    from ptychopinn.pretraining import load_probe

    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    elif content is None:
        path.write_text("not a probe")
    else:
        np.save(path, content)
    with pytest.raises(DataError) as exc:
        load_probe(path)
    assert str(path) in str(exc.value) and "--probe" in str(exc.value)
    assert needle in str(exc.value)


def test_options_are_checked(probe, small_scan, tmp_path):
    from ptychopinn.pretraining import load_probe, pretrain

    with pytest.raises(ConfigError, match="model.N"):
        resolve_source(None, small_scan, N=64)
    with pytest.raises(ConfigError, match="dose_range"):
        pretrain(probe, out_dir=tmp_path, recipe={"dose_range": [2.0, 1.0]})
    with pytest.raises(ConfigError, match="positions_per_object"):
        build_pretraining_scan(probe, PretrainConfig(positions_per_object=16, n_objects=1),
                               step_px=4.0, photons=1e4, neighbor_count=20)
    np.save(tmp_path / "p.npy", probe)
    assert load_probe(tmp_path / "p.npy", 64).shape == (1, 64, 64)  # padded to N


def test_supervised_switch_sets_the_model_type(tmp_path):
    from ptychopinn.pretraining.pretrain import _training_config

    cfg = _training_config(tmp_path, N, True, 1.0, 0, {"model": {"n_filters_scale": 0.5}})
    assert cfg.model.model_type == "supervised" and cfg.realspace_weight > 0
    assert cfg.model.n_filters_scale == 0.5 and cfg.save_reconstruction is False


def test_pretrain_no_progress_flag_hides_the_bar() -> None:
    from ptychopinn.cli.main import build_parser
    from ptychopinn.pretraining.cli import split_options

    args = build_parser().parse_args(["pretrain", "--scan", "s.npz", "--output-dir", "o",
                                      "--no-progress"])
    _, data = split_options(args)
    assert data["execution"]["progress_bar"] is False
    args = build_parser().parse_args(["pretrain", "--scan", "s.npz", "--output-dir", "o"])
    assert "execution" not in split_options(args)[1]
