"""Model bundles: one safetensors file with a JSON manifest; never pickle."""

from ptychopinn.bundle.format import (
    BUNDLE_FILENAME,
    FORMAT_VERSION,
    read_bundle,
    resolve_bundle_path,
    save_bundle,
)

__all__ = ["BUNDLE_FILENAME", "FORMAT_VERSION", "read_bundle", "resolve_bundle_path", "save_bundle"]
