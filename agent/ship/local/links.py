"""Hard-link groups on a local mirror.

A copy is written to a temp file and renamed over the name, which gives each
name its own file on the mirror. The shipper remembers its recent copies of
multiply-linked source files; another name of such a file is then made a
link to that copy instead of a copy of its own, so the mirror keeps the
group. A link is made only while the source is unchanged since that copy
(size, mtime, ctime) and the copy is still the file the shipper wrote;
otherwise the name is copied as usual: content first, groups when possible.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass

__all__ = ["LinkedCopies"]

_MAX = 256  # copies remembered, the oldest forgotten first (each holds a mirror directory fd)


@dataclass(frozen=True, slots=True)
class _Copy:
    dir_fd: int  # the mirror directory holding the copy (a dup, owned here)
    name: bytes
    mirror: tuple[int, int]  # (dev, inode) of the copy
    source: tuple[int, int, int]  # (size, mtime_ns, ctime_ns) of the source when copied


def _source(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


class LinkedCopies:
    """The shipper's latest mirror copies of multiply-linked source files."""

    def __init__(self) -> None:
        self._copies: dict[tuple[int, int], _Copy] = {}

    def clear(self) -> None:
        """Forget every copy (the shipper closes)."""
        for copy in self._copies.values():
            os.close(copy.dir_fd)
        self._copies.clear()

    def remember(self, st: os.stat_result, mdir: int, name: bytes) -> None:
        """``name`` in ``mdir`` was just written as a copy of the source ``st``."""
        if st.st_nlink < 2:
            return
        try:
            mst = os.stat(name, dir_fd=mdir, follow_symlinks=False)
        except OSError:
            return
        old = self._copies.pop((st.st_dev, st.st_ino), None)
        if old is None and len(self._copies) >= _MAX:
            old = self._copies.pop(next(iter(self._copies)))
        if old is not None:
            os.close(old.dir_fd)
        copy = _Copy(os.dup(mdir), name, (mst.st_dev, mst.st_ino), _source(st))
        self._copies[(st.st_dev, st.st_ino)] = copy

    def link(self, st: os.stat_result, mdir: int, name: bytes) -> bool:
        """Make ``name`` in ``mdir`` another name of this plan's copy of the
        source ``st``; False (nothing changed) when no usable copy exists."""
        copy = self._copies.get((st.st_dev, st.st_ino))
        if copy is None or st.st_nlink < 2 or copy.source != _source(st):
            return False
        if _identity(mdir, name) == copy.mirror:
            return True  # already that file (a rename onto itself would leave the temp behind)
        tmp = b".msync-agent." + secrets.token_hex(8).encode() + b".tmp"
        try:
            os.link(copy.name, tmp, src_dir_fd=copy.dir_fd, dst_dir_fd=mdir, follow_symlinks=False)
        except OSError:
            return False
        if _identity(mdir, tmp) != copy.mirror:
            _unlink(mdir, tmp)
            return False
        try:
            os.rename(tmp, name, src_dir_fd=mdir, dst_dir_fd=mdir)
        except OSError:
            _unlink(mdir, tmp)
            return False  # e.g. a directory in the way: the copy path deals with it
        return True


def _identity(dir_fd: int, name: bytes) -> tuple[int, int] | None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _unlink(dir_fd: int, name: bytes) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
