"""Exception types raised for user mistakes.

Every error that a user can cause (a bad file, a bad option) is one of these,
with a message that names the file or option, what was expected and what was
found. The CLI prints such messages without a traceback.
"""

from __future__ import annotations


class PtychoPINNError(Exception):
    """Base class of the errors a user can cause and fix."""


class DataError(PtychoPINNError, ValueError):
    """A data file or array does not follow the data contract."""


class ConfigError(PtychoPINNError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class BundleError(PtychoPINNError, ValueError):
    """A model bundle is missing, truncated, tampered with or incompatible."""


class BackendUnavailableError(PtychoPINNError, RuntimeError):
    """The framework of the chosen backend is not installed."""


class OutputPathError(PtychoPINNError, OSError):
    """An output path cannot be used: a folder where a file is to be written, or a file
    where a folder is needed."""
