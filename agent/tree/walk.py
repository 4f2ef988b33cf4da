"""Walk one filesystem below a root, one directory listing at a time: the
tree's one walker, used by the scanner, the watcher, the replayer's capture,
verify's audits, replay and the msync shipper's tree planning.

The walk never follows a symlink, never leaves the root's filesystem and never
descends into an excluded directory. The root itself is trusted as configured
(a symlinked root is followed once); nothing below it is. Directories are opened with
``O_NOFOLLOW`` and checked against the (dev, inode) seen in their parent's
listing, so a directory swapped for a symlink mid-walk cannot lead the walk
out of the root; such a directory is reported as skipped instead.

Paths are ``bytes`` relative to the root, never decoded. Paths longer than
``PATH_MAX`` are reached by opening one component at a time. A single path
is reached the same way by :func:`open_parent` (every component opened with
``O_NOFOLLOW`` relative to its parent and checked to lie on the root's
device), so whatever is then read relative to its fd is inside the tree.

Order, for speed: a directory's entries are stat'ed in name order and its
subdirectories walked in inode order (closer together on disk and in the
caches than the order of the listing); names an exclude pattern rejects
whatever their type are dropped before they are stat'ed.

A walk can be shared: :meth:`Walk.split` takes pending directories off it
and another walk (in another process) takes them over (:meth:`Walk.over`);
each is checked to be the directory (inode) the first walk listed.
"""

from __future__ import annotations

import errno
import operator
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

import structlog

from agent.tree.excludes import Excludes

__all__ = ["DirListing", "Walk", "join", "open_dir", "open_parent", "relpath_problem", "root_dev", "split"]

log = structlog.get_logger()

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_LONG = 3000  # absolute paths at least this long are opened component by component
_S_IFMT = 0o170000
_S_IFDIR = stat.S_IFDIR
_DEV = operator.attrgetter("st_dev")
_MODE = operator.attrgetter("st_mode")

_Listed = tuple[list[bytes], list[os.stat_result], list[tuple[bytes, int]]]  # names, stats, (subdir, inode)


def _by_inode(subdir: tuple[bytes, int]) -> int:
    return subdir[1]


def join(parent: bytes, name: bytes) -> bytes:
    """Relative path of ``name`` inside ``parent`` (``b""`` is the root)."""
    return parent + b"/" + name if parent else name


def split(rel: bytes) -> tuple[bytes, bytes]:
    """(parent, name) of a relative path; the parent of a top entry is ``b""``."""
    parent, _, name = rel.rpartition(b"/")
    return parent, name


def relpath_problem(rel: bytes) -> str | None:
    """Why ``rel`` is not a clean path relative to the root (not empty, not
    absolute, no NUL byte, no empty, ``.`` or ``..`` component), or None."""
    if not rel:
        return "empty path"
    if rel.startswith(b"/") or b"\0" in rel:
        return "path is absolute or holds a NUL byte"
    if any(part in (b"", b".", b"..") for part in rel.split(b"/")):
        return "path has an empty, '.' or '..' component"
    return None


def root_dev(root: bytes) -> int:
    """The device of the tree: nothing on another one belongs to it."""
    return os.stat(root).st_dev


