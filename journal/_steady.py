"""Ships and scans exclude each other, across threads and processes.

A scan compares the tree with one snapshot of the manifest. A ship that
captured a path's state before the snapshot and marks it done after it
leaves a path neither accounts for: the mirror has it, the snapshot did not,
and if the tree lost it meanwhile (an event lost in an overflow) no DELETE
is ever made. So a scan holds ``manifest.lock`` exclusively from its
snapshot to its last append, and every ship (capture, send, mark done)
holds it shared. Each hold opens its own file description, so two threads
of one process exclude each other as two processes do; a turnstile lets a
waiting scan in before new ships of the same process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import JournalError, JournalFull

__all__ = ["LOCK_NAME", "ShipGate"]

LOCK_NAME = "manifest.lock"


class ShipGate:
    """Shared holds for ships, exclusive holds for scans (see the module)."""

    def __init__(self, jdir: Path) -> None:
        self._path = jdir / LOCK_NAME
        self._turnstile = threading.Lock()

    def create(self) -> None:
        """Make the lock file now (a writable open), so no hold needs space."""
        os.close(self._open())

    @contextlib.contextmanager
    def shipping(self) -> Iterator[None]:
        with self._held(fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def scanning(self) -> Iterator[None]:
        with self._held(fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def _held(self, how: int) -> Iterator[None]:
        fd = self._open()
        try:
            with self._turnstile:
                fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _open(self) -> int:
        try:
            return os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise JournalFull(f"no space left for {self._path}", path=str(self._path)) from exc
            raise JournalError(f"cannot open {self._path}: {exc}", path=str(self._path)) from exc
