"""Capture the state of a path on disk as a journal ``FileState``.

Shared by the scanner (what changed?) and the replayer (what was shipped?).
"""

from __future__ import annotations

import errno
import os
import stat

import blake3

from agent.walk import open_dir
from journal import FileKind, FileState

__all__ = ["kind_of", "state_from_stat", "capture", "digest_file", "same_metadata", "lstat_below"]

_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)

_CHUNK = 1 << 20


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
    )


def digest_file(path: bytes) -> bytes:
    """blake3 of a regular file's content, read without following a final symlink."""
    h = blake3.blake3()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.digest()


def capture(abspath: bytes, *, with_digest: bool = True) -> FileState | None:
    """State of ``abspath`` now (None when it does not exist). Symlinks are not
    followed. A file that changes while being hashed is hashed again (bounded),
    so the digest belongs to the returned stat."""
    for _ in range(3):
        try:
            st = os.lstat(abspath)
            kind = kind_of(st.st_mode)
            if kind == FileKind.SYMLINK:
                target = os.readlink(abspath)
                return state_from_stat(st, blake3.blake3(target).digest(), target)
            if kind != FileKind.FILE or not with_digest:
                return state_from_stat(st)
            digest = digest_file(abspath)
            after = os.lstat(abspath)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        if (after.st_mtime_ns, after.st_size, after.st_ino, after.st_ctime_ns) == (
            st.st_mtime_ns,
            st.st_size,
            st.st_ino,
            st.st_ctime_ns,
        ):
            return state_from_stat(st, digest)
    return state_from_stat(after)  # still changing: no digest, so it stays suspect


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