def open_dir(root: bytes, rel: bytes, *, strict: bool = False, dev: int | None = None) -> int:
    """Open the directory ``rel`` below ``root``. The root itself is trusted
    as configured (a symlinked root is followed). The last component is never
    followed if it is a symlink; with ``strict`` (and for paths too long for
    one call) no component is, so the result is certainly inside ``root``.
    With ``dev`` every component must also lie on that device (no mount
    point is crossed): otherwise ``OSError(EXDEV)``."""
    if not rel:
        fd = os.open(root, _ROOT_FLAGS)
        try:
            _check_dev(fd, dev, b"")
        except BaseException:
            os.close(fd)
            raise
        return fd
    if not strict and dev is None and len(root) + len(rel) < _LONG:
        return os.open(join(root, rel), _DIR_FLAGS)
    fd = os.open(root, _ROOT_FLAGS)
    try:
        _check_dev(fd, dev, b"")
        for part in rel.split(b"/") if rel else ():
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
            _check_dev(fd, dev, rel)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_parent(root: bytes, rel: bytes, dev: int) -> tuple[int, bytes]:
    """(open directory holding ``rel``, its last name), reached without
    following a symlink or crossing a mount point, so whatever is then read
    relative to the fd lies inside the tree. ``rel`` must be a clean
    relative path (:func:`relpath_problem`): ValueError."""
    if relpath_problem(rel) is not None:
        raise ValueError(f"not a path inside the tree: {rel!r}")
    parent, name = split(rel)
    return open_dir(root, parent, strict=True, dev=dev), name


def _check_dev(fd: int, dev: int | None, rel: bytes) -> None:
    if dev is not None and os.fstat(fd).st_dev != dev:
        raise OSError(errno.EXDEV, "another filesystem (a mount point) on the way", rel)


@dataclass(slots=True)
class DirListing:
    """One directory's entries that belong to the walk (same filesystem, not
    excluded). ``fd`` is the open directory; it stays valid only until the
    walk is asked for the next listing."""

    rel: bytes
    fd: int
    names: list[bytes]
    stats: list[os.stat_result]  # lstat of names[i], in the same order
    dirs: int = 0  # how many of the entries are directories


