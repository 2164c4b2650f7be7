"""Atomic writes (`ptychopinn.atomic`): all or nothing, no temporary files left,
the permissions of an ordinary new file."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from ptychopinn.atomic import atomic_open, atomic_write_bytes, atomic_write_text


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_writes_and_replaces_leaving_only_the_target(tmp_path) -> None:
    target = tmp_path / "sub" / "out.json"  # the folder is created
    assert atomic_write_text(target, "{\"a\": 1}\n") == target
    assert target.read_text() == "{\"a\": 1}\n"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    with atomic_open(target, "w") as fh:
        fh.write("line\r\nµm\n")  # text as given: no newline translation, UTF-8
    assert target.read_bytes() == "line\r\nµm\n".encode()
    assert os.listdir(target.parent) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path) -> None:
    target = tmp_path / "scan.npz"
    with atomic_open(target) as fh:
        np.savez(fh, a=np.arange(3))
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"), atomic_open(target) as fh:
        fh.write(b"half of a new file")
        raise RuntimeError("disk full")
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["scan.npz"]
    with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "new.bin") as fh:
        raise KeyboardInterrupt  # Ctrl-C too: no partial or temporary file
    assert os.listdir(tmp_path) == ["scan.npz"]


def test_permissions_are_those_of_an_ordinary_new_file(tmp_path) -> None:
    """Not mkstemp's owner-only 0o600: a bundle on a shared disk stays readable."""
    target = atomic_write_text(tmp_path / "model.json", "{}")
    ordinary = tmp_path / "ordinary.json"
    ordinary.write_text("{}")
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == stat.S_IMODE(ordinary.stat().st_mode) == 0o666 & ~_umask()


def test_bad_mode_is_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"), \
            atomic_open(tmp_path / "x", "a"):
        pass
    assert not (tmp_path / "x").exists()
