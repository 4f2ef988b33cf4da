"""The last look at a scan's batch, while the journal holds its append locks."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat

import structlog

from agent.tree.walk import open_dir
from journal import IS_DIR, Entry, Op

__all__ = ["ScanRecheck"]

log = structlog.get_logger()

_S_IFMT = 0o170000
_S_IFDIR = stat.S_IFDIR
_SPECIAL = frozenset((stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK))
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


class ScanRecheck:
    """The last look at a scan's batch, run by the journal while it holds its
    append locks: what the scan decided from a listing made earlier must not
    land after what the watcher journaled about the path since.

    DELETE: a path that exists again becomes a CHANGE (IS_DIR for a
    directory). A CHANGE ships whatever the path holds when it is shipped, so
    it is right whatever happened in between, while dropping the DELETE
    would rely on the watcher having seen the re-creation (not so for a
    directory that appeared before its watch, nor across an overflow). It is
    never a DELETE followed by a CHANGE: a directory's DELETE absorbs the
    entries journaled below it before, such as the watcher's for the new
    directory's children. A path that is gone, or below something that is no
    longer a real directory (components are opened one by one, no symlink
    followed), stays a DELETE; so does one that is now a special file (not
    replicated: the mirror must not keep the old object). One on another
    filesystem now (a mount) is dropped: its state is unknown, not absent. A
    path that cannot be looked at becomes a CHANGE, which ships what is
    there, or deletes it.

    CHANGE: it ships the current state whatever happened since, but its
    IS_DIR flag tells the planner whether a delete journaled before it must
    stay (a file's PUT replaces a file by itself; not every target can put a
    directory over a file), so the flag is set to what the path is now.

    The journal may call this more than once: the counts describe the last
    call."""

    def __init__(self, root: bytes, dev: int) -> None:
        self.root = root
        self.dev = dev
        self.revived = 0  # DELETEs turned into CHANGEs
        self.dropped = 0  # DELETEs of paths now on another filesystem

    def __call__(self, batch: list[Entry]) -> list[Entry]:
        self.revived = self.dropped = 0
        parents = _Parents(self.root)
        try:
            looked = [self._look(parents, entry) for entry in batch]
        finally:
            parents.close()
        return [e for e in looked if e is not None]

    def _look(self, parents: _Parents, entry: Entry) -> Entry | None:
        try:
            st = parents.lstat(entry.path)
        except OSError as exc:
            log.warning("scan.recheck_failed", path=entry.path, error=str(exc))
            if entry.op != Op.DELETE:
                return entry
            self.revived += 1
            return dataclasses.replace(entry, op=Op.CHANGE)
        if entry.op != Op.DELETE:
            return entry if st is None else _flagged(entry, st)
        if st is None or st.st_mode & _S_IFMT in _SPECIAL:
            return entry
        if st.st_dev != self.dev:
            self.dropped += 1
            return None
        self.revived += 1
        return _flagged(Entry(Op.CHANGE, entry.path, time_ns=entry.time_ns), st)


def _flagged(entry: Entry, st: os.stat_result) -> Entry:
    """``entry`` with IS_DIR set exactly when ``st`` is a directory."""
    flags = entry.flags | IS_DIR if st.st_mode & _S_IFMT == _S_IFDIR else entry.flags & ~IS_DIR
    return entry if flags == entry.flags else dataclasses.replace(entry, flags=flags)


class _Parents:
    """lstat of paths below ``root``, each parent opened one component at a
    time (no symlink followed); the last parent stays open, since a batch's
    paths come grouped by directory."""

    def __init__(self, root: bytes) -> None:
        self.root = root
        self.rel: bytes | None = None
        self.fd: int | None = None  # None with ``rel`` set: that parent is not a real directory

    def lstat(self, rel: bytes) -> os.stat_result | None:
        parent, _, name = rel.rpartition(b"/")
        if parent != self.rel:
            self.close()
            try:
                self.fd = open_dir(self.root, parent, strict=True)
            except OSError as exc:
                if exc.errno not in _ABSENT:
                    raise
            self.rel = parent
        if self.fd is None:
            return None
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _ABSENT:
                return None
            raise

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd = self.rel = None
