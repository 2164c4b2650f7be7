"""The Siemens-star resolution metric on synthetic stars with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ptychopinn.errors import DataError
from ptychopinn.metrics import siemens_star_resolution

SIZE = 150
CENTER = (74.3, 75.6)
N_SPOKES = 16
OVERSAMPLE = 4


def star(blur_px: float = 0.0, center=CENTER, n: int = N_SPOKES, kind: str = "sine",
         disk_px: float = 0.0) -> np.ndarray:
    """A complex Siemens star (amplitude and phase spokes), rendered 4x oversampled,
    blurred by a Gaussian of ``blur_px`` (final pixels), then averaged down."""
    f = OVERSAMPLE
    y, x = np.mgrid[: SIZE * f, : SIZE * f]
    cy, cx = ((c + 0.5) * f - 0.5 for c in center)
    profile = np.cos(n * np.arctan2(y - cy, x - cx))
    if kind == "square":
        profile = np.sign(profile)
    profile[np.hypot(y - cy, x - cx) < disk_px * f] = 1.0  # a solid central disk
    amp = 1.0 - 0.2 * profile
    ph = 0.5 * profile
    obj = amp * np.exp(1j * ph)
    if blur_px > 0:
        obj = ndimage.gaussian_filter(obj.real, blur_px * f) + 1j * ndimage.gaussian_filter(
            obj.imag, blur_px * f)
    return obj.reshape(SIZE, f, SIZE, f).mean(axis=(1, 3))


def expected_radius(res, blur_px: float) -> float:
    """Where the analytic contrast exp(-s^2 n^2 / (2 r^2)), relative to its median over the
    metric's outer circles, first falls below the threshold walking inward."""
    r = res.radii
    c = np.exp(-(blur_px ** 2) * N_SPOKES ** 2 / (2 * r ** 2))
    outer = r >= r[-1] - 0.3 * (r[-1] - r[0])
    rel = c / np.median(c[outer])
    return float(r[np.nonzero(rel < res.threshold)[0][-1] + 1])


@pytest.mark.parametrize("blur", [1.5, 2.5])
def test_resolved_radius_matches_a_gaussian_blur(blur):
    res = siemens_star_resolution(star(blur), center=CENTER, n_spokes=N_SPOKES, search_px=0,
                                  max_radius=60)
    want = expected_radius(res, blur)
    assert abs(res.resolved_radius_px - want) <= 0.1 * want + 1.0, (res.resolved_radius_px, want)
    assert res.half_period_px == pytest.approx(np.pi * res.resolved_radius_px / N_SPOKES)


def test_more_blur_resolves_less():
    radii = [siemens_star_resolution(star(b), center=CENTER, n_spokes=N_SPOKES, search_px=0,
                                     max_radius=60).resolved_radius_px for b in (0.0, 1.0, 2.0, 3.0)]
    assert radii == sorted(radii) and radii[0] < radii[-1] - 10, radii


def test_modulation_at_a_radius_reads_the_curve():
    res = siemens_star_resolution(star(2.0), center=CENTER, n_spokes=N_SPOKES, search_px=0,
                                  max_radius=60)
    i = len(res.radii) // 2
    assert res.modulation_at(res.radii[i]) == pytest.approx(res.modulation[i])
    mid = 0.5 * (res.radii[i] + res.radii[i + 1])
    assert res.modulation_at(mid) == pytest.approx(0.5 * (res.modulation[i] + res.modulation[i + 1]))
    # at its own resolved radius an image is at or above the threshold, just inside below it
    r = res.resolved_radius_px
    assert res.modulation_at(r) >= res.threshold > res.modulation_at(r - 0.5)
    # a blurrier star is less modulated at the sharper one's radius
    blurred = siemens_star_resolution(star(3.0), center=CENTER, n_spokes=N_SPOKES, search_px=0,
                                      max_radius=60)
    assert blurred.modulation_at(r) < res.threshold
    assert np.isnan(res.modulation_at(res.radii[-1] + 1.0))



def test_contrast_is_in_the_images_units():
    """`contrast_at` is not relative to the outer circles: a blur lowers it by the
    analytic factor exp(-s^2 n^2 / (2 r^2)) at radius r, a scaled image scales it, and
    dividing by the mean amplitude undoes the scale."""
    kw = dict(center=CENTER, n_spokes=N_SPOKES, search_px=0, max_radius=60)
    sharp = siemens_star_resolution(star(0.0), **kw)
    blurred = siemens_star_resolution(star(2.0), **kw)
    for r in (30.0, 45.0):
        want = np.exp(-(2.0 ** 2) * N_SPOKES ** 2 / (2 * r ** 2))
        assert blurred.contrast_at(r) / sharp.contrast_at(r) == pytest.approx(want, rel=0.05)
    # the relative curves hide that the blur also lowered the outer spokes
    assert blurred.outer_modulation < sharp.outer_modulation
    img = star(2.0)
    scaled = siemens_star_resolution(3.0 * np.exp(0.7j) * img, **kw)
    assert scaled.contrast_at(40.0) == pytest.approx(3.0 * blurred.contrast_at(40.0), rel=1e-9)
    assert scaled.contrast_at(40.0, np.abs(3.0 * img).mean()) == pytest.approx(
        blurred.contrast_at(40.0, np.abs(img).mean()), rel=1e-9)
    with pytest.raises(DataError, match="unit must be > 0; got 0"):
        sharp.contrast_at(40.0, 0.0)

