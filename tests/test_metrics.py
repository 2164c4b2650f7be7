"""Analytic tests of the evaluation metrics (alignment, scores, FRC, pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from ptychopinn.errors import DataError
from ptychopinn.metrics import (
    complex_nrmse,
    evaluate,
    evaluate_files,
    fourier_ring_correlation,
    half_bit_threshold,
    illuminated_region,
    mae,
    match_amplitude_scale,
    psnr,
    register,
    remove_global_phase,
    remove_phase_ramp,
    resolution_cutoffs,
    ring_pixel_counts,
    shift_image,
    ssim,
    write_metrics_json,
)
from ptychopinn.metrics.align import fit_phase_plane

SHAPE = (97, 83)
CROP = (slice(20, 117), slice(20, 103))  # a 97 x 83 region of the 137 x 123 object
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def smooth_object(shape=(137, 123), sigma=3.0, seed=0) -> np.ndarray:
    """A smooth random complex object: amplitude 0.3..0.9, phase of ~1 rad spread."""
    rng = np.random.default_rng(seed)
    re = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    im = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    amp = 0.6 + 0.3 * np.tanh(re / re.std())
    return amp * np.exp(1j * im / im.std())


def cnoise(shape, level, rng) -> np.ndarray:
    return level * (rng.normal(size=shape) + 1j * rng.normal(size=shape))


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return smooth_object()


# ------------------------------------------------------------------ scores


def test_identical_images_score_perfectly(truth):
    m = evaluate(truth.copy(), truth, crop=CROP)
    assert m["amp_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert m["phase_ssim"] == pytest.approx(1.0, abs=1e-9)
    for key in ("amp_psnr", "phase_psnr"):  # infinite (stored as null) or rounding-limited
        assert m[key] is None or m[key] > 200
    assert m["complex_nrmse"] < 1e-9
    assert m["amp_mae"] < 1e-12 and m["phase_mae"] < 1e-12
    assert np.allclose(m["shift_px"], 0.0)
    assert np.allclose(m["frc"]["values"], 1.0, atol=1e-9)
    assert m["frc"]["frc_half_bit"] is None and m["frc"]["frc_0.5"] is None
    assert m["crop"] == [[20, 117], [20, 103]] and m["shape"] == list(SHAPE)
    json.dumps(m, allow_nan=False)  # strictly JSON-serialisable


def test_score_functions_analytic():
    a = np.zeros(SHAPE)
    b = np.full(SHAPE, 0.1)
    assert psnr(a, a, 1.0) == np.inf
    assert psnr(b, a, 1.0) == pytest.approx(20.0)  # mse 0.01 at range 1
    assert psnr(b, a, 2.0) == pytest.approx(20.0 + 20 * np.log10(2))
    assert mae(b, a) == pytest.approx(0.1)
    assert ssim(b + 0.5, b + 0.5, 1.0) == pytest.approx(1.0)
    z = np.exp(1j * np.linspace(0, 3, 20)).reshape(4, 5)
    assert complex_nrmse(1.1 * z, z) == pytest.approx(0.1)
    with pytest.raises(DataError, match="same shape"):
        ssim(a, a[:-1], 1.0)
    with pytest.raises(DataError, match="data_range"):
        psnr(a, b, 0.0)


# --------------------------------------------------------------- alignment


@pytest.mark.parametrize("shift", [(3.0, -2.0), (2.3, -1.7), (-0.4, 0.35)])
def test_shift_is_recovered(truth, shift):
    moving = shift_image(truth, shift)
    aligned, est = register(truth, moving, region=CROP)
    assert np.allclose(est, -np.asarray(shift), atol=0.05)
    assert np.abs(aligned[CROP] - truth[CROP]).max() < 0.05
    m = evaluate(moving, truth, crop=CROP)
    assert np.allclose(m["shift_px"], -np.asarray(shift), atol=0.05)
    assert m["amp_ssim"] > 0.99 and m["phase_ssim"] > 0.99
    assert m["complex_nrmse"] < 0.02


def test_crop_excludes_pixels_shifted_in_from_outside(truth):
    m = evaluate(shift_image(truth, (2.3, -1.7)), truth)  # whole frame, no crop
    # aligned[y] = moving[y + 2.3] needs y + 2.3 < 137; aligned[:, x] = moving[:, x - 1.7]
    assert m["crop"] == [[0, 134], [2, 123]]


def test_shift_recovered_despite_blur_and_noise(truth):
    rng = np.random.default_rng(3)
    moving = shift_image(truth, (-6.6, 4.1))
    moving = ndimage.gaussian_filter(moving.real, 1.2) + 1j * ndimage.gaussian_filter(
        moving.imag, 1.2
    )
    moving = moving + cnoise(truth.shape, 0.05, rng)
    m = evaluate(moving, truth, crop=CROP)
    assert np.allclose(m["shift_px"], [6.6, -4.1], atol=0.1)


def test_global_phase_and_ramp_are_removed(truth):
    yy, xx = np.indices(truth.shape)
    moving = truth * np.exp(1j * (2.0 + 0.03 * yy - 0.02 * xx))
    bare = evaluate(moving, truth, crop=CROP, register=False, remove_ramp=False)
    m = evaluate(moving, truth, crop=CROP)
    assert bare["phase_ssim"] < 0.9  # the ramp alone ruins the phase score
    assert m["phase_ssim"] > 0.99 and m["complex_nrmse"] < 1e-6
    assert np.allclose(m["phase_ramp_rad_per_px"], [0.03, -0.02], atol=1e-6)
    assert np.allclose(m["shift_px"], 0.0, atol=0.05)
    # a phase offset alone: remove_global_phase recovers the truth exactly
    assert np.allclose(remove_global_phase(truth * np.exp(0.7j), truth), truth)
    g = evaluate(truth * np.exp(-2.5j), truth, crop=CROP, remove_ramp=False)
    assert g["phase_offset_rad"] == pytest.approx(-2.5) and g["phase_ssim"] > 0.999


def test_wrapped_phase_plane_fit():
    rng = np.random.default_rng(5)
    yy, xx = np.indices(SHAPE)
    field = np.exp(1j * (0.7 * yy - 0.45 * xx + 1.0)) * (1 + 0.1 * rng.normal(size=SHAPE))
    assert np.allclose(fit_phase_plane(field), [0.7, -0.45, 1.0], atol=1e-3)


def test_remove_phase_ramp_real_plane():
    rng = np.random.default_rng(6)
    yy, xx = np.indices(SHAPE)
    base = remove_phase_ramp(rng.normal(size=SHAPE) * 0.01)  # plane-free
    ph = base + 0.2 * yy - 0.1 * xx + 3.0
    assert np.allclose(remove_phase_ramp(ph), base, atol=1e-9)
    mask = np.zeros(SHAPE, bool)
    mask[10:40, 5:60] = True
    garbage = ph.copy()
    garbage[~mask] = 100.0  # ignored by the fit
    out = remove_phase_ramp(garbage, mask)
    assert np.allclose(out[mask], remove_phase_ramp(ph, mask)[mask], atol=1e-9)
    with pytest.raises(DataError, match="real"):
        remove_phase_ramp(np.exp(1j * ph))


def test_amplitude_scale_is_matched(truth):
    amp = np.abs(truth)
    assert match_amplitude_scale(2.5 * amp, amp) == pytest.approx(0.4)
    m = evaluate(3.0 * truth, truth, crop=CROP)
    assert m["amp_scale"] == pytest.approx(1 / 3.0, rel=1e-6)
    assert m["amp_ssim"] > 0.999
    raw = evaluate(3.0 * truth, truth, crop=CROP, match_scale=False)
    assert raw["amp_scale"] == 1.0 and raw["amp_ssim"] < m["amp_ssim"] - 0.1


def test_illuminated_region_box_and_errors():
    pos = np.array([[30.0, 25.0], [60.5, 70.0], [45.0, 40.0]])
    rows, cols = illuminated_region((100, 90), pos, 16)
    assert (rows.start, rows.stop) == (26, 65)  # 30-4 .. 60.5+4 inclusive
    assert (cols.start, cols.stop) == (21, 75)
    rows, cols = illuminated_region((50, 50), pos, 16, margin_px=0)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (30, 50, 25, 50)  # clipped
    with pytest.raises(DataError, match="does not overlap"):
        illuminated_region((10, 10), pos + 100, 16)
    with pytest.raises(DataError, match="positions_px"):
        illuminated_region((10, 10), pos[:, 0], 16)


# --------------------------------------------------------------- noise/FRC


def test_scores_degrade_monotonically_with_noise(truth):
    rng = np.random.default_rng(7)
    noise = cnoise(truth.shape, 1.0, rng)
    rows = []
    for level in (0.01, 0.03, 0.1, 0.3):
        m = evaluate(truth + level * noise, truth, crop=CROP)
        rows.append(
            (m["amp_ssim"], m["phase_ssim"], m["amp_psnr"], m["phase_psnr"],
             float(np.mean(m["frc"]["values"])), -m["complex_nrmse"])
        )
    rows = np.array(rows)
    assert np.all(np.diff(rows, axis=0) < 0), rows


def test_frc_identical_and_independent():
    rng = np.random.default_rng(8)
    a = rng.normal(size=SHAPE) + 1j * rng.normal(size=SHAPE)
    b = rng.normal(size=SHAPE) + 1j * rng.normal(size=SHAPE)
    freq, same = fourier_ring_correlation(a, a)
    assert freq[0] > 0 and freq[-1] < 0.5 and np.all(np.diff(freq) > 0)
    assert np.allclose(same, 1.0)
    _, ind = fourier_ring_correlation(a, b)
    n = ring_pixel_counts(SHAPE)
    assert len(n) == len(freq) == SHAPE[1] // 2
    assert abs(ind[2:].mean()) < 0.05
    assert np.all(np.abs(ind[2:]) < 5 / np.sqrt(n[2:]))  # ~ N(0, 1/sqrt(n)) per ring
    with pytest.raises(DataError, match="same shape"):
        fourier_ring_correlation(a, b[:-1])


def test_frc_cutoff_of_low_pass_copy():
    rng = np.random.default_rng(9)
    shape = (129, 121)
    signal = rng.normal(size=shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    low = np.fft.ifft2(np.fft.fft2(signal) * (np.hypot(fy, fx) < 0.2)).real
    a = signal + 0.05 * rng.normal(size=shape)
    b = low + 0.05 * rng.normal(size=shape)
    freq, values = fourier_ring_correlation(a, b)
    cut = resolution_cutoffs(freq, values, ring_pixel_counts(shape))
    assert cut["frc_half_bit"] == pytest.approx(0.2, abs=0.02)
    assert cut["frc_0.5"] == pytest.approx(0.2, abs=0.02)
    assert cut["frc_0.5_resolution_px"] == pytest.approx(1 / cut["frc_0.5"])


def test_thresholds_and_crossing_interpolation():
    assert half_bit_threshold(1) == pytest.approx(1.0, abs=1e-4)
    assert half_bit_threshold(10**12) == pytest.approx(0.2071 / 1.2071, abs=1e-5)
    freq = np.linspace(0.01, 0.49, 49)
    values = 1.0 - 2.0 * freq  # crosses 0.5 at f = 0.25
    cut = resolution_cutoffs(freq, values, np.full(49, 10**8))
    assert cut["frc_0.5"] == pytest.approx(0.25)
    assert cut["frc_half_bit"] == pytest.approx((1 - 0.2071 / 1.2071) / 2, abs=1e-4)
    none = resolution_cutoffs(freq, np.ones(49), np.full(49, 100))
    assert none["frc_0.5"] is None and none["frc_half_bit_resolution_px"] is None


# ---------------------------------------------------------------- pipeline


def test_evaluate_with_positions_and_different_shapes(truth):
    pos = np.stack(np.meshgrid(np.arange(40, 100, 8.0), np.arange(36, 90, 8.0)), -1)
    pos = pos.reshape(-1, 2)
    bigger = np.ones((150, 140), complex)
    bigger[: truth.shape[0], : truth.shape[1]] = shift_image(truth, (0.5, -1.0))
    m = evaluate(bigger, truth, positions_px=pos, patch_size=32)
    assert m["crop"] == [[32, 105], [28, 93]]  # centres y 40..96, x 36..84, +- N/4
    assert np.allclose(m["shift_px"], [-0.5, 1.0], atol=0.05)
    assert m["amp_ssim"] > 0.99
    metrics, rc, tc = evaluate(bigger, truth, positions_px=pos, patch_size=32,
                               return_aligned=True)
    assert rc.shape == tc.shape == tuple(metrics["shape"])
    assert np.iscomplexobj(rc)


def test_evaluate_rejects_bad_input(truth):
    with pytest.raises(DataError, match="complex"):
        evaluate(np.abs(truth), truth)
    with pytest.raises(DataError, match="patch_size"):
        evaluate(truth, truth, positions_px=np.array([[50.0, 50.0]]))
    with pytest.raises(DataError, match="crop"):
        evaluate(truth, truth, crop=(slice(0, 3), slice(0, 50)))


def _write_truth(path: Path, obj: np.ndarray, pos: np.ndarray, n: int) -> None:
    np.savez(path, objectGuess=obj.astype(np.complex64), xcoords=pos[:, 1], ycoords=pos[:, 0],
             probeGuess=np.ones((n, n), np.complex64))


@pytest.mark.parametrize("how", ["frame_offset_px", "positions", "registration"])
def test_evaluate_files_maps_recon_frame(tmp_path, truth, how):
    pos = np.stack(np.meshgrid(np.arange(40, 100, 6.0), np.arange(36, 90, 6.0)), -1)
    pos = pos.reshape(-1, 2)
    _write_truth(tmp_path / "truth.npz", truth, pos, 32)
    offset = np.array([7.4, -4.0])  # truth_frame = recon_frame + offset
    padded = np.pad(truth, 10, mode="reflect")  # truth[y, x] == padded[y + 10, x + 10]
    recon = shift_image(padded, (-0.4, 0.0))[17:, 6:]  # recon[y - 7.4, x + 4] == truth[y, x]
    recon = (recon * np.exp(0.4j)).astype(np.complex64)
    arrays = {"object": recon, "amplitude": np.abs(recon), "phase": np.angle(recon)}
    if how != "registration":
        arrays["positions_px"] = pos - offset
    if how == "frame_offset_px":
        arrays["frame_offset_px"] = offset
    np.savez(tmp_path / "reconstruction.npz", **arrays)
    m = evaluate_files(tmp_path / "reconstruction.npz", tmp_path / "truth.npz")
    assert m["frame_offset_source"] == how
    if how != "registration":
        assert np.allclose(m["frame_offset_px"], offset)
    assert m["amp_ssim"] > 0.99 and m["phase_ssim"] > 0.99
    assert m["complex_nrmse"] < 0.01
    out = write_metrics_json(m, tmp_path / "sub" / "metrics.json")
    assert json.loads(out.read_text()) == json.loads(json.dumps(m))
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.json"]


def test_evaluate_files_errors(tmp_path, truth):
    np.savez(tmp_path / "r.npz", amplitude=np.abs(truth))
    _write_truth(tmp_path / "t.npz", truth, np.array([[60.0, 60.0]]), 32)
    with pytest.raises(DataError, match="'object'"):
        evaluate_files(tmp_path / "r.npz", tmp_path / "t.npz")
    with pytest.raises(DataError, match="not found"):
        evaluate_files(tmp_path / "missing.npz", tmp_path / "t.npz")


def test_write_metrics_json_is_strict(tmp_path):
    p = write_metrics_json({"a": float("inf"), "b": np.float32(1.5), "c": np.arange(2)},
                           tmp_path / "m.json")
    assert json.loads(p.read_text()) == {"a": None, "b": 1.5, "c": [0, 1]}


@pytest.mark.realdata
def test_run1084_object_against_a_degraded_copy():
    path = DATA / "run1084" / "run1084_recon.npz"
    if not path.exists():
        pytest.skip(f"real data not found at {path} (needs ../shared/data)")
    with np.load(path, allow_pickle=False) as f:
        obj, xs, ys = f["objectGuess"], f["xcoords"], f["ycoords"]
        n = f["probeGuess"].shape[-1]
    pos = np.stack([ys, xs], 1)
    rng = np.random.default_rng(10)
    moving = shift_image(obj, (1.3, -0.6)) * np.exp(0.3j) + cnoise(obj.shape, 0.02, rng)
    m = evaluate(moving, obj, positions_px=pos, patch_size=n)
    assert np.allclose(m["shift_px"], [-1.3, 0.6], atol=0.1)
    assert m["amp_ssim"] > 0.8 and m["phase_ssim"] > 0.8


def test_featureless_reconstruction_is_not_wildly_shifted():
    """A flat reconstruction must not be 'registered' by a huge wrap-around shift."""
    from ptychopinn.metrics import evaluate

    rng = np.random.default_rng(0)
    truth = np.exp(1j * rng.normal(size=(90, 80))) * (0.5 + rng.random((90, 80)))
    flat = np.full_like(truth, 0.7)
    m = evaluate(flat, truth)
    assert max(abs(s) for s in m["shift_px"]) <= 8.0
    assert m["amp_ssim"] < 0.2
