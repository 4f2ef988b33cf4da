"""The local mirror audit's content compare, through both directories' fds:
equal only when every byte and the length agree, whatever the size, and
never on a short equal prefix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.ship.local.audit import _CHUNK, _same_content

SIZES = [0, 1, 100, 4095, 4096, _CHUNK - 1, _CHUNK, _CHUNK + 1, 2 * _CHUNK + 17]


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    return a, b


def _compare(a: Path, b: Path, size: int) -> bool:
    fa = os.open(a, os.O_RDONLY | os.O_DIRECTORY)
    fb = os.open(b, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _same_content(fa, fb, b"f", size)
    finally:
        os.close(fa)
        os.close(fb)


@pytest.mark.parametrize("size", SIZES)
def test_equal_files_are_the_same(tmp_path: Path, size: int) -> None:
    a, b = _dirs(tmp_path)
    data = os.urandom(size)
    (a / "f").write_bytes(data)
    (b / "f").write_bytes(data)
    assert _compare(a, b, size)


@pytest.mark.parametrize("size", [s for s in SIZES if s])
@pytest.mark.parametrize("where", ["first", "last"])
def test_one_byte_off_differs(tmp_path: Path, size: int, where: str) -> None:
    a, b = _dirs(tmp_path)
    data = bytearray(os.urandom(size))
    (a / "f").write_bytes(data)
    data[0 if where == "first" else -1] ^= 1
    (b / "f").write_bytes(data)
    assert not _compare(a, b, size)


@pytest.mark.parametrize("size", SIZES)
def test_a_longer_file_on_one_side_differs(tmp_path: Path, size: int) -> None:
    """Grown since it was stat'ed (both stats said ``size``): a prefix that
    matches is not enough."""
    a, b = _dirs(tmp_path)
    data = os.urandom(size)
    (a / "f").write_bytes(data)
    (b / "f").write_bytes(data + b"more")
    assert not _compare(a, b, size)
    assert not _compare(b, a, size)
