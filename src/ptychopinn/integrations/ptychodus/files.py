"""Our NPZ contract <-> Ptychodus ``product.h5`` and ``diffraction.h5`` files.

The files are written and read with Ptychodus's own functions
(``ptychodus.api.io.save_product``/``load_product`` and
``save_diffraction_data``/``load_diffraction_data``), so they are exactly
what ``ptychodus -b reconstruct -i DIR`` expects in ``DIR`` (with
``settings.ini`` and, for trained models, ``model.ptychopinn.safetensors``).
Patterns and positions are paired by scan index with Ptychodus's
``prepare_reconstruct_input``, as Ptychodus does before reconstructing.
Files are written atomically: to a temporary file in the same folder, renamed
over the target once complete (`atomic_h5`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ptychopinn.data.scan import Scan
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_h5(paths: list[Path]) -> Iterator[list[Path]]:
    """Temporary paths next to ``paths`` for HDF5 writers that take a file name
    (Ptychodus's ``save_*``); each replaces its target when the block ends without an
    error, else all are removed and the targets are left as they were."""
    tmps = [p.parent / f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp" for p in paths]
    try:
        yield tmps
        for tmp in tmps:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, p in zip(tmps, paths, strict=True):
            os.replace(tmp, p)
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def scan_to_ptychodus(scan: Scan, product_path: str | os.PathLike,
                      diffraction_path: str | os.PathLike, *, name: str | None = None,
                      margin_px: int = 0) -> tuple[Path, Path]:
    """Write a scan as a Ptychodus product file and an assembled diffraction file.

    Parameters
    ----------
    scan
        The scan (amplitudes are squared into counts).
    product_path, diffraction_path
        Output HDF5 files (conventionally ``product.h5`` and ``diffraction.h5``);
        existing files are replaced, atomically. A folder is refused
        (`OutputPathError`).
    name
        Product name (default: the product file's stem).
    margin_px
        Extra object pixels around the patches when the scan has no object.
    """
    from ptychodus.api.io import save_diffraction_data, save_product

    from ptychopinn.atomic import check_output_file
    from ptychopinn.errors import OutputPathError
    from ptychopinn.integrations.ptychodus.convert import scan_to_assembled_data, scan_to_product

    product_path = check_output_file(product_path, "Ptychodus product file", example="product.h5")
    diffraction_path = check_output_file(diffraction_path, "Ptychodus diffraction file",
                                         example="diffraction.h5")
    if product_path.resolve() == diffraction_path.resolve():
        raise OutputPathError(f"Ptychodus product and diffraction files: both are {product_path}; "
                              "expected two files (e.g. product.h5 and diffraction.h5).")
    product = scan_to_product(scan, name=name or product_path.stem, margin_px=margin_px)
    assembled = scan_to_assembled_data(scan)
    for p in (product_path, diffraction_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_h5([product_path, diffraction_path]) as (product_tmp, diffraction_tmp):
        save_product(product_tmp, product)
        save_diffraction_data(diffraction_tmp, assembled)
    return product_path, diffraction_path


def ptychodus_to_scan(product_path: str | os.PathLike,
                      diffraction_path: str | os.PathLike) -> Scan:
    """Read a Ptychodus product file and assembled diffraction file into a `Scan`.

    The product's object is carried as ``Scan.object`` when every patch lies
    inside it and it is not uniform over the scan (a uniform object, such as the
    stand-in `scan_to_ptychodus` writes for a scan without an object, is an
    initial guess, not a truth; see `convert.input_to_scan`).
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