def test_center_and_spoke_count_are_found():
    img = star(1.0, kind="square")
    res = siemens_star_resolution(img, max_radius=55)
    assert res.n_spokes == N_SPOKES
    assert np.hypot(res.center[0] - CENTER[0], res.center[1] - CENTER[1]) < 0.3, res.center
    given = siemens_star_resolution(img, center=CENTER, n_spokes=N_SPOKES, search_px=0,
                                    max_radius=55)
    assert abs(res.resolved_radius_px - given.resolved_radius_px) <= 1.0


def test_off_centre_star_with_a_central_disk():
    """The start of the centre search needs no spoke count (radial gradients), so a star
    far from the image centre is found; its solid central disk bounds the resolved radius."""
    centre = (58.7, 96.2)
    img = star(0.5, center=centre, kind="square", disk_px=20.0)
    res = siemens_star_resolution(img, search_px=3.0)
    assert res.n_spokes == N_SPOKES
    assert np.hypot(res.center[0] - centre[0], res.center[1] - centre[1]) < 0.3, res.center
    assert 20.0 <= res.resolved_radius_px <= 23.0, res.resolved_radius_px


def test_global_phase_and_scale_do_not_matter():
    img = star(2.0)
    kw = dict(center=CENTER, n_spokes=N_SPOKES, search_px=0, max_radius=60)
    a = siemens_star_resolution(img, **kw)
    b = siemens_star_resolution(3.0 * np.exp(1.3j) * img, **kw)
    assert a.resolved_radius_px == b.resolved_radius_px
    np.testing.assert_allclose(a.modulation, b.modulation, rtol=1e-9)


def test_noise_lowers_the_resolution():
    rng = np.random.default_rng(0)
    kw = dict(center=CENTER, n_spokes=N_SPOKES, search_px=0, max_radius=60)
    clean = siemens_star_resolution(star(1.0), **kw).resolved_radius_px
    noise = rng.normal(size=(SIZE, SIZE)) + 1j * rng.normal(size=(SIZE, SIZE))
    noisy = siemens_star_resolution(star(1.0) + 0.3 * noise, **kw).resolved_radius_px
    assert noisy > clean


def test_bad_input_is_named():
    with pytest.raises(DataError, match="2-D image"):
        siemens_star_resolution(np.ones((3, 40, 40)))
    with pytest.raises(DataError, match="threshold"):
        siemens_star_resolution(star(), threshold=1.5)
    with pytest.raises(DataError, match="max_radius"):
        siemens_star_resolution(star(), center=CENTER, search_px=0, max_radius=90)
    with pytest.raises(DataError, match="NaN"):
        img = star()
        img[0, 0] = np.nan
        siemens_star_resolution(img)
    with pytest.raises(DataError, match="part"):
        siemens_star_resolution(star(), part="real")


def _reconstruction_npz(path, obj, refined=None):
    """A reconstruction.npz as ptychopinn infer writes it (positions covering the star)."""
    n = 32
    grid = np.arange(n // 2, SIZE - n // 2 + 1, 8.0)
    pos = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    arrays = {"object": obj.astype(np.complex64), "positions_px": pos,
              "probe": np.ones((n, n), np.complex64)}
    if refined is not None:
        arrays["refined_object"] = refined.astype(np.complex64)
    np.savez(path, **arrays)
    return path


def test_files_and_cli_report_both_objects(tmp_path, capsys):
    import json

    from ptychopinn.cli.main import main
    from ptychopinn.metrics.siemens import siemens_star_files

    p = _reconstruction_npz(tmp_path / "reconstruction.npz", star(2.5), refined=star(1.0))
    summary, results = siemens_star_files(p)
    assert set(summary) == {"reconstruction", "refined"}
    assert summary["reconstruction"]["n_spokes"] == summary["refined"]["n_spokes"] == N_SPOKES
    # the sharper refined star is resolved closer to its centre
    assert results["refined"].resolved_radius_px < results["reconstruction"].resolved_radius_px - 5

    out = tmp_path / "eval"
    assert main(["evaluate", "--reconstruction", str(p), "--siemens-star", "--output-dir",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Siemens star (refined): spokes resolved to a radius of" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["siemens_star"] == summary
    assert (out / "siemens_star.png").stat().st_size > 0


def test_files_name_the_missing_key(tmp_path):
    from ptychopinn.metrics.siemens import siemens_star_files

    p = tmp_path / "r.npz"
    np.savez(p, amplitude=np.ones((8, 8)))
    with pytest.raises(DataError, match="missing key 'object'"):
        siemens_star_files(p)
    with pytest.raises(DataError, match="not found"):
        siemens_star_files(tmp_path / "nope.npz")


def test_files_without_geometry_use_the_whole_object(tmp_path):
    """A reconstruction.npz without a probe (no patch size) is analysed whole, with the
    same answer for the same star."""
    from ptychopinn.metrics.siemens import siemens_star_files

    p = tmp_path / "bare.npz"
    np.savez(p, object=star(2.5).astype(np.complex64))
    summary, results = siemens_star_files(p)
    assert list(summary) == ["reconstruction"]
    assert summary["reconstruction"]["n_spokes"] == N_SPOKES
    assert summary["reconstruction"]["min_snr"] == 4.0
    want = siemens_star_resolution(star(2.5), search_px=5.0).resolved_radius_px
    assert results["reconstruction"].resolved_radius_px == want
