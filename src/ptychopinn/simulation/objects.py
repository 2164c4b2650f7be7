"""Complex test objects: textured pictures, random lines, random fields, files.

Every generator is pure numpy/scipy/scikit-image and takes its randomness from
an explicit `numpy.random.Generator`. Generated objects are complex64 with the
amplitude inside ``amplitude_range`` and the phase inside ``phase_range_rad``.

Pictures come only from the scikit-image test images bundled in the package
(`BUNDLED_IMAGES`; nothing is downloaded). The default 'textured' object draws
its two pictures from `TEXTURE_POOL`; the other bundled images
(`HELD_OUT_IMAGES`) never appear in a 'textured' object, so
``object_kind='image'`` with one of them tests a model on an unseen object.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from ptychopinn.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TEXTURE_POOL: tuple[str, ...] = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "rocket",
)
HELD_OUT_IMAGES: tuple[str, ...] = (
    "cell", "checkerboard", "clock", "horse", "logo", "microaneurysms", "page", "retina",
    "shepp_logan_phantom", "text",
)
BUNDLED_IMAGES: tuple[str, ...] = TEXTURE_POOL + HELD_OUT_IMAGES


def load_image(name: str) -> np.ndarray:
    """A bundled scikit-image test image as float64 grey levels in [0, 1]."""
    if name not in BUNDLED_IMAGES:
        raise ConfigError(
            f"object_image: expected one of the bundled scikit-image test images "
            f"{sorted(BUNDLED_IMAGES)}; found {name!r}."
        )
    from skimage import color, data

    img = np.asarray(getattr(data, name)())
    if img.ndim == 3 and img.shape[-1] == 4:
        img = color.rgba2rgb(img)
    if img.ndim == 3:
        img = color.rgb2gray(img)
    img = img.astype(np.float64)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def gaussian_random_field(
    shape: tuple[int, int], rng: np.random.Generator, corr_len_px: float
) -> np.ndarray:
    """Zero-mean, unit-variance periodic Gaussian random field.

    White noise low-pass filtered (in Fourier space) by a Gaussian of standard
    deviation ``corr_len_px`` pixels.
    """
    white = rng.standard_normal(shape)
    spec = sfft.rfft2(white)
    spec = ndimage.fourier_gaussian(spec, sigma=corr_len_px, n=shape[1])
    field = sfft.irfft2(spec, s=shape)
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def multiscale_field(
    shape: tuple[int, int], rng: np.random.Generator, scales_px: tuple[float, ...]
) -> np.ndarray:
    """Sum of unit-variance random fields at several correlation lengths
    (weights falling gently with scale: finer scales get less weight)."""
    out = np.zeros(shape)
    for i, s in enumerate(sorted(scales_px, reverse=True)):
        out += gaussian_random_field(shape, rng, s) / (1.0 + 0.5 * i)
    return out


def picture_field(
    name: str, shape: tuple[int, int], rng: np.random.Generator, px_per_image_px: float
) -> np.ndarray:
    """A bundled picture resampled onto ``shape`` with a random rotation, flip
    and offset; mirrored where the canvas is larger than the picture.

    ``px_per_image_px`` is the magnification (object pixels per picture pixel).
    """
    img = load_image(name)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    theta = rng.uniform(0.0, 2.0 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    yy, xx = np.meshgrid(
        np.arange(shape[0]) - shape[0] / 2, np.arange(shape[1]) - shape[1] / 2, indexing="ij"
    )
    centre = np.array(img.shape) / 2 + rng.uniform(-0.25, 0.25, 2) * np.array(img.shape)
    inv = 1.0 / px_per_image_px
    rows = centre[0] + inv * (c * yy - s * xx)
    cols = centre[1] + inv * (s * yy + c * xx)
    return ndimage.map_coordinates(img, [rows, cols], order=1, mode="mirror")


def random_lines(
    shape: tuple[int, int], rng: np.random.Generator, N: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random straight bars of several widths and lengths.

    Returns two fields in [0, 1] (amplitude absorption, phase) sharing the same
    geometry but with independent per-line strengths; about 12 lines per N x N.
    """
    from skimage.draw import polygon

    h, w = shape
    n_lines = max(8, int(round(12 * h * w / N**2)))
    absorb = np.zeros(shape)
    phase = np.zeros(shape)
    for _ in range(n_lines):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        length = rng.uniform(N / 4, 2 * N)
        width = rng.uniform(1.0, max(1.5, N / 16))
        ang = rng.uniform(0, np.pi)
        dy, dx = np.sin(ang), np.cos(ang)
        hl, hw = length / 2, width / 2
        ry = cy + np.array([-hl * dy - hw * dx, hl * dy - hw * dx, hl * dy + hw * dx,
                            -hl * dy + hw * dx])
        rx = cx + np.array([-hl * dx + hw * dy, hl * dx + hw * dy, hl * dx - hw * dy,
                            -hl * dx - hw * dy])
        rr, cc = polygon(ry, rx, shape)
        absorb[rr, cc] += rng.uniform(0.2, 1.0)
        phase[rr, cc] += rng.uniform(-1.0, 1.0)
    absorb = ndimage.gaussian_filter(absorb, 0.6)
    phase = ndimage.gaussian_filter(phase, 0.6)
    absorb = np.clip(absorb / max(np.percentile(absorb, 99.5), 1e-12), 0, 1)
    scale = max(np.percentile(np.abs(phase), 99.5), 1e-12)
    phase = 0.5 + 0.5 * np.clip(phase / scale, -1, 1)
    return absorb, phase


