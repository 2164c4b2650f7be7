"""Checks of a bundle's contents before anything is built from them.

A bundle may come from another writer, another version or a damaged disk: every
field the loaders use and every stored tensor is checked here, and anything
wrong is a `BundleError` naming the file, the key or tensor, what was expected
and what was found (never a deep traceback from numpy, torch or TensorFlow).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ptychopinn.errors import BundleError

COMPLEX_SUFFIX = "::complex"
#: the integer tensors a state dict may hold (BatchNorm's step counter)
_INT_SUFFIX = "num_batches_tracked"
_SHOWN = 5  # problems listed by name in one message


def _kind(value: Any) -> str:
    """How a JSON value is named in a message: its JSON type and (short) value."""
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }
    text = repr(value)
    return f"{names.get(type(value), type(value).__name__)} {text[:60]}{'...' if len(text) > 60 else ''}"


def check_manifest_fields(p: os.PathLike | str, manifest: dict) -> None:
    """The types of the manifest's fields that loading reads (missing optional ones are fine:
    bundles of earlier versions lack some)."""
    for key, kind, name in (
        ("config", dict, "an object"),
        ("extra", dict, "an object"),
        ("history", list, "a list"),
        ("backend", str, "a string"),
        ("tensors_sha256", str, "a string"),
    ):
        if key in manifest and not isinstance(manifest[key], kind):
            raise BundleError(
                f"{p}: manifest key {key!r} must be {name}; found {_kind(manifest[key])}."
            )
    if "tensors_sha256" not in manifest:
        raise BundleError(
            f"{p}: the manifest has no 'tensors_sha256' (the checksum of the "
            "weights), so the weights cannot be verified; refusing to load."
        )
    history = manifest.get("history", [])
    bad = [i for i, row in enumerate(history) if not isinstance(row, dict)]
    if bad:
        raise BundleError(
            f"{p}: manifest key 'history' must be a list of objects (one per "
            f"epoch); entry {bad[0]} is {_kind(history[bad[0]])}."
        )


def check_stored_tensors(p: os.PathLike | str, tensors: dict[str, np.ndarray]) -> None:
    """The stored tensors follow the format: float32 (complex ones as float32 ``(..., 2)``
    real views under ``<name>::complex``), int64 only for ``*.num_batches_tracked``, and
    every float value finite."""
    problems: list[str] = []
    for name in sorted(tensors):
        problem = _tensor_problem(name, tensors[name])
        if problem:
            problems.append(problem)
        if len(problems) > _SHOWN:
            break
    if problems:
        more = "; ..." if len(problems) > _SHOWN else ""
        raise BundleError(
            f"{p}: bad stored weights, refusing to load: {'; '.join(problems[:_SHOWN])}{more}."
        )


def _tensor_problem(name: str, arr: np.ndarray) -> str | None:
    if name.endswith(COMPLEX_SUFFIX):
        if arr.dtype != np.float32:
            return (
                f"{name!r} has dtype {arr.dtype}, expected float32 (the real view of a "
                "complex64 tensor)"
            )
        if arr.ndim < 1 or arr.shape[-1] != 2:
            return (
                f"{name!r} has shape {tuple(arr.shape)}, expected a last axis of 2 "
                "(real, imaginary)"
            )
    elif name.endswith(_INT_SUFFIX):
        if arr.dtype != np.int64:
            return f"{name!r} has dtype {arr.dtype}, expected int64"
    elif arr.dtype != np.float32:
        return f"{name!r} has dtype {arr.dtype}, expected float32"
    if arr.dtype.kind == "f":
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            return (
                f"{name!r} holds {bad} non-finite value(s) (NaN or Inf) of {arr.size}; "
                "a training that diverged saves such weights: re-train"
            )
    return None


def manifest_backend(manifest: dict, path: os.PathLike | str) -> str:
    """The manifest's ``backend``, one of the known backends; `BundleError` otherwise."""
    from ptychopinn.config.schema import BACKENDS

    expected = ", ".join(repr(b) for b in BACKENDS)
    if "backend" not in manifest:
        raise BundleError(
            f"{path}: the manifest has no 'backend' (expected one of "
            f"{expected}); not a complete ptychopinn bundle."
        )
    backend = manifest["backend"]
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise BundleError(
            f"{path}: the manifest's backend is {backend!r}; expected one of "
            f"{expected}. The bundle was written by another program or "
            "modified."
        )
    return backend


