"""Member-side effects of the msync double: makuosan's statcmp and what a
receiver does with a send, a delete or a check (docs/msync.md §5).

Every write is confined to a *jail* directory (the test's tmp dir): the
double reproduces ``..`` escapes and symlink chmods, but never lets them
touch anything outside the test.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from itertools import count

__all__ = [
    "JailError",
    "check_jail",
    "lstat_or_none",
    "needs_update",
    "apply_entry",
    "remove_entry",
    "same_content",
    "leave_partial",
    "listdir",
]

_TEMP_SEQ = count(os.getpid() * 1000)


class JailError(RuntimeError):
    """The double was asked to write outside the test's directory."""


def lstat_or_none(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _sec(st: os.stat_result) -> int:
    return st.st_mtime_ns // 1_000_000_000


def listdir(path: bytes) -> list[bytes]:
    """Names in directory-read order, as makuosan's walks see them (never sorted)."""
    return os.listdir(path)


def needs_update(src: os.stat_result, dst_path: bytes, as_root: bool, src_path: bytes) -> bool:
    """makuosan's statcmp: mtime in whole seconds, mode, size of regular
    files, type/rdev, and owner only when the receiver runs as root. Content
    is never compared. A symlink is compared by its target and owner, never
    by its own mtime (members give it the time of the send)."""
    dst = lstat_or_none(dst_path)
    if dst is None or stat.S_IFMT(src.st_mode) != stat.S_IFMT(dst.st_mode):
        return True
    if stat.S_ISFIFO(src.st_mode):
        return True  # a member never keeps a fifo's mtime, so every send updates it
    if stat.S_ISLNK(src.st_mode):
        owner = (src.st_uid & 0xFFFF, src.st_gid & 0xFFFF) != (dst.st_uid, dst.st_gid)
        return os.readlink(src_path) != os.readlink(dst_path) or (as_root and owner)
    if _sec(src) != _sec(dst) or stat.S_IMODE(src.st_mode) != stat.S_IMODE(dst.st_mode):
        return True
    if stat.S_ISREG(src.st_mode) and src.st_size != dst.st_size:
        return True
    if (stat.S_ISCHR(src.st_mode) or stat.S_ISBLK(src.st_mode)) and src.st_rdev != dst.st_rdev:
        return True
    return as_root and ((src.st_uid & 0xFFFF, src.st_gid & 0xFFFF) != (dst.st_uid, dst.st_gid))


def check_jail(jail: bytes, path: bytes) -> None:
    real = os.path.realpath(path)
    if real != jail and not real.startswith(jail.rstrip(b"/") + b"/"):
        raise JailError(f"msync double refuses to write outside {jail!r}: {real!r}")


def _make_parents(parent: bytes, jail: bytes) -> None:
    """Missing parents are created 0755 with the current mtime (§5). Like
    makuosan's mcreatedir, a parent that exists but is not a directory (a
    file, a symlink) is removed and replaced by a directory."""
    missing = []
    while (st := lstat_or_none(parent)) is None or not stat.S_ISDIR(st.st_mode):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for d in reversed(missing):
        check_jail(jail, d)
        if lstat_or_none(d) is not None:
            os.unlink(d)
        os.mkdir(d)
        os.chmod(d, 0o755)


def _create_temp(src: bytes, tmp: bytes, st: os.stat_result) -> None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        with open(src, "rb") as fin, open(tmp, "xb") as fout:
            shutil.copyfileobj(fin, fout)
            copied = fout.tell()
        if copied != st.st_size:  # the source changed size during the send (§5)
            os.unlink(tmp)
            raise OSError(errno.EIO, "close error")
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), tmp)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(tmp, 0o600)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        os.mknod(tmp, mode, st.st_rdev)
    else:
        raise OSError(errno.EINVAL, "unsupported file type")


def _set_filestat(dst: bytes, st: os.stat_result, as_root: bool, jail: bytes, log: bytes) -> None:
    """Like makuosan's set_filestat: chmod() follows a symlink, so a link's
    target becomes 0777 (§5 hazard). Outside the jail that chmod is only logged."""
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(dst)
        if lstat_or_none(target) is not None:
            try:
                check_jail(jail, target)
                os.chmod(dst, stat.S_IMODE(st.st_mode))
            except JailError:
                with open(log, "ab") as f:
                    f.write(target + b"\n")
    else:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    if as_root:
        os.chown(dst, st.st_uid & 0xFFFF, st.st_gid & 0xFFFF, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        os.utime(dst, follow_symlinks=False)  # members keep the time of the send, not the source's
        return
    secs = _sec(st) * 1_000_000_000
    atime = (st.st_ctime_ns // 1_000_000_000) * 1_000_000_000
    os.utime(dst, ns=(atime, secs), follow_symlinks=False)


def apply_entry(
    src: bytes, dst: bytes, st: os.stat_result, *, as_root: bool, jail: bytes, log: bytes
) -> None:
    """Write one entry on a member: a temp ``NAME.makuoNNNNNNNNN`` then rename
    (15 bytes of suffix, so names over 240 bytes fail with ENAMETOOLONG)."""
    check_jail(jail, os.path.dirname(dst) or b".")
    _make_parents(os.path.dirname(dst), jail)
    old = lstat_or_none(dst)
    if stat.S_ISDIR(st.st_mode):
        if old is not None and not stat.S_ISDIR(old.st_mode):
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        if old is None:
            os.mkdir(dst, 0o700)
        _set_filestat(dst, st, as_root, jail, log)
        return
    tmp = _temp_name(dst)
    _create_temp(src, tmp, st)
    try:
        if old is not None and stat.S_ISDIR(old.st_mode):
            shutil.rmtree(dst)
        os.rename(tmp, dst)
    except OSError:
        remove_entry(tmp)
        raise
    _set_filestat(dst, st, as_root, jail, log)


def _temp_name(dst: bytes) -> bytes:
    return dst + b".makuo%09d" % (next(_TEMP_SEQ) % 1_000_000_000)


def leave_partial(src: bytes, dst: bytes, st: os.stat_result, jail: bytes) -> None:
    """A member cut off mid-transfer: the first half of the file stays in its
    temp ``NAME.makuoNNNNNNNNN`` and is never renamed into place."""
    check_jail(jail, os.path.dirname(dst) or b".")
    _make_parents(os.path.dirname(dst), jail)
    with open(src, "rb") as fin:
        data = fin.read(max(0, st.st_size // 2))
    fd = os.open(_temp_name(dst), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fout:
        fout.write(data)


def remove_entry(path: bytes) -> None:
    """Delete a member entry, recursively for a directory (not following links)."""
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def same_content(a: bytes, b: bytes) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()
