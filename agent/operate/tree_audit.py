"""The tree against the manifest, one directory at a time, for ``agent verify``.

The walk reads the manifest's entries of each directory it lists (the same
per-directory read the scanner uses), and the entries of a directory that is
gone in chunks, so memory holds one directory and the findings, never a state
per path of the tree. The judgement of one path is :func:`state_differs`.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from itertools import compress
from operator import attrgetter

from agent.operate.audit import Finding
from agent.operate.lag import TrackPending, any_pending
from agent.operate.progress import Progress
from agent.tree.excludes import Excludes
from agent.tree.fsstate import digest_file, kind_of
from agent.tree.walk import Walk, root_dev
from journal import FileKind, FileState, Journal
from journal.codec import decode_state
from journal.errors import DamagedRecord

__all__ = ["audit_tree", "state_differs"]

_MODE = attrgetter("st_mode")
_MISSED = "no pending entry (missed by journal)"
_UNKNOWN = "on disk, not in the manifest and not pending (missed by journal)"


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def state_differs(abspath: bytes, st: os.stat_result, known: FileState) -> str | None:
    """Why the disk differs from the manifest state (type, mode, owner,
    symlink target, content, mtime of files and symlinks), or None. Content
    is hashed only when stat differs. Directory mtimes are left to the mirror
    audits: they move with every entry added or removed inside."""
    kind = kind_of(st.st_mode)
    if kind != known.kind:
        return f"type is {kind.name.lower()}, manifest says {known.kind.name.lower()}"
    if kind != FileKind.SYMLINK and stat.S_IMODE(st.st_mode) != known.mode:
        return f"mode {stat.S_IMODE(st.st_mode):o}, manifest says {known.mode:o}"
    if (st.st_uid, st.st_gid) != (known.uid, known.gid):
        return f"owner {st.st_uid}:{st.st_gid}, manifest says {known.uid}:{known.gid}"
    if kind == FileKind.SYMLINK and os.readlink(abspath) != known.link:
        return "symlink target differs from the manifest"
    if kind == FileKind.FILE and not _same_content(abspath, st, known):
        return "content differs from the manifest" + (" (size)" if st.st_size != known.size else "")
    if kind in (FileKind.FILE, FileKind.SYMLINK) and st.st_mtime_ns != known.mtime_ns:
        return f"mtime {_when(st.st_mtime_ns)}, manifest says {_when(known.mtime_ns)}"
    return None


def _same_content(abspath: bytes, st: os.stat_result, known: FileState) -> bool:
    same_stat = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == (
        known.size,
        known.mtime_ns,
        known.ctime_ns,
        known.inode,
    )
    if same_stat:
        return True
    return st.st_size == known.size and bool(known.digest) and digest_file(abspath) == known.digest


def _state(path: bytes, raw: bytes) -> FileState:
    """The decoded state of ``path``; damage names the path."""
    try:
        return decode_state(raw)
    except DamagedRecord as exc:
        raise DamagedRecord(f"manifest state of {path!r}: {exc}", path=str(exc.path)) from exc


class _Audit:
    """One pass: the walk, the long paths not yet met, what was found."""

    def __init__(
        self, root: bytes, journal: Journal, excludes: Excludes, pending: list[TrackPending]
    ) -> None:
        self.root, self.journal, self.excludes, self.pending = root, journal, excludes, pending
        self.findings: list[Finding] = []
        self.missing: list[Finding] = []
        self.specials: list[bytes] = []
        self.skipped: list[bytes] = []  # mount points, unreadable directories: contents unknown, not absent
        self.long: dict[bytes, dict[bytes, bytes]] = {}
        for path, raw in journal.manifest_long().items():
            self.long.setdefault(path.rpartition(b"/")[0], {})[path] = raw

    def run(self, advance: Callable[[int], None]) -> None:
        try:
            tree = Walk(self.root, self.excludes, root_dev(self.root))
        except OSError:
            self._gone_below(b"")  # no tree at all: everything the manifest holds is missing
            return
        self.skipped = tree.skipped
        for listing in tree:
            self._vanished(tree)
            self._directory(listing.rel, listing.names, listing.stats)
            advance(len(listing.names))
        self._vanished(tree)

    def _vanished(self, tree: Walk) -> None:
        """Directories gone between their parent's listing and their own."""
        while tree.vanished:
            self._gone_below(tree.vanished.pop())

    def _directory(self, rel: bytes, names: list[bytes], stats: list[os.stat_result]) -> None:
        prefix = rel + b"/" if rel else b""
        subdirs = list(compress(names, map(stat.S_ISDIR, map(_MODE, stats))))
        keys, raws, deep = self.journal.manifest_children(rel, subdirs)
        known = dict(zip(keys, raws))
        known.update(self.long.pop(rel, {}))
        for name, st in zip(names, stats):
            path = prefix + name
            raw = known.pop(path, None)
            if kind_of(st.st_mode) == FileKind.OTHER:
                self.specials.append(path)
            elif any_pending(path, self.pending):
                continue
            elif raw is None:
                self.findings.append(
                    Finding(path, "on disk, not in the manifest and not pending (missed by journal)")
                )
            else:
                try:
                    why = state_differs(os.path.join(self.root, path), st, _state(path, raw))
                except FileNotFoundError:
                    continue  # vanished during the walk: its DELETE is on the way
                if why:
                    self.findings.append(Finding(path, f"{why}, {_MISSED}"))
        for path, raw in known.items():
            self._missing(path, _state(path, raw))
            self._gone_below(path)
        for name in deep:  # entries below a child that is no directory now
            if prefix + name not in known:
                self._gone_below(prefix + name)

    def _gone_below(self, top: bytes) -> None:
        """Every manifest path below ``top`` (everything for the root), which
        the walk does not see; read in chunks."""
        if not top:
            for path, state in self.journal.manifest_items():
                self._missing(path, state)
            return
        below = top + b"/"
        for parent in [p for p in self.long if p == top or p.startswith(below)]:
            for path, raw in self.long.pop(parent).items():
                self._missing(path, _state(path, raw))
        before = None
        while chunk := self.journal.manifest_below(top, before):
            for path, raw in chunk:
                self._missing(path, _state(path, raw))
            before = chunk[-1][0]

    def _missing(self, path: bytes, state: FileState) -> None:
        if not path:
            return  # the root's own entry
        unknown = tuple(p + b"/" for p in self.skipped)
        if path in self.skipped or (unknown and path.startswith(unknown)):
            return
        gone = state.kind != FileKind.OTHER and not self.excludes.match(path, False)
        if gone and not any_pending(path, self.pending):
            self.missing.append(Finding(path, "in the manifest, missing on disk, no pending delete"))


def audit_tree(
    root: bytes, journal: Journal, excludes: Excludes, pending: list[TrackPending]
) -> tuple[list[Finding], list[bytes]]:
    """Findings of the tree against the manifest (before the caller drops
    paths journaled meanwhile), and the special files of the tree."""
    audit = _Audit(root, journal, excludes, pending)
    with Progress("verify local", journal.manifest_count()) as progress:
        audit.run(progress.advance)
    return audit.findings + audit.missing, sorted(audit.specials)
