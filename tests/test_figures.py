"""Figures: every function writes a real PNG atomically and rejects bad input clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptychopinn.errors import DataError
from ptychopinn.figures import (
    nice_scale_bar,
    plot_comparison,
    plot_loss_curve,
    plot_positions,
    plot_probe,
    save_object_figures,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_px: int = 200, max_px: int = 4000) -> tuple[int, int]:
    from matplotlib.image import imread

    path = Path(path)
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = imread(path)
    h, w = img.shape[:2]
    assert min_px <= h <= max_px and min_px <= w <= max_px, (h, w)
    assert img[..., :3].std() > 0.01  # something was drawn
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return h, w


@pytest.fixture(scope="module")
def obj() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.indices((97, 83))
    amp = 0.7 + 0.2 * np.sin(yy / 6.0) * np.cos(xx / 9.0) + 0.01 * rng.normal(size=yy.shape)
    return amp * np.exp(1j * (0.8 * np.cos(xx / 7.0) + 0.3 * np.sin(yy / 5.0)))


@pytest.fixture(scope="module")
def positions() -> np.ndarray:
    g = np.stack(np.meshgrid(np.arange(30.0, 70, 5), np.arange(25.0, 60, 5)), -1)
    return g.reshape(-1, 2)


def test_object_figures_in_pixels_and_metres(tmp_path, obj, positions):
    paths = save_object_figures(obj, tmp_path, positions_px=positions)
    assert [p.name for p in paths] == ["reconstruction_amplitude.png", "reconstruction_phase.png"]
    for p in paths:
        assert_png(p)
    metres = save_object_figures(obj, tmp_path / "m", prefix="truth", pixel_size_m=8e-9)
    assert [p.name for p in metres] == ["truth_amplitude.png", "truth_phase.png"]
    for p in metres:
        assert_png(p)
    assert metres[0].read_bytes() != paths[0].read_bytes()  # different scale bar and layout
    # overwriting an existing figure works and leaves no temporary file
    again = save_object_figures(obj, tmp_path, positions_px=positions)
    assert_png(again[0])


def test_nice_scale_bar_lengths_and_units():
    assert nice_scale_bar(123) == (20.0, "20 px")
    assert nice_scale_bar(3) == (1.0, "1 px")
    length, label = nice_scale_bar(200, 10e-9)  # 2 µm wide: a quarter is 500 nm
    assert label == "500 nm" and length == pytest.approx(50.0)
    length, label = nice_scale_bar(500, 1e-6)  # 125 µm -> 100 µm
    assert label == "100 µm" and length == pytest.approx(100.0)
    assert nice_scale_bar(1000, 1e-5)[1] == "2 mm"
    with pytest.raises(DataError, match="pixel_size_m"):
        nice_scale_bar(100, -1.0)


def test_probe_single_and_multi_mode(tmp_path):
    yy, xx = np.indices((32, 32)) - 16
    mode = np.exp(-(yy**2 + xx**2) / 60.0) * np.exp(1j * (yy**2 + xx**2) / 40.0)
    h1, w1 = assert_png(plot_probe(mode, tmp_path / "probe1.png"))
    h3, w3 = assert_png(plot_probe(np.stack([mode, 0.3 * mode, 0.1 * mode]),
                                   tmp_path / "probe3.png", pixel_size_m=20e-9))
    assert w3 > 2 * w1  # one column per mode
    with pytest.raises(DataError, match="complex"):
        plot_probe(np.abs(mode), tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"\(M, N, N\)"):
        plot_probe(mode.ravel(), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_positions(tmp_path, positions):
    assert_png(plot_positions(positions, tmp_path / "a" / "pos.png", object_shape=(97, 83)))
    assert_png(plot_positions(positions, tmp_path / "pos2.png"))
    with pytest.raises(DataError, match="positions_px"):
        plot_positions(positions[:, 0], tmp_path / "bad.png")


def test_loss_curve_dict_and_per_epoch_list(tmp_path):
    hist = {
        "train_loss": [1.0, 0.5, 0.3, 0.2],
        "val_loss": [1.1, 0.6, 0.4, 0.35],
        "train_mae": [0.5, 0.4, 0.3, 0.25],
        "lr": [1e-3] * 4,
    }
    assert_png(plot_loss_curve(hist, tmp_path / "loss.png"))
    rows = [{"epoch": e, "train_loss": -1.0 + 0.1 * e, "val_loss": -0.9 + 0.1 * e}
            for e in range(5)]  # negative values (e.g. a log-likelihood): linear axis
    assert_png(plot_loss_curve(rows, tmp_path / "loss_rows.png"))
    with pytest.raises(DataError, match="history"):
        plot_loss_curve({}, tmp_path / "bad.png")
    with pytest.raises(DataError, match="history"):
        plot_loss_curve([1.0, 2.0], tmp_path / "bad.png")


def test_comparison_panel(tmp_path, obj, positions):
    from ptychopinn.metrics import evaluate, shift_image

    rng = np.random.default_rng(1)
    recon = shift_image(obj, (0.6, -1.2)) * np.exp(0.4j)
    recon = recon + 0.03 * (rng.normal(size=obj.shape) + 1j * rng.normal(size=obj.shape))
    metrics, rc, tc = evaluate(recon, obj, positions_px=positions, patch_size=24,
                               return_aligned=True)
    h, w = assert_png(plot_comparison(tc, rc, metrics, tmp_path / "cmp.png"))
    assert w > 1000  # three image columns
    assert_png(plot_comparison(tc, rc, None, tmp_path / "cmp_nometrics.png"))  # FRC computed
    with pytest.raises(ValueError, match="same shape|one shape"):
        plot_comparison(tc, rc[:-1], metrics, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="complex"):
        plot_comparison(np.abs(tc), rc, metrics, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_object_figures_reject_real_input(tmp_path, obj):
    with pytest.raises(ValueError, match="complex"):
        save_object_figures(np.abs(obj), tmp_path)
    with pytest.raises(ValueError, match="2-D"):
        save_object_figures(obj[None], tmp_path)
    with pytest.raises(ValueError, match="positions_px"):
        save_object_figures(obj, tmp_path, positions_px=np.zeros(3))
    assert list(tmp_path.iterdir()) == []
