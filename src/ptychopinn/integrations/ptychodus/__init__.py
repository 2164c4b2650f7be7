"""ptychopinn inside Ptychodus 1.7: a reconstructor library, converters, a launcher.

* `PtychoPINNReconstructorLibrary`: the ``PtychoPINN-Next`` library with the
  trainable reconstructors ``PINN`` (self-supervised) and ``Supervised``;
* `input_to_scan`, `scan_to_reconstruct_input`, `reconstruction_to_product`:
  Ptychodus data <-> `ptychopinn.data.Scan` (module ``convert``);
* `scan_to_ptychodus`, `ptychodus_to_scan`: our NPZ contract <-> Ptychodus
  ``product.h5`` / ``diffraction.h5`` files (module ``files``);
* `main` / `patched_ptychodus`: run Ptychodus (GUI or ``-b`` batch) with the
  library registered (console script ``ptychopinn-ptychodus``).

Importing this package without Ptychodus installed raises a `RuntimeError`
that names the extra to install. Submodules load on first attribute access.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

INSTALL_HINT = "pip install 'ptychopinn[ptychodus]'"

if importlib.util.find_spec("ptychodus") is None:
    raise RuntimeError(
        "The Ptychodus integration needs the ptychodus package (version 1.7.x, Python >= 3.11), "
        f"which is not installed; install it with: {INSTALL_HINT}"
    )

_LAZY = {
    "LIBRARY_NAME": "reconstructor",
    "PtychoPINNReconstructor": "reconstructor",
    "PtychoPINNReconstructorLibrary": "reconstructor",
    "PtychoPINNSettings": "reconstructor",
    "algorithm_key": "reconstructor",
    "PIXEL_CENTRE_OFFSET_PX": "convert",
    "input_to_scan": "convert",
    "scan_to_product": "convert",
    "scan_to_assembled_data": "convert",
    "scan_to_reconstruct_input": "convert",
    "reconstruction_to_product": "convert",
    "scan_to_ptychodus": "files",
    "ptychodus_to_scan": "files",
    "main": "launcher",
    "patched_ptychodus": "launcher",
}

__all__ = sorted(_LAZY) + ["INSTALL_HINT"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
