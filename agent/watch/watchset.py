"""The inotify instance and its watches over the tree: every directory below
the root watched, added and dropped as the tree changes, and the kernel's
limits reported in the operator's terms (docs/design.md §4).

A directory is watched through the tree's one walker, watch first, then
list, so nothing created meanwhile escapes both; the watch is put on the
open directory, never on a path a symlink could redirect.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import structlog
from inotify_simple import INotify

from agent.tree.excludes import Excludes
from agent.tree.walk import DirListing, Walk
from agent.watch.errors import NoSpace, RootError, WatchLimitError, read_limit
from agent.watch.events import IN_DONT_FOLLOW, WATCH_MASK
from agent.watch.table import WatchTable
from journal import IS_DIR, Entry, Op

__all__ = ["WatchSet", "check_root"]

log = structlog.get_logger()


def check_root(root: Path) -> os.stat_result:
    """The root's stat; RootError when it is missing, not a directory or unreadable."""
    path = os.fsencode(root)
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise RootError(f"root {root} does not exist") from exc
    except OSError as exc:
        raise RootError(f"root {root} cannot be read: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise RootError(f"root {root} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise RootError(f"root {root} is not readable (permission denied)")
    return st


class WatchSet:
    """The watches of one root (on the filesystem ``dev``); ``table`` maps
    watch descriptors to root-relative paths. ``clock_ns`` stamps the entries
    of what a newly watched directory already holds."""

    def __init__(self, root: Path, excludes: Excludes, dev: int, clock_ns: Callable[[], int]) -> None:
        self.root = Path(root)
        self._root = os.fsencode(self.root)
        self._excludes = excludes
        self._dev = dev
        self._clock_ns = clock_ns
        self.table = WatchTable()
        try:
            self._fd: INotify | None = INotify()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                sysctl, value = read_limit("instances")
                raise WatchLimitError(
                    f"cannot create an inotify instance: {sysctl} = {value} reached ({exc.strerror})",
                    sysctl=sysctl,
                    current=value,
                    needed=(value or 0) + 1,
                ) from exc
            raise

    def __len__(self) -> int:
        return len(self.table)

    def fileno(self) -> int:
        assert self._fd is not None
        return self._fd.fileno()

    def close(self) -> None:
        if self._fd is not None:
            self._fd.close()
            self._fd = None

    def watch_tree(self, top: bytes, found: list[Entry] | None) -> bool:
        """Watch ``top`` and every directory below it; whether ``top`` itself
        is watched now. With ``found``, also journal CHANGE for everything
        already inside (a directory the watches did not cover: created, moved
        in). The walker opens each directory (no symlink followed, no mount
        point crossed) and the watch is put on that open directory, so a
        directory swapped for a link cannot make the agent watch or list
        anything outside the tree."""
        added: list[bytes] = []
        tree = Walk(
            self._root, self._excludes, self._dev, top, opened=lambda rel, fd: self._add(rel, fd, added)
        )
        try:
            for listing in tree:
                self._found(listing, found)
        except NoSpace as exc:
            raise self._limit_error(top, len(added)) from exc.__cause__
        if top == b"" and b"" not in added:
            raise RootError(f"cannot watch root {self.root}: it is gone or not readable")
        return top in added

    def remove(self, wd: int) -> None:
        assert self._fd is not None
        try:
            self._fd.rm_watch(wd)
        except OSError:
            pass  # already removed by the kernel (IN_IGNORED on its way)

    def rewatch(self) -> WatchTable:
        """After lost events the table may miss new directories or still hold
        removed ones: walk the tree again, keep only what exists, and return
        the new table."""
        before = {wd for wd, _ in self.table.items()}
        self.table = WatchTable()
        self.watch_tree(b"", None)
        for wd in before - {wd for wd, _ in self.table.items()}:
            self.remove(wd)
        return self.table

    def _found(self, listing: DirListing, found: list[Entry] | None) -> None:
        prefix = listing.rel + b"/" if listing.rel else b""
        for name, st in zip(listing.names, listing.stats):
            if stat.S_ISDIR(st.st_mode):
                flags = IS_DIR
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                flags = 0
            else:
                log.info("watch.special_skipped", path=prefix + name)
                continue
            if found is not None:
                found.append(Entry(Op.CHANGE, prefix + name, time_ns=self._clock_ns(), flags=flags))

    def _add(self, rel: bytes, fd: int, added: list[bytes]) -> bool:
        """Watch the directory open as ``fd`` (through its /proc/self/fd
        name, which is that directory whatever its path leads to now)."""
        assert self._fd is not None
        try:
            wd = self._fd.add_watch(b"/proc/self/fd/%d" % fd, WATCH_MASK & ~IN_DONT_FOLLOW)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise NoSpace from exc
            if rel == b"":
                raise RootError(f"cannot watch root {self.root}: {exc.strerror}") from exc
            log.error("watch.failed", path=rel, error=exc.strerror)
            return False
        self.table.add(wd, rel)
        added.append(rel)
        return True

    def _limit_error(self, top: bytes, added: int) -> WatchLimitError:
        below = sum(1 for _ in Walk(self._root, self._excludes, self._dev, top))
        needed = len(self.table) + below - added
        sysctl, value = read_limit("watches")
        return WatchLimitError(
            f"inotify watch limit reached: {sysctl} = {value}, watching {self.root} needs {needed} watches"
            f" ({len(self.table)} already in use by this agent)",
            sysctl=sysctl,
            current=value,
            needed=needed,
        )
