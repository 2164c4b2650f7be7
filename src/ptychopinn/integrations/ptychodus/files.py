"""Our NPZ contract <-> Ptychodus ``product.h5`` and ``diffraction.h5`` files.

The files are written and read with Ptychodus's own functions
(``ptychodus.api.io.save_product``/``load_product`` and
``save_diffraction_data``/``load_diffraction_data``), so they are exactly
what ``ptychodus -b reconstruct -i DIR`` expects in ``DIR`` (with
``settings.ini`` and, for trained models, ``model.ptychopinn.safetensors``).
Patterns and positions are paired by scan index with Ptychodus's
``prepare_reconstruct_input``, as Ptychodus does before reconstructing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ptychopinn.data.scan import Scan
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)


def scan_to_ptychodus(scan: Scan, product_path: str | os.PathLike,
                      diffraction_path: str | os.PathLike, *, name: str | None = None,
                      margin_px: int = 0) -> tuple[Path, Path]:
    """Write a scan as a Ptychodus product file and an assembled diffraction file.

    Parameters
    ----------
    scan
        The scan (amplitudes are squared into counts).
    product_path, diffraction_path
        Output HDF5 files (conventionally ``product.h5`` and ``diffraction.h5``).
    name
        Product name (default: the product file's stem).
    margin_px
        Extra object pixels around the patches when the scan has no object.
    """
    from ptychodus.api.io import save_diffraction_data, save_product

    from ptychopinn.integrations.ptychodus.convert import scan_to_assembled_data, scan_to_product

    product_path, diffraction_path = Path(product_path), Path(diffraction_path)
    product = scan_to_product(scan, name=name or product_path.stem, margin_px=margin_px)
    for p in (product_path, diffraction_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    save_product(product_path, product)
    save_diffraction_data(diffraction_path, scan_to_assembled_data(scan))
    return product_path, diffraction_path


def ptychodus_to_scan(product_path: str | os.PathLike,
                      diffraction_path: str | os.PathLike) -> Scan:
    """Read a Ptychodus product file and assembled diffraction file into a `Scan`.

    The product's object is carried as ``Scan.object`` when every patch lies
    inside it (see `convert.input_to_scan`).
    """
    from ptychodus.api.io import load_diffraction_data, load_product
    from ptychodus.api.reconstruct import prepare_reconstruct_input

    from ptychopinn.integrations.ptychodus.convert import input_to_scan

    product_path, diffraction_path = Path(product_path), Path(diffraction_path)
    for p, what in ((product_path, "product"), (diffraction_path, "diffraction")):
        if not p.is_file():
            raise DataError(f"{p}: Ptychodus {what} file not found.")
    try:
        product = load_product(product_path)
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(
            f"{product_path}: not a readable Ptychodus product file (HDF5 written by "
            f"ptychodus.api.io.save_product): {exc}"
        ) from None
    try:
        assembled = load_diffraction_data(diffraction_path)
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(
            f"{diffraction_path}: not a readable Ptychodus assembled diffraction file "
            f"(datasets 'patterns', 'indexes', 'bad_pixels'): {exc}"
        ) from None
    try:
        parameters = prepare_reconstruct_input(assembled, product)
    except ValueError as exc:
        raise DataError(
            f"{product_path} + {diffraction_path}: patterns and positions do not pair by scan "
            f"index: {exc}"
        ) from None
    return input_to_scan(parameters, source=str(product_path))
