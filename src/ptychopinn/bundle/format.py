"""The model bundle: one safetensors file with a JSON manifest in its header.

* tensors: the model's state dict (complex tensors stored as their float32 real
  view under ``<name>::complex``), weights only, no pickle; float32 throughout
  (int64 only for BatchNorm's ``num_batches_tracked``), every value finite;
* header metadata ``ptychopinn_manifest``: a JSON object with the format
  version, the backend, the package version, the creation time, the full
  config, the intensity and input scales, the training history, a SHA-256 of
  all tensor bytes (names, dtypes, shapes and data: ``tensors_sha256``) and a
  SHA-256 of the manifest itself (``manifest_sha256``, see `manifest_digest`),
  which covers ``tensors_sha256`` and so ties the manifest to these weights.

Loading verifies both digests and the types of every field and tensor it uses
(`ptychopinn.bundle.validate`); anything wrong is a `BundleError` naming the
file. Bundles written before ``manifest_sha256`` existed (same format version)
load without that check; readers of those versions ignore the extra key. The
digests detect damage and edits by tools that do not know them; they are not a
signature (anyone can recompute them).

Written atomically (temporary file + rename).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.atomic import atomic_write_bytes
from ptychopinn.bundle.validate import (
    COMPLEX_SUFFIX,
    check_manifest_fields,
    check_stored_tensors,
)
from ptychopinn.errors import BundleError

FORMAT_NAME = "ptychopinn-bundle"
FORMAT_VERSION = 1
BUNDLE_FILENAME = "model.ptychopinn.safetensors"
_MANIFEST_KEY = "ptychopinn_manifest"
#: the manifest's own digest (absent from bundles of earlier versions)
DIGEST_KEY = "manifest_sha256"
#: ``model.prior_batch_size`` of bundles saved before the key existed
LEGACY_PRIOR_BATCH_SIZE = 64
_COMPLEX = COMPLEX_SUFFIX


def _package_version() -> str:
    from ptychopinn import __version__

    return __version__


def _to_storable(state: dict[str, Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in state.items():
        arr = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        if np.iscomplexobj(arr):
            arr = (
                np.ascontiguousarray(arr.astype(np.complex64))
                .view(np.float32)
                .reshape(*arr.shape, 2)
            )
            out[k + _COMPLEX] = arr
        else:
            out[k] = np.ascontiguousarray(arr)
    return out


def _from_storable(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in tensors.items():
        if k.endswith(_COMPLEX):
            out[k[: -len(_COMPLEX)]] = np.ascontiguousarray(v).view(np.complex64)[..., 0]
        else:
            out[k] = v
    return out


def checksum(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over the sorted names, dtypes, shapes and bytes of the tensors."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = np.ascontiguousarray(tensors[k])
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(str(v.shape).encode())
        h.update(v.tobytes())
    return h.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest without its ``manifest_sha256`` field, as canonical JSON
    (sorted keys, no spaces; the manifest holds ``tensors_sha256``, so this covers the
    weights too)."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def seal_manifest(manifest: dict) -> dict:
    """The manifest as a reader will see it (JSON types), with its ``manifest_sha256``."""
    sealed = json.loads(json.dumps({k: v for k, v in manifest.items() if k != DIGEST_KEY}))
    sealed[DIGEST_KEY] = manifest_digest(sealed)
    return sealed


def save_bundle(
    path: str | os.PathLike,
    state_dict: dict[str, Any],
    *,
    config: dict,
    backend: str,
    extra: dict | None = None,
    history: list[dict] | None = None,
) -> Path:
    """Write a bundle atomically; returns its path. Weights holding NaN or Inf are a
    `BundleError` (nothing written): a diverged training leaves no bundle that would
    only be refused when loaded."""
    from safetensors.numpy import save

    p = Path(path)
    if p.is_dir():
        p = p / BUNDLE_FILENAME
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = _to_storable(state_dict)
    for name, arr in tensors.items():  # such a bundle could never be loaded (validate.py)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise BundleError(
                f"{p}: not written: {name!r} holds non-finite values (NaN or Inf), as the "
                "weights of a training that diverged do; train again with a lower "
                "learning_rate (or check the data)."
            )
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "package_version": _package_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "history": history or [],
        "extra": extra or {},
        "tensors_sha256": checksum(tensors),
    }
    payload = save(tensors, metadata={_MANIFEST_KEY: json.dumps(seal_manifest(manifest))})
    return atomic_write_bytes(p, payload)


def resolve_bundle_path(path: str | os.PathLike) -> Path:
    """A bundle file, or the bundle inside a run directory."""
    p = Path(path)
    if p.is_dir():
        cand = p / BUNDLE_FILENAME
        if not cand.is_file():
            raise BundleError(
                f"{p}: no bundle '{BUNDLE_FILENAME}' in this directory; pass a run directory "
                "written by `ptychopinn train` or the bundle file itself."
            )
        return cand
    if not p.is_file():
        raise BundleError(f"{p}: bundle file not found.")
    return p


def read_manifest(path: str | os.PathLike) -> dict:
    """The bundle's manifest from its header alone (the weights are not read): what a
    dispatcher needs, e.g. the backend. Nothing is verified here; the loader that follows
    verifies everything (`read_bundle`). A file whose header cannot be parsed is handed to
    `read_bundle`, which says what is wrong with it."""
    p = resolve_bundle_path(path)
    try:
        with open(p, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n)) if 0 < n <= p.stat().st_size - 8 else None
        manifest = json.loads(header["__metadata__"][_MANIFEST_KEY])
    except (OSError, ValueError, TypeError, KeyError, UnicodeDecodeError):
        manifest = None
    return manifest if isinstance(manifest, dict) else read_bundle(p)[0]


_A_MODEL = (f"a model is the run folder written by `ptychopinn train` (it holds "
            f"{BUNDLE_FILENAME}) or that bundle file.")


def _what_file(p: Path, raw: bytes) -> str:
    """What a file that is not a bundle seems to be, in words (from its first bytes)."""
    if raw.startswith(b"PK"):
        if p.suffix.lower() in (".ckpt", ".pt", ".pth"):
            return "a PyTorch/Lightning checkpoint, which `ptychopinn train --resume` uses"
        if p.suffix.lower() == ".npz":
            return "an NPZ archive"
        return "a zip archive"
    if raw.startswith(b"\x80"):
        return "a pickle file"
    if raw.startswith(b"\x89HDF"):
        return "an HDF5 file"
    return f"not a safetensors file: it starts with {raw[:8]!r}"


def read_bundle(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a bundle; returns ``(manifest, state)`` with numpy arrays.

    Raises `BundleError` for a truncated, tampered, foreign or newer file.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    p = resolve_bundle_path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise BundleError(f"{p}: cannot read the bundle ({exc.strerror or exc}).") from None
    if len(raw) < 8:
        raise BundleError(f"{p}: truncated bundle ({len(raw)} bytes); re-save or re-train.")
    if raw[8:9] != b"{":  # a safetensors file: an 8-byte length, then its JSON header
        raise BundleError(f"{p}: not a ptychopinn bundle ({_what_file(p, raw)}); {_A_MODEL}")
    header_len = int.from_bytes(raw[:8], "little")
    if header_len <= 0 or 8 + header_len > len(raw):
        raise BundleError(
            f"{p}: truncated or not a ptychopinn bundle (header says {header_len} bytes, file "
            f"has {len(raw)})."
        )
    try:
        header = json.loads(raw[8 : 8 + header_len])
        tensors = load(raw)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{p}: corrupt or truncated bundle ({exc}).") from None
    meta = (header.get("__metadata__") or {}) if isinstance(header, dict) else {}
    if not isinstance(meta, dict) or _MANIFEST_KEY not in meta:
        raise BundleError(f"{p}: a safetensors file without a ptychopinn manifest; not a bundle.")
    try:
        manifest = json.loads(meta[_MANIFEST_KEY])
    except (json.JSONDecodeError, TypeError) as exc:
        raise BundleError(f"{p}: manifest is not valid JSON ({exc}).") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{p}: the manifest must be a JSON object; found a "
                          f"{type(manifest).__name__}. Not a ptychopinn bundle.")
    if manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{p}: format {manifest.get('format')!r}, expected {FORMAT_NAME!r}.")
    version = manifest.get("format_version")
    if (not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION
            or version < 1):
        raise BundleError(
            f"{p}: bundle format version {version!r} is not supported by this ptychopinn "
            f"(reads versions 1..{FORMAT_VERSION}); upgrade ptychopinn."
        )
    check_manifest_fields(p, manifest)
    digest = checksum(tensors)
    if digest != manifest["tensors_sha256"]:
        raise BundleError(
            f"{p}: checksum mismatch (weights were modified or damaged after saving); "
            "refusing to load."
        )
    _verify_manifest_digest(p, manifest)
    check_stored_tensors(p, tensors)
    return manifest, _from_storable(tensors)


def _verify_manifest_digest(p: Path, manifest: dict) -> None:
    """Refuse a manifest edited after saving; one without a digest (written by an earlier
    version) passes."""
    if DIGEST_KEY not in manifest:
        return
    stored, actual = manifest[DIGEST_KEY], manifest_digest(manifest)
    if stored != actual:
        raise BundleError(
            f"{p}: the manifest was modified after saving (its {DIGEST_KEY} is {stored!r}, its "
            f"content hashes to {actual!r}; it names backend {manifest.get('backend')!r}, "
            f"ptychopinn {manifest.get('package_version')!r}); refusing to load. Use the "
            "bundle as `ptychopinn train` wrote it, or re-train."
        )


def manifest_config(manifest: dict, path: str | os.PathLike):
    """The manifest's `TrainingConfig`; BundleError naming the bundle if invalid.

    Bundles written before ``model.prior_iterations`` existed fed the raw
    diffraction to the generator: a missing key means 0 for them. Bundles
    written before ``model.prior_neighbors`` used single-pattern priors (1),
    those before ``model.prior_scope`` per-pattern ('neighbourhood') priors,
    those before ``model.prior_residual`` took the heads' output as the patch,
    those before ``model.prior_residual_gate`` were ungated, and those before
    ``model.prior_amplitude_step`` took whole PIE steps (1), those before
    ``model.subpixel`` interpolated bilinearly and those before
    ``model.prior_frc_filter`` had no filter (the defaults of both changed after), and
    those before ``model.prior_batch_size`` updated the scan prior 64 patterns at a time
    and those before ``model.prior_start`` started its passes from a flat phase, and
    those before ``model.prior_com_correction`` ran without it, and those before
    ``model.prior_step_scale`` took plain PIE steps (1, still the default), and those
    before ``model.prior_recipe`` set the prior's passes by hand ('plain'), and those
    before ``model.prior_settle_passes`` ended the prior's passes without plain ones (0;
    a 'featureless' bundle would otherwise take the recipe's), and those before
    ``model.prior_coverage_passes`` ran the model's passes on any scan (off), and those
    before ``model.prior_object_momentum`` ran the prior's passes without it (0; a
    'featureless' bundle would otherwise take the recipe's), and those before
    ``model.prior_frc_min_coverage`` ran the FRC filter's halves on any scan (0), and
    those before ``model.prior_train_converge`` trained without converge passes (off).
    """
    import copy

    from ptychopinn.config.schema import TrainingConfig

    raw = copy.deepcopy(manifest.get("config"))
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: the manifest has no config mapping.")
    model = raw.get("model")
    if not isinstance(model, dict):
        found = "none" if model is None else f"a {type(model).__name__}"
        raise BundleError(f"{path}: the manifest's config has no 'model' section (an object "
                          f"with the architecture: N, n_filters_scale, ...; found {found}), so "
                          "the network its weights belong to is unknown; refusing to load.")
    if isinstance(model, dict) and "prior_iterations" not in model:
        model["prior_iterations"] = 0
    if isinstance(model, dict) and "prior_neighbors" not in model:
        model["prior_neighbors"] = 1
    if isinstance(model, dict) and "prior_scope" not in model:
        model["prior_scope"] = "neighbourhood"
    if isinstance(model, dict) and "prior_residual" not in model:
        model["prior_residual"] = False
    if isinstance(model, dict) and "prior_residual_gate" not in model:
        model["prior_residual_gate"] = False
    if isinstance(model, dict) and "prior_amplitude_step" not in model:
        model["prior_amplitude_step"] = 1.0
    if isinstance(model, dict) and model.get("subpixel") is None:
        model["subpixel"] = "bilinear"
    if isinstance(model, dict) and model.get("prior_frc_filter") is None:
        model["prior_frc_filter"] = False
    if isinstance(model, dict) and "prior_batch_size" not in model:
        model["prior_batch_size"] = LEGACY_PRIOR_BATCH_SIZE
    if isinstance(model, dict) and "prior_start" not in model:
        model["prior_start"] = "flat"
    if isinstance(model, dict) and "prior_com_correction" not in model:
        model["prior_com_correction"] = False
    if isinstance(model, dict) and "prior_recipe" not in model:
        model["prior_recipe"] = "plain"
    if isinstance(model, dict) and "prior_settle_passes" not in model:
        model["prior_settle_passes"] = 0
    if isinstance(model, dict) and "prior_object_momentum" not in model:
        model["prior_object_momentum"] = 0.0
    if isinstance(model, dict) and "prior_coverage_passes" not in model:
        model["prior_coverage_passes"] = False
    if isinstance(model, dict) and "prior_frc_min_coverage" not in model:
        model["prior_frc_min_coverage"] = 0.0
    if isinstance(model, dict) and "prior_train_converge" not in model:
        model["prior_train_converge"] = False
    try:
        return TrainingConfig.model_validate(raw)
    except Exception as exc:  # pydantic ValidationError
        raise BundleError(f"{path}: the manifest's config is invalid ({exc}).") from None