@dataclass
class Walk:
    """Iterate :class:`DirListing` for ``start`` (relative to ``root``) and
    every directory below it, parents before children. A walk is iterated
    once: it consumes :attr:`pending` as it goes.

    After iteration, :attr:`skipped` holds the directories and entries that
    were not looked into (another filesystem, unreadable, replaced while
    walking): their contents are unknown, not absent. ``opened`` is called
    with each directory's checked fd before it is listed (the watcher adds
    its watch there, so nothing created meanwhile escapes both).
    """

    root: bytes
    excludes: Excludes
    dev: int
    start: bytes = b""
    skipped: list[bytes] = field(default_factory=list)
    vanished: list[bytes] = field(default_factory=list)  # listed directories gone before they were opened
    errors: int = 0
    opened: Callable[[bytes, int], bool] | None = None  # sees each checked directory before its listing
    pending: list[tuple[bytes, int | None]] = field(init=False)  # still to walk; the last is next

    def __post_init__(self) -> None:
        self.pending = [(self.start, None)]

    def split(self) -> list[tuple[bytes, int]]:
        """Hand over the half of the pending directories this walk would reach
        last (the shallowest, so likely the largest subtrees) for another walk
        to take, as (path, inode seen in its parent's listing). At least one
        stays here; with fewer than two pending, nothing is handed over."""
        half = len(self.pending) // 2
        taken = [(rel, ino) for rel, ino in self.pending[:half] if ino is not None]
        if len(taken) < half:
            return []  # the start itself, not listed by a parent here: not handed over
        del self.pending[:half]
        return taken

    @classmethod
    def over(
        cls, root: bytes, excludes: Excludes, dev: int, subtrees: list[tuple[bytes, int]], **kw: Any
    ) -> Walk:
        """A walk of the directories another walk's :meth:`split` handed over."""
        walk = cls(root, excludes, dev, subtrees[-1][0], **kw)
        walk.pending = list(subtrees)
        return walk

    def __iter__(self) -> Iterator[DirListing]:
        stack = self.pending
        while stack:
            rel, ino = stack.pop()
            fd = self._open(rel, ino)
            if fd is None:
                continue
            try:
                if self.opened is not None and not self.opened(rel, fd):
                    continue  # the caller declined it: not listed, not descended
                names, stats, subdirs = self._list(rel, fd)
                subdirs.sort(key=_by_inode, reverse=True)  # popped in inode order: closer on disk, in caches
                stack.extend(subdirs)  # before the listing is handed out, so a split can take them
                yield DirListing(rel, fd, names, stats, len(subdirs))
            finally:
                os.close(fd)

    def _open(self, rel: bytes, ino: int | None) -> int | None:
        try:
            fd = open_dir(self.root, rel, strict=ino is None)  # no parent listing to check against
        except FileNotFoundError:
            self.vanished.append(rel)  # since its parent was listed: its contents are gone
            return None
        except OSError as exc:
            self._skip(rel, "unreadable", exc)
            return None
        st = os.fstat(fd)
        if st.st_dev != self.dev or (ino is not None and st.st_ino != ino):
            os.close(fd)
            self._skip(rel, "replaced", None)
            return None
        return fd

    def _list(self, rel: bytes, fd: int) -> _Listed:
        """Stat every entry of the open directory ``fd``; sort out the ones
        the walk does not cover and the subdirectories to descend into.
        Names excluded whatever their type are dropped before any stat."""
        prefix = rel + b"/" if rel else b""
        try:
            names = self.excludes.prune_names(self._names(rel, fd))
        except OSError as exc:
            self._skip(rel, "unreadable", exc)
            return [], [], []
        names.sort()  # deterministic; and the manifest, read in key order, is then looked up in order
        lstat = os.stat
        try:  # the common case in one pass: nothing vanishes, no mount point
            stats = [lstat(name, dir_fd=fd, follow_symlinks=False) for name in names]
        except OSError:
            return self._list_each(rel, fd, names)
        if not set(map(_DEV, stats)) <= {self.dev}:
            return self._list_each(rel, fd, names)
        check = self.excludes.child_matcher(rel)
        if check is not None:
            kept = [not check(name, stat.S_ISDIR(st.st_mode)) for name, st in zip(names, stats)]
            names, stats = list(compress(names, kept)), list(compress(stats, kept))
        dirs = compress(zip(names, stats), map(stat.S_ISDIR, map(_MODE, stats)))
        return names, stats, [(prefix + name, st.st_ino) for name, st in dirs]

    def _list_each(self, rel: bytes, fd: int, names: list[bytes]) -> _Listed:
        """:meth:`_list` entry by entry, for a directory with an entry that
        vanished, cannot be stat'ed, or is a mount point."""
        kept: list[bytes] = []
        stats: list[os.stat_result] = []
        subdirs: list[tuple[bytes, int]] = []
        dev, lstat = self.dev, os.stat
        check = self.excludes.child_matcher(rel)
        prefix = rel + b"/" if rel else b""
        for name in names:
            try:
                st = lstat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished: absent, like any deleted path
            except OSError as exc:
                self._skip(prefix + name, "unstatable", exc)
                continue
            is_dir = st.st_mode & _S_IFMT == _S_IFDIR
            if check is not None and check(name, is_dir):
                continue
            if st.st_dev != dev:  # a mount point (a bind-mounted file too)
                self._skip(prefix + name, "other_filesystem", None)
                continue
            kept.append(name)
            stats.append(st)
            if is_dir:
                subdirs.append((prefix + name, st.st_ino))
        return kept, stats, subdirs

    def _names(self, rel: bytes, fd: int) -> list[bytes]:
        """Entry names as bytes. Listing by path yields bytes directly (no
        per-name encoding); the names are then stat'ed relative to ``fd``,
        the directory whose identity was checked."""
        if len(self.root) + len(rel) < _LONG:
            return os.listdir(join(self.root, rel) if rel else self.root)
        return [os.fsencode(n) for n in os.listdir(fd)]

    def _skip(self, rel: bytes, why: str, exc: OSError | None) -> None:
        """Remember a path whose contents stay unknown; errors are warnings, a
        mount point or a directory replaced mid-walk is ordinary."""
        self.skipped.append(rel)
        if exc is not None and exc.errno != errno.ENOENT:
            self.errors += 1
            log.warning("scan.skip", path=rel, reason=why, error=str(exc))
        else:
            log.info("scan.skip", path=rel, reason=why)
