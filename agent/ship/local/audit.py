"""Audit of a local mirror for ``agent verify``: a direct compare with the tree,
every entry read relative to its directory's checked fd."""

from __future__ import annotations

import errno
import os
import stat
import time

from agent.ship.findings import AuditError, Finding
from agent.tree.excludes import Excludes
from agent.tree.fsstate import kind_of
from agent.tree.walk import Walk, join, open_dir, root_dev, split
from journal import FileKind

__all__ = ["compare_trees"]

_CHUNK = 1 << 20
_OWNERS = os.geteuid() == 0  # a local mirror carries owners only when shipped as root
_Stat = os.stat_result
_Listing = tuple[int | None, dict[bytes, _Stat]]
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _same_content(src_dir: int, dst_dir: int, name: bytes, size: int) -> bool:
    """Byte for byte, ``name`` in both open directories (both stat'ed at
    ``size`` bytes). A file smaller than a chunk is read with one call per
    side: the request is one byte more than ``size``, so a short answer of
    exactly ``size`` bytes is the end. A file read to its end on one side
    only, or longer than it was stat'ed, differs."""
    fa, fb = os.open(name, _OPEN_FILE, dir_fd=src_dir), None
    try:
        fb = os.open(name, _OPEN_FILE, dir_fd=dst_dir)
        want, total = min(size + 1, _CHUNK), 0
        while True:
            ca, cb = os.read(fa, want), os.read(fb, want)
            if ca != cb:
                return False
            total += len(ca)
            if not ca or (len(ca) < want and total == size):
                return True
            want = _CHUNK
    finally:
        os.close(fa)
        if fb is not None:
            os.close(fb)


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def _entry_diff(src_dir: int, dst_dir: int, name: bytes, s: os.stat_result, d: os.stat_result) -> str | None:
    """The first difference of the entry ``name`` of two open directories,
    in the order type, symlink target, mode, owner (when this process could
    have set it), content, mtime (ns; files, directories and symlinks alike).
    mtime is reported only when it is the one difference, so a rewritten
    file reads as a content change."""
    ks, kd = kind_of(s.st_mode), kind_of(d.st_mode)
    if ks == FileKind.OTHER:
        return f"not replicated: special file, but the mirror holds a {_kind_name(d.st_mode)}"
    if ks != kd:
        return f"type differs (source {ks.name.lower()}, mirror {kd.name.lower()})"
    if ks == FileKind.SYMLINK and os.readlink(name, dir_fd=src_dir) != os.readlink(name, dir_fd=dst_dir):
        return "symlink target differs"
    if ks != FileKind.SYMLINK and stat.S_IMODE(s.st_mode) != stat.S_IMODE(d.st_mode):
        return f"mode differs (source {stat.S_IMODE(s.st_mode):o}, mirror {stat.S_IMODE(d.st_mode):o})"
    if _OWNERS and (s.st_uid, s.st_gid) != (d.st_uid, d.st_gid):
        return f"owner differs (source {s.st_uid}:{s.st_gid}, mirror {d.st_uid}:{d.st_gid})"
    if ks == FileKind.FILE and (
        s.st_size != d.st_size or not _same_content(src_dir, dst_dir, name, s.st_size)
    ):
        return "content differs"
    if s.st_mtime_ns != d.st_mtime_ns:
        return f"mtime differs (source {_when(s.st_mtime_ns)}, mirror {_when(d.st_mtime_ns)})"
    return None


def _kind_name(mode: int) -> str:
    kind = kind_of(mode)
    return "special file" if kind == FileKind.OTHER else kind.name.lower()


def _mirror_listing(
    dst_root: bytes, rel: bytes, excludes: Excludes, dev: int
) -> tuple[int | None, dict[bytes, _Stat]]:
    """(open fd, name -> lstat) of the mirror's directory ``rel``, reached
    without following a symlink or crossing a mount point; (None, {}) when
    the mirror holds no such directory there."""
    try:
        fd = open_dir(dst_root, rel, strict=True, dev=dev)
    except (FileNotFoundError, NotADirectoryError):
        return None, {}
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV):
            return None, {}  # a link or a mount where the directory should be: its type is reported above
        raise
    out: dict[bytes, _Stat] = {}
    for name in map(os.fsencode, os.listdir(fd)):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not excludes.match_self(join(rel, name), stat.S_ISDIR(st.st_mode)):
            out[name] = st
    return fd, out


def compare_trees(src_root: bytes, dst_root: bytes, excludes: Excludes) -> list[Finding]:
    """Direct compare of a tree with its mirror (see ``_entry_diff``), and
    extra entries on the mirror (reported once, at their top). The source
    is read by the tree's one walker (no symlink followed, no mount point
    crossed); a mount point's name is neither compared nor, on the mirror,
    called extra."""
    if not os.path.isdir(dst_root):
        raise AuditError(f"mirror {dst_root.decode('utf-8', 'backslashreplace')} is not a directory")
    findings: list[Finding] = []
    tree = Walk(src_root, excludes, root_dev(src_root))
    mirror_dev, seen = root_dev(dst_root), 0
    for listing in tree:
        rel, fresh, seen = listing.rel, tree.skipped[seen:], len(tree.skipped)
        hidden = {split(p)[1] for p in fresh if split(p)[0] == rel}  # mount points of this directory
        mfd, dst_list = _mirror_listing(dst_root, rel, excludes, mirror_dev)
        try:
            src_list = dict(zip(listing.names, listing.stats))
            for name in sorted(dst_list.keys() - src_list.keys() - hidden):
                findings.append(Finding(join(rel, name), "extra on the mirror"))
            for name in listing.names:
                why = _compare_entry(listing.fd, mfd, name, src_list[name], dst_list.get(name))
                if why:
                    findings.append(Finding(join(rel, name), why))
        finally:
            if mfd is not None:
                os.close(mfd)
    return findings


def _compare_entry(sfd: int, mfd: int | None, name: bytes, s: os.stat_result, d: _Stat | None) -> str | None:
    """Why one entry differs, read through both directories' checked fds."""
    if d is None or mfd is None:
        return "missing on the mirror"
    try:
        return _entry_diff(sfd, mfd, name, s, d)
    except FileNotFoundError:
        return None
