"""Special files (fifo, socket, device) met by the watcher: not journaled,
one log line each; their directory's mtime is (docs/design.md §1.1, §4).

Every CHANGE or ATTR of a non-directory that was not seen written (a path
seen written is journaled without looking: docs/design.md §4) asks
:meth:`Specials.is_special`, one ``lstat`` per path and batch: it is read
relative to an fd on the root, which spares the kernel walking the root's
own path every time. That fd is held for
one batch only: an open root is not freed when it is deleted, and its
IN_DELETE_SELF would wait for the fd to close.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

import structlog

from journal import IS_DIR, Entry, Op

__all__ = ["Specials"]

log = structlog.get_logger()


class Specials:
    """Threading: the watcher thread only."""

    def __init__(self, root: bytes) -> None:
        self._root = root
        self._fd: int | None = None
        self._specials_logged: set[bytes] = set()
        self._special_parents: dict[bytes, int] = {}  # directory -> mtime journaled for a special inside

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Lookups inside go through one fd on the root, closed at the end."""
        try:
            yield
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _lstat(self, rel: bytes) -> os.stat_result:
        if self._fd is None:
            self._fd = os.open(self._root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return os.lstat(rel, dir_fd=self._fd)

    def is_special(self, rel: bytes, cache: dict[bytes, bool]) -> bool:
        """FIFOs, sockets and devices are not mirrored: no entry, one log line."""
        if rel not in cache:
            try:
                mode = self._lstat(rel).st_mode
            except OSError:
                mode = stat.S_IFREG  # gone or unreadable: keep the entry, the replayer looks
            cache[rel] = not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))
            if cache[rel] and rel not in self._specials_logged:
                if len(self._specials_logged) >= 10_000:
                    self._specials_logged.clear()  # bounded memory; at worst a repeated line
                self._specials_logged.add(rel)
                log.info("watch.special_skipped", path=rel)
        return cache[rel]

    def parent_entry(self, e: Entry) -> list[Entry]:
        """Making a special file moves its directory's mtime, which mirrors do
        carry: journal the directory, but only when its mtime is one not
        journaled yet (a busy fifo's writes move nothing). The root's own
        metadata is not replicated."""
        parent = e.path.rpartition(b"/")[0]
        if not parent:
            return []
        try:
            mtime = self._lstat(parent).st_mtime_ns
        except OSError:
            return []
        if self._special_parents.get(parent) == mtime:
            return []
        if len(self._special_parents) >= 10_000:
            self._special_parents.clear()  # bounded memory; at worst one more entry
        self._special_parents[parent] = mtime
        return [Entry(Op.CHANGE, parent, time_ns=e.time_ns, flags=IS_DIR)]
