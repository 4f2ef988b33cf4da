"""Mirror-side file operations for the local shipper, all through directory
file descriptors and none following a symlink: open a chain of real
directories, remove a tree, rename over an entry, copy bytes, sweep the temp
files a killed ship left, and flush a filesystem (``syncfs``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import stat
from collections.abc import Sequence

__all__ = [
    "DIR_FLAGS",
    "NOT_A_DIR",
    "TMP_FLAGS",
    "syncfs",
    "split_path",
    "lstat_at",
    "mount_points",
    "open_chain",
    "remove",
    "replace",
    "copy_bytes",
    "tmp_name",
    "sweep_temps",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
NOT_A_DIR = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
_REPLACE_ERRNOS = (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR)
_COPY_CHUNK = 1 << 22
_TMP_RE = re.compile(rb"\.msync-agent\.[0-9a-f]{16}\.tmp")


_LIBC = ctypes.CDLL(None, use_errno=True)


def syncfs(fd: int) -> None:
    """Flush every dirty page of the filesystem holding ``fd`` (Linux syncfs)."""
    if _LIBC.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def split_path(path: bytes) -> tuple[list[bytes], bytes]:
    """(parent components, last name) of a relative path."""
    *parents, name = path.split(b"/")
    return parents, name


def lstat_at(name: bytes, dir_fd: int) -> os.stat_result | None:
    """``name`` in ``dir_fd`` not followed, or None when it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def mount_points(dir_fd: int, names: set[bytes]) -> set[bytes]:
    """Entries of a source directory on another filesystem: the tree stops
    there, so they are neither copied nor removed from the mirror."""
    dev = os.fstat(dir_fd).st_dev
    return {n for n in names if (st := lstat_at(n, dir_fd)) is not None and st.st_dev != dev}


def open_chain(root_fd: int, parts: Sequence[bytes]) -> tuple[int, list[os.stat_result]] | None:
    """Open ``parts`` below ``root_fd`` as real directories only; None when one
    is missing or is not a directory (a symlink counts as not a directory)."""
    fd, stats = os.dup(root_fd), []
    for part in parts:
        try:
            nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in NOT_A_DIR:
                return None
            raise
        os.close(fd)
        fd = nfd
        stats.append(os.fstat(fd))
    return fd, stats


def remove(dir_fd: int, name: bytes) -> bool:
    """Remove ``name`` (a whole tree for a directory) without following links."""
    st = lstat_at(name, dir_fd)
    if st is None:
        return False
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        try:
            for child in os.listdir(fd):
                remove(fd, os.fsencode(child))
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
    return True


def replace(dir_fd: int, tmp: bytes, name: bytes) -> None:
    """Rename ``tmp`` over ``name``; a directory in the way is removed first."""
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in _REPLACE_ERRNOS:
            raise
        remove(dir_fd, name)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def copy_bytes(src: int, dst: int) -> int:
    copied = 0
    try:
        while n := os.copy_file_range(src, dst, _COPY_CHUNK):
            copied += n
        return copied
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) or copied:
            raise
    while chunk := os.read(src, _COPY_CHUNK):
        view = memoryview(chunk)
        while view:  # a short write (a filling disk) must not pass for a full one
            view = view[os.write(dst, view) :]
        copied += len(chunk)
    return copied


def tmp_name() -> bytes:
    return b".msync-agent." + secrets.token_hex(8).encode() + b".tmp"


def sweep_temps(sdir: int, mdir: int) -> None:
    """Remove temp files a killed ship left in a mirror directory (ours are
    all renamed or removed by now); a source entry of the same name stays."""
    for name in map(os.fsencode, os.listdir(mdir)):
        if _TMP_RE.fullmatch(name) and lstat_at(name, sdir) is None:
            remove(mdir, name)
