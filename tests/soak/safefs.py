"""File operations on a test tree that never go through a symlink.

The soak writer runs as root and makes symlinks that point outside its
tree; one followed link could chmod, truncate or delete a file of the
machine. So every operation descends from the root one component at a time
with ``O_NOFOLLOW | O_DIRECTORY`` and acts relative to the parent's fd;
content and metadata changes go through an fd opened with ``O_NOFOLLOW``
and checked with ``fstat``; names are bytes and never pass a shell.
A refused operation raises ``Refused`` (an ``OSError``).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Refused", "SafeTree"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NODE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Refused(OSError):
    """The operation would have followed a symlink or met the wrong type."""


def _parts(rel: bytes) -> list[bytes]:
    parts = rel.split(b"/")
    if not rel or any(p in (b"", b".", b"..") for p in parts):
        raise Refused(errno.EINVAL, f"not a plain relative path: {rel!r}")
    return parts


class SafeTree:
    """A directory tree addressed by root-relative bytes paths."""

    def __init__(self, root: bytes | str) -> None:
        self.root = os.fsencode(root)

    # ---------------------------------------------------------------- descent
    @contextmanager
    def dir_fd(self, rel: bytes, create: bool = False) -> Iterator[int]:
        """An fd of directory ``rel`` (``b""`` is the root), reached without
        following any link; ``create`` makes missing components (``mkdir -p``)."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in _parts(rel) if rel else []:
                if create:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise Refused(exc.errno, f"not a plain directory: {rel!r}") from None
                    raise
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def parent(self, rel: bytes, create: bool = False) -> Iterator[tuple[int, bytes]]:
        """The parent directory's fd and the last name of ``rel``."""
        parts = _parts(rel)
        with self.dir_fd(b"/".join(parts[:-1]), create) as fd:
            yield fd, parts[-1]

    @contextmanager
    def node(self, rel: bytes, flags: int = os.O_RDONLY) -> Iterator[tuple[int, os.stat_result]]:
        """An fd on ``rel`` itself (file, directory or fifo, never a symlink) and its stat."""
        with self.parent(rel) as (dfd, name):
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
                raise Refused(errno.ELOOP, f"not a file, directory or fifo: {rel!r}")
            fd = os.open(name, flags | _NODE_FLAGS, dir_fd=dfd)
            try:
                now = os.fstat(fd)
                if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
                    raise Refused(errno.ESTALE, f"changed while opening: {rel!r}")
                yield fd, now
            finally:
                os.close(fd)

    @contextmanager
    def regular(self, rel: bytes, flags: int) -> Iterator[tuple[int, os.stat_result]]:
        """An fd on the regular file ``rel`` (refused for anything else)."""
        with self.node(rel, flags) as (fd, st):
            if not stat.S_ISREG(st.st_mode):
                raise Refused(errno.EISDIR, f"not a regular file: {rel!r}")
            yield fd, st

    # ---------------------------------------------------------------- reading
    def lstat(self, rel: bytes) -> os.stat_result | None:
        try:
            with self.parent(rel) as (dfd, name):
                return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except (FileNotFoundError, Refused):
            return None

    def walk(self) -> list[tuple[bytes, os.stat_result]]:
        """Every entry below the root, sorted by path (so choices replay per
        seed), each with its lstat; directories are entered by fd only."""
        out: list[tuple[bytes, os.stat_result]] = []
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            self._walk_fd(fd, b"", out)
        finally:
            os.close(fd)
        out.sort(key=lambda item: item[0])
        return out

    def _walk_fd(self, fd: int, prefix: bytes, out: list) -> None:
        for name in sorted(map(os.fsencode, os.listdir(fd))):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            rel = prefix + name
            out.append((rel, st))
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                try:
                    self._walk_fd(sub, rel + b"/", out)
                finally:
                    os.close(sub)

    # ---------------------------------------------------------------- content
    def write(self, rel: bytes, data: bytes, append: bool = False, create_dirs: bool = False) -> None:
        """Create or replace (or append to) a regular file, never through a link."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | _NODE_FLAGS
        with self.parent(rel, create_dirs) as (dfd, name):
            fd = os.open(name, flags, 0o644, dir_fd=dfd)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise Refused(errno.EISDIR, f"not a regular file: {rel!r}")
                os.write(fd, data)
            finally:
                os.close(fd)

    def truncate(self, rel: bytes, size: int) -> None:
        with self.regular(rel, os.O_WRONLY) as (fd, _st):
            os.ftruncate(fd, size)

    def rewrite_same_size(self, rel: bytes, data: bytes) -> None:
        """Overwrite the start of a file in place and restore its old times
        (what ``cp -p`` or ``touch -d`` leave behind)."""
        with self.regular(rel, os.O_RDWR) as (fd, st):
            os.pwrite(fd, data[: st.st_size], 0)
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))

    # ---------------------------------------------------------------- metadata
    def chmod(self, rel: bytes, mode: int) -> None:
        with self.node(rel) as (fd, _st):
            os.fchmod(fd, mode)

    def chown(self, rel: bytes, uid: int, gid: int) -> None:
        with self.node(rel) as (fd, _st):
            os.fchown(fd, uid, gid)

    def utime(self, rel: bytes, mtime_ns: int) -> None:
        with self.node(rel) as (fd, st):
            os.utime(fd, ns=(st.st_atime_ns, mtime_ns))

    # ---------------------------------------------------------------- names
    def mkdir_p(self, rel: bytes) -> None:
        with self.dir_fd(rel, create=True):
            pass

    def symlink(self, target: bytes, rel: bytes) -> None:
        with self.parent(rel) as (dfd, name):
            os.symlink(target, name, dir_fd=dfd)

    def mkfifo(self, rel: bytes) -> None:
        with self.parent(rel) as (dfd, name):
            os.mkfifo(name, 0o644, dir_fd=dfd)

    def link(self, src: bytes, dst: bytes) -> None:
        """A hard link (of the entry itself, never of what a symlink names)."""
        with self.parent(src) as (sfd, sname), self.parent(dst) as (dfd, dname):
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)

    def rename(self, src: bytes, dst: bytes) -> None:
        """rename(2): replaces a file, a symlink or an empty directory at ``dst``."""
        with self.parent(src) as (sfd, sname), self.parent(dst) as (dfd, dname):
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)

    def remove(self, rel: bytes) -> None:
        """Delete ``rel``: a directory with everything below it, anything else unlinked."""
        with self.parent(rel) as (dfd, name):
            _remove_at(dfd, name)


def _remove_at(dfd: int, name: bytes) -> None:
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    try:
        for child in map(os.fsencode, os.listdir(fd)):
            _remove_at(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dfd)
