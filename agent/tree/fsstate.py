"""Capture the state of a path on disk as a journal ``FileState``.

Shared by the scanner (what changed?) and the replayer (what was shipped?).
"""

from __future__ import annotations

import errno
import os
import stat

import blake3

from agent.tree.walk import open_dir, open_parent
from journal import FileKind, FileState

__all__ = [
    "kind_of",
    "state_from_stat",
    "capture",
    "capture_at",
    "capture_in",
    "digest_file",
    "same_metadata",
    "lstat_below",
]

_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)

_CHUNK = 1 << 20
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def kind_of(mode: int) -> FileKind:
    if stat.S_ISREG(mode):
        return FileKind.FILE
    if stat.S_ISDIR(mode):
        return FileKind.DIR
    if stat.S_ISLNK(mode):
        return FileKind.SYMLINK
    return FileKind.OTHER


def state_from_stat(st: os.stat_result, digest: bytes = b"", link: bytes = b"") -> FileState:
    kind = kind_of(st.st_mode)
    return FileState(
        kind=kind,
        size=st.st_size if kind != FileKind.DIR else 0,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        digest=digest,
        link=link,
        nlink=st.st_nlink if kind != FileKind.DIR else 1,
    )


def digest_file(path: bytes) -> bytes:
    """blake3 of a regular file's content, read without following a final symlink."""
    fd = os.open(path, _OPEN_FILE)
    try:
        return _digest_fd(fd)
    finally:
        os.close(fd)


def _digest_fd(fd: int) -> bytes:
    h = blake3.blake3()
    while chunk := os.read(fd, _CHUNK):
        h.update(chunk)
    return h.digest()


def capture(abspath: bytes, *, with_digest: bool = True) -> FileState | None:
    """State of ``abspath`` now (None when it does not exist), trusting every
    directory on the way. The agent itself captures with :func:`capture_in`,
    which trusts none."""
    parent, _, name = abspath.rpartition(b"/")
    try:
        fd = os.open(parent or b"/", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return capture_at(fd, name, None, with_digest=with_digest)
    finally:
        os.close(fd)


def capture_in(root: bytes, rel: bytes, dev: int, *, with_digest: bool = True) -> FileState | None:
    """State of ``rel`` below ``root`` now (None when it does not exist),
    reached without following any symlink or crossing a mount point: a
    component swapped for a link to elsewhere reads nothing outside the tree
    (ELOOP/ENOTDIR: the path, as the tree holds it, does not exist).
    Another filesystem on the way raises ``OSError(EXDEV)``."""
    if not rel:  # the root itself, as configured
        try:
            return state_from_stat(os.stat(root))
        except (FileNotFoundError, NotADirectoryError):
            return None
    try:
        fd, name = open_parent(root, rel, dev)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # a component is a symlink now: the directory is gone from the tree
        raise
    try:
        return capture_at(fd, name, dev, with_digest=with_digest)
    finally:
        os.close(fd)


def capture_at(dir_fd: int, name: bytes, dev: int | None, *, with_digest: bool = True) -> FileState | None:
    """State of the entry ``name`` of the open directory ``dir_fd`` (None when
    absent). Symlinks are not followed; with ``dev``, an entry on another
    device (a mount point) raises ``OSError(EXDEV)``. A file that changes
    while being hashed is hashed again (bounded), so the digest belongs to
    the returned stat."""
    after = None
    for _ in range(3):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if dev is not None and st.st_dev != dev:
                raise OSError(errno.EXDEV, "another filesystem (a mount point)", name)
            kind = kind_of(st.st_mode)
            if kind == FileKind.SYMLINK:
                target = os.readlink(name, dir_fd=dir_fd)
                return state_from_stat(st, blake3.blake3(target).digest(), target)
            if kind != FileKind.FILE or not with_digest:
                return state_from_stat(st)
            digest, after = _digest_at(dir_fd, name, st)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if digest is not None:
            return state_from_stat(st, digest)
    return state_from_stat(after or st)  # still changing: no digest, so it stays suspect


def _digest_at(dir_fd: int, name: bytes, st: os.stat_result) -> tuple[bytes | None, os.stat_result]:
    """(digest, stat after) of the file ``st`` describes; the digest is None
    when the name now holds another file or the file changed while read."""
    fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    try:
        before = os.fstat(fd)
        if (before.st_dev, before.st_ino) != (st.st_dev, st.st_ino):
            return None, before
        digest = _digest_fd(fd)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_mtime_ns, after.st_size, after.st_ctime_ns) == (st.st_mtime_ns, st.st_size, st.st_ctime_ns):
        return digest, after
    return None, after


def same_metadata(a: FileState, b: FileState) -> bool:
    """True when two states agree on everything stat tells (not the digest)."""
    return (a.kind, a.size, a.mode, a.uid, a.gid, a.mtime_ns, a.ctime_ns, a.inode, a.link) == (
        b.kind,
        b.size,
        b.mode,
        b.uid,
        b.gid,
        b.mtime_ns,
        b.ctime_ns,
        b.inode,
        b.link,
    )


def lstat_below(root: bytes, rel: bytes) -> os.stat_result | None:
    """lstat of ``rel`` (not empty) reached from ``root`` one component at a
    time, no symlink followed: a symlink swapped in on the way leads nowhere.
    None when it is absent or a component is not a real directory."""
    parent, _, name = rel.rpartition(b"/")
    try:
        fd = open_dir(root, parent, strict=True)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        raise
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        raise
    finally:
        os.close(fd)