def _unit(field: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Map a field to [0, 1] by robust percentiles (clipping the tails)."""
    lo, hi = np.percentile(field, [lo_pct, hi_pct])
    if hi <= lo:
        return np.zeros_like(field)
    return np.clip((field - lo) / (hi - lo), 0.0, 1.0)


def _zscore(field: np.ndarray) -> np.ndarray:
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def to_complex(
    amp01: np.ndarray,
    phase01: np.ndarray,
    amplitude_range: tuple[float, float],
    phase_range_rad: tuple[float, float],
) -> np.ndarray:
    """complex64 object from two [0, 1] maps scaled into the given ranges."""
    a = amplitude_range[0] + (amplitude_range[1] - amplitude_range[0]) * amp01
    p = phase_range_rad[0] + (phase_range_rad[1] - phase_range_rad[0]) * phase01
    return (a * np.exp(1j * p)).astype(np.complex64)


def textured_maps(
    shape: tuple[int, int], rng: np.random.Generator, N: int, image: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Amplitude and phase maps in [0, 1] of the default 'textured' object.

    The amplitude follows one picture, the phase another (both from
    `TEXTURE_POOL`, chosen by ``rng`` unless ``image`` fixes the first), each
    mixed with multi-scale random fields so edges exist from ~N/32 to ~N
    pixels; the phase also carries a little of the amplitude picture, as real
    specimens do. The picture magnification scales with N (N / 64 times a
    random 0.7..1.3), so a patch sees similar detail for every N.
    """
    pool = list(TEXTURE_POOL)
    first = image if image is not None else pool[int(rng.integers(len(pool)))]
    others = [p for p in pool if p != first]
    second = others[int(rng.integers(len(others)))]
    mag = (N / 64.0) * rng.uniform(0.7, 1.3, size=2)
    pic_a = _zscore(picture_field(first, shape, rng, float(mag[0])))
    pic_b = _zscore(picture_field(second, shape, rng, float(mag[1])))
    amp = pic_a + 0.35 * multiscale_field(shape, rng, (N, N / 4, N / 16))
    phase = pic_b + 0.3 * pic_a + 0.35 * multiscale_field(shape, rng, (N / 2, N / 8, N / 32))
    return _unit(amp), _unit(phase), [first, second]


def make_object(
    kind: str,
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    N: int,
    amplitude_range: tuple[float, float],
    phase_range_rad: tuple[float, float],
    image: str | None = None,
) -> tuple[np.ndarray, dict]:
    """A generated complex64 object of ``shape`` and a dict describing it.

    ``kind`` is 'textured', 'lines', 'grf' or 'image' (see the module docs);
    'file' objects are read with `load_object_file` instead.
    """
    info: dict = {"kind": kind}
    if kind == "textured":
        amp, phase, pics = textured_maps(shape, rng, N, image)
        info["pictures"] = pics
    elif kind == "lines":
        absorb, phase = random_lines(shape, rng, N)
        amp = 1.0 - absorb
    elif kind == "grf":
        amp = _unit(multiscale_field(shape, rng, (N, N / 4, N / 16)))
        phase = _unit(multiscale_field(shape, rng, (N, N / 4, N / 16)))
    elif kind == "image":
        if image is None:
            raise ConfigError("object_kind='image' needs object_image (e.g. 'camera').")
        mag = (N / 64.0) * rng.uniform(0.9, 1.1)
        pic = picture_field(image, shape, rng, float(mag))
        amp = _unit(pic)
        phase = _unit(ndimage.gaussian_filter(pic, 1.0))
        info["pictures"] = [image]
    else:
        raise ConfigError(
            f"object_kind: expected 'textured', 'lines', 'grf', 'image' or 'file'; found {kind!r}."
        )
    return to_complex(amp, phase, amplitude_range, phase_range_rad), info


def load_complex_2d(path: str | Path, key: str, what: str) -> np.ndarray:
    """A complex 2-D array from an NPZ (under ``key``) or a .npy file (DataError if not)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(
            f"{p}: is a folder; expected the {what} file (an NPZ with '{key}' or a .npy complex "
            "array)."
        )
    if not p.is_file():
        raise DataError(f"{p}: {what} file not found.")
    with open(p, "rb") as fh:
        head = fh.read(6)
    if not head.startswith((b"PK", b"\x93NUMPY")):  # the zip / .npy magic bytes
        kind = ".npy array" if p.suffix.lower() == ".npy" else "NPZ archive"
        found = "it is empty" if not head else f"it starts with {head!r}"
        raise DataError(
            f"{p}: not a readable {kind} ({found}); expected an NPZ with "
            f"'{key}' (complex {what}) or a .npy complex array."
        )
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            with np.load(p, allow_pickle=False) as npz:
                if key not in npz.files:
                    raise DataError(
                        f"{p}: missing key '{key}' (complex {what}); "
                        f"keys found: {sorted(npz.files)}."
                    )
                arr = npz[key]
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(
                f"{p}: holds object (pickled) arrays, which are never loaded for safety; "
                f"expected a complex {what} array."
            ) from exc
        raise DataError(f"{p}: cannot read the {what} as NPZ or .npy ({exc}).") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{p}: cannot read the {what}: truncated or corrupt NPZ / .npy ({exc})."
        ) from exc
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or not np.iscomplexobj(arr):
        raise DataError(
            f"{p}: '{key}' must be a complex 2-D array ({what}); "
            f"found shape {arr.shape} dtype {arr.dtype}."
        )
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{p}: '{key}' must be finite; found NaN/Inf values.")
    return arr


def load_object_file(path: str | Path) -> np.ndarray:
    """The complex64 object stored in ``path`` ('objectGuess' of an NPZ, or .npy)."""
    return load_complex_2d(path, "objectGuess", "object").astype(np.complex64)