def probe_shape(manifest: dict, path: os.PathLike | str, n: int) -> tuple[int, ...]:
    """``extra.probe_shape``: ``[N, N]`` or ``[modes, N, N]`` positive integers, ``N``
    being the config's ``model.N``."""
    extra = manifest.get("extra", {})
    if not isinstance(extra, dict):
        raise BundleError(f"{path}: manifest key 'extra' must be an object; found {_kind(extra)}.")
    if "probe_shape" not in extra:
        raise BundleError(f"{path}: manifest lacks extra.probe_shape.")
    shape = extra["probe_shape"]
    ok = (
        isinstance(shape, list)
        and len(shape) in (2, 3)
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    )
    if not ok:
        raise BundleError(
            f"{path}: manifest key extra.probe_shape must be [N, N] or "
            f"[modes, N, N] positive integers; found {_kind(shape)}."
        )
    if shape[-2:] != [n, n]:
        raise BundleError(
            f"{path}: manifest key extra.probe_shape is {shape}, but the "
            f"config's model.N is {n} (expected [..., {n}, {n}]); the manifest "
            "does not describe these weights."
        )
    return tuple(shape)


def _shape_fits(found: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    # scalars are stored as (1,) (safetensors writes 0-d arrays so); loaders reshape them
    return found == expected or (expected == () and found == (1,))


def check_weights(
    path: os.PathLike | str,
    expected: dict[str, tuple[str, tuple[int, ...]]],
    found: dict[str, np.ndarray],
    architecture: str,
    *,
    optional: frozenset[str] = frozenset(),
    ignored_suffix: str | None = None,
) -> None:
    """Refuse ``found`` tensors (the bundle's, complex ones as complex) that are not
    exactly the ``expected`` ``{name: (dtype, shape)}`` of the model the manifest's config
    describes (``architecture``, its summary): missing or unexpected names, other dtypes
    or shapes, each named with what was expected and found.

    ``optional`` names may be absent (bundles of earlier versions lack them); names
    ending with ``ignored_suffix`` are not checked (a loader that does not use them).
    """
    names = {k for k in found if not (ignored_suffix and k.endswith(ignored_suffix))}
    missing = sorted(set(expected) - names - optional)
    unexpected = sorted(names - set(expected))
    wrong = []
    # the physical tensors first: their shapes say most (the probe's is N x N)
    for name in sorted(names & set(expected), key=lambda k: (k.startswith("generator."), k)):
        (want_dtype, want_shape), got = expected[name], found[name]
        if str(got.dtype) != want_dtype:
            wrong.append(f"{name!r} has dtype {got.dtype}, expected {want_dtype}")
        elif not _shape_fits(tuple(got.shape), tuple(want_shape)):
            wrong.append(f"{name!r} has shape {tuple(got.shape)}, expected {tuple(want_shape)}")
    if not (missing or unexpected or wrong):
        return
    parts = []
    if wrong:
        more = "; ..." if len(wrong) > _SHOWN else ""
        parts.append("; ".join(wrong[:_SHOWN]) + f"{more} ({len(wrong)} tensor(s))")
    if missing:
        parts.append(f"missing {len(missing)} tensor(s): {missing[:_SHOWN]}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} tensor(s): {unexpected[:_SHOWN]}")
    raise BundleError(
        f"{path}: the weights do not match the architecture its manifest's config describes "
        f"({architecture}): " + "; ".join(parts) + ". The manifest and the weights come "
        "from different models, or the file was modified; re-save the model from its run "
        "or re-train."
    )


def architecture_summary(cfg: Any) -> str:
    """The few config values that set the tensors' shapes, for messages."""
    m = cfg.model
    return (
        f"model.N {m.N}, gridsize {m.gridsize}, architecture {m.architecture!r}, "
        f"n_filters_scale {m.n_filters_scale}"
    )
