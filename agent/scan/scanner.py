"""Find the changes the journal missed, by comparing the tree with the manifest.

The manifest holds the last shipped state of every path. The scanner walks the
tree (one filesystem, no symlinks followed, excludes not descended), compares
stat data with the manifest and enqueues only *real* differences of shipped
state: content (blake3 digest), type, permission bits, owner, mtime (of
files, directories and symlinks alike: ``touch -d`` is a change), symlink
target, and paths that are new or gone. A file is read only when its
metadata makes it a suspect, so a scan after a clean shutdown reads no file
and enqueues nothing. That needs the manifest to follow directory mtimes,
which move with every entry added or removed: the replayer records the mtime
a shipper gives a parent directory after writing in it.

How the daemon must call it (startup)::

    watcher.start()                      # 1. changes from now on reach the journal
    cp = journal.checkpoint()            # 2. recover what happened while down
    Scanner(root, journal, excludes).scan(since_ns=cp.time_ns if cp else None)
    replayer.start()                     # 3. ship, recovered changes included

The watcher starts first so that nothing changing during the scan falls in a
gap: the scan covers the past, the watcher the present. The checkpoint must
not move past the scan's ``since_ns`` until :meth:`Scanner.scan` has returned
(hold the watcher's checkpoint updates meanwhile), or a crash mid-scan would
forget the unscanned part. The replayer starts after the scan so that the
manifest snapshot the scan compares with is not moving, and the first plans
already hold the recovered changes. After an inotify overflow, call
``scan(since_ns=None)`` (whole tree, watcher and replayer keep running); for a
directory that appeared (moved in, or created before its watch existed), call
:meth:`Scanner.scan_subtree`.

The scanner never writes the manifest (only the replayer's ``mark_done``
does) and never moves the checkpoint. A path still pending in the journal
differs from the manifest and is enqueued again: harmless (shipping is
at-least-once and sends the current state), and counted in
:attr:`ScanReport.reenqueued_pending`.

Deletes: every manifest path absent on disk gets its own DELETE entry,
children before their parents, so ``mark_done`` clears each manifest entry.
A directory is listed long before the scan appends its entries; meanwhile
the watcher may journal newer ones for the same paths. So the batch is looked
at again while the journal holds its append locks
(:class:`agent.tree.recheck.ScanRecheck`): a DELETE of a path that exists again
becomes a CHANGE, a CHANGE gets the directory flag of what the path is now,
and a scan's finding never lands after something the watcher journaled later.
Manifest paths below an excluded directory, a mount point, or a directory that
could not be read are left alone: their state is unknown, not absent.
Special files (fifo, socket, device) are not replicated: one is enqueued only
where the manifest holds a shipped file, link or directory at its path (the
mirror must lose that), and its own absence from the mirror is never a delete.

Cost: one lstat per path; per directory, one read of the manifest's entries
of that directory (its subdirectories' subtrees skipped), compared with the
listing in bulk by encoded-state prefix (:mod:`agent.scan.match`), so only the
states of paths that differ are decoded; and a read only of suspect files.
Memory is one directory's entries at a time (a gone subtree is read in
chunks): nothing is held per path of the tree.

Helpers: a walk that lasts shares its subtrees with helper processes
(:mod:`agent.scan.team`), one per further CPU by default; each compares its
subtrees as this module does and sends back what it finds, which the scan
journals. The result is the same as without them.

Threading: a ``Scanner`` runs one scan at a time; it may run in its own
thread while the watcher and the replayer use the same ``Journal``.
"""

from __future__ import annotations

import errno
import itertools
import operator
import os
import stat
import sys
import time
from collections.abc import Callable
from itertools import compress
from pathlib import Path

import blake3
import structlog

from agent.scan.match import suspects
from agent.scan.report import ScanProgress, ScanReport
from agent.scan.rules import Difference, deletions, stat_difference
from agent.scan.team import Helper, HelperSpec, Team, default_helpers, end_helpers, start_helpers
from agent.tree.excludes import Excludes
from agent.tree.fsstate import state_from_stat
from agent.tree.recheck import ScanRecheck
from agent.tree.walk import DirListing, Walk, open_dir
from journal import IS_DIR, Entry, FileKind, FileState, Journal, Op
from journal.codec import decode_state

__all__ = ["Scanner", "ScanRun", "ScanProgress", "ScanReport", "Difference", "stat_difference", "deletions"]

log = structlog.get_logger()

_S_IFMT = 0o170000
_MODE = operator.attrgetter("st_mode")
_NEVER = 1 << 62  # a threshold no timestamp reaches: a full scan trusts equal stat data
_SPECIAL = frozenset((stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK))
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20
_PENDING_SET_MAX = 200_000
_PROGRESS_EVERY_S = 0.5


def _digest_at(dir_fd: int, name: bytes, st: os.stat_result) -> bytes | None:
    """blake3 of the file ``name`` in ``dir_fd``, or None when it is no longer
    the regular file that was stat'ed (replaced or gone). Raises OSError when
    it exists but cannot be read."""
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO):
            return None  # gone, or replaced by a symlink or a socket
        raise
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or now.st_ino != st.st_ino:
            return None
        h = blake3.blake3()
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
        return h.digest()
    finally:
        os.close(fd)


class Scanner:
    """Compare the tree below ``root`` with the journal's manifest and enqueue
    the differences. See the module docstring for how the daemon calls it."""

    def __init__(
        self,
        root: Path,
        journal: Journal,
        excludes: Excludes,
        *,
        slack_ns: int = 2_000_000_000,
        batch: int = 1000,
        progress: Callable[[ScanProgress], None] | None = None,
        helpers: int | None = None,
    ) -> None:
        self.root = os.fsencode(os.path.realpath(root))  # a symlinked root is followed once, here
        self.journal = journal
        self.excludes = excludes
        self.slack_ns = slack_ns
        self.batch = max(1, batch)
        self.progress = progress
        self.helpers = default_helpers() if helpers is None else max(0, helpers)  # processes beside the scan
        self._prepared: list[Helper] = []

    def prepare(self) -> None:
        """Start the next :meth:`scan`'s helpers now, so their interpreter
        start-up (~0.2 s) overlaps other work (the daemon's watch set-up)
        instead of the scan. Helpers end with that scan, or :meth:`close`."""
        if self.helpers and sys.executable and not self._prepared:
            self._prepared = start_helpers(self.helpers)

    def close(self) -> None:
        """End helpers started by :meth:`prepare` that no scan took."""
        prepared, self._prepared = self._prepared, []
        end_helpers(prepared, kill=True)

    def _take_prepared(self) -> list[Helper]:
        prepared, self._prepared = self._prepared, []
        return prepared

    def scan(self, *, since_ns: int | None) -> ScanReport:
        """Scan the whole tree. ``since_ns`` is the checkpoint time (suspects:
        ctime or mtime >= since_ns - slack, or a stat difference in size,
        inode, type, mode, owner or link); None scans fully (every stat
        difference is a suspect)."""
        return ScanRun(self, b"", since_ns, prepared=self._take_prepared()).run()

    def scan_subtree(self, relpath: bytes, *, since_ns: int | None = None) -> ScanReport:
        """Scan ``relpath`` (a directory, a file, or a path now gone) and
        everything below it; deletes are looked for only below ``relpath``."""
        return ScanRun(self, relpath.strip(b"/"), since_ns).run()


Deliver = Callable[[list[Entry]], None]
Between = Callable[[Walk, bytes], None]  # after each listing: the walk, the directory just compared


class ScanRun:
    """One scan: its counters, unflushed entries and the walks it runs.
    :meth:`run` is the whole scan; a helper process drives one through the
    subtrees it is given (:meth:`walk_subtrees`), delivering its entries to
    the scan instead of the journal."""

    def __init__(
        self,
        scanner: Scanner,
        start: bytes,
        since_ns: int | None,
        *,
        deliver: Deliver | None = None,
        prepared: list[Helper] | None = None,
    ) -> None:
        self.s = scanner
        self.prepared = prepared or []
        self.start = start
        self.threshold = None if since_ns is None else since_ns - scanner.slack_ns
        self.deliver = deliver or self._journal
        self.sends = deliver is not None  # a helper's run: its entries go to the scan, not the journal
        self.team: Team | None = None
        self.skipped: list[bytes] = []  # of every walk of this run: below them nothing is known
        self.report = ScanReport()
        self.entries: list[Entry] = []
        self.pending_paths: set[bytes] | None = None
        self.pending_checked = False
        self.began = time.monotonic()
        self.last_progress = self.began
        self.long: dict[bytes, dict[bytes, bytes]] = {}  # parent -> {long path: encoded state}
        self.dev = 0  # the root's filesystem
        self.walk: Walk

    def run(self) -> ScanReport:
        """No ship runs while the scan does (``Journal.scanning``): a path
        captured and shipped before the snapshot but marked done after it
        would be missing from both the snapshot and a tree that lost it."""
        try:
            with self.s.journal.scanning():
                return self._run()
        finally:
            end_helpers(self.prepared, kill=True)  # prepared for a walk that did not happen

    def _run(self) -> ScanReport:
        s = self.s
        log.info("scan.start", root=s.root, start=self.start, threshold_ns=self.threshold)
        if self.start and s.excludes and s.excludes.match(self.start, True):
            return self._finish()
        self._load_long(self.start)
        dev = self.dev = os.stat(s.root).st_dev
        walk = self.walk = Walk(s.root, s.excludes, dev, self.start, skipped=self.skipped)
        if not self.start or self._scan_start(dev):
            self._walk_shared(walk)
        return self._finish()

    def _walk_shared(self, walk: Walk) -> None:
        """Walk, with helpers once the walk proves long (:mod:`agent.scan.team`)."""
        if self.s.helpers and sys.executable:
            spec = HelperSpec(
                self.s.root, str(self.s.journal.path), self.s.excludes.patterns, self.threshold,
                self.dev, self.s.batch,
            )  # fmt: skip
            self.team = Team(spec, self.s.helpers, self.take, self.hand_over, started=self.prepared)
            self.prepared = []
        try:
            self.walk_all(walk, self._between)
            while self.team is not None and (subtrees := self.team.next_subtrees()):
                self.walk_subtrees(subtrees, between=self._between)
            if self.team is not None:
                self.team.close()
        except BaseException:
            if self.team is not None:
                self.team.abort()
            raise
        if self.team is not None:
            self.report.add(self.team.counts())
            self.report.helpers = len(self.team.helpers)

    def _between(self, walk: Walk, rel: bytes) -> None:
        self._maybe_progress(rel)
        if self.team is not None:
            self.team.tick(walk)

    # ------------------------------------------------------------ shared walks
    def walk_subtrees(self, subtrees: list[tuple[bytes, int]], *, between: Between) -> None:
        """Scan these directories (each with the inode it was listed with) and
        below; their own entries were compared in their parents' listings."""
        tops = {rel for rel, _ in subtrees}
        for path, raw in self.s.journal.manifest_long().items():  # one read, however many subtrees
            if _within(path, tops):
                self.long.setdefault(path.rpartition(b"/")[0], {})[path] = raw
        self.walk_all(
            Walk.over(self.s.root, self.s.excludes, self.dev, subtrees, skipped=self.skipped), between
        )

    def walk_all(self, walk: Walk, between: Between) -> None:
        """Compare every listing of ``walk``; ``between`` runs after each."""
        self.walk = walk
        for listing in walk:
            self._forget_vanished()
            self._scan_listing(listing)
            between(walk, listing.rel)
        self._forget_vanished()
        self.report.errors += walk.errors

    def hand_over(self, subtrees: list[tuple[bytes, int]]) -> None:
        """These subtrees leave this run for another process. A helper first
        sends what it found, so nothing found about their ancestors reaches
        the scan after what another finds below; the scan's own unflushed
        entries are already ahead of anything a helper will send. The long
        paths kept for the subtrees are dropped (the other reads its own)."""
        if self.sends:
            self._flush()
        tops = {rel for rel, _ in subtrees}
        for parent in [p for p in self.long if _within(p, tops)]:
            del self.long[parent]

    def take(self, entries: list[Entry]) -> None:
        """Entries a helper found: journaled like this run's own."""
        for entry in entries:
            self._enqueue(entry)

    def counts(self) -> dict[str, int]:
        """The counters a helper reports to the scan."""
        counts = {k: v for k, v in self.report.summary().items() if k in _HELPER_COUNTS}
        counts["skipped"] += len(self.skipped)
        return counts  # type: ignore[return-value]

    def flush(self) -> None:
        self._flush()

    def _load_long(self, under: bytes) -> None:
        for path, raw in self.s.journal.manifest_long(under).items():
            self.long.setdefault(path.rpartition(b"/")[0], {})[path] = raw

    def _scan_start(self, dev: int) -> bool:
        """Compare ``start`` itself; True when it is a directory to walk."""
        parent, _, name = self.start.rpartition(b"/")
        raw = self.s.journal.manifest_raw(self.start)
        try:
            fd = open_dir(self.s.root, parent, strict=True)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                self._forget(self.start, raw)  # not inside the root any more: gone
                return False
            raise
        try:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                self._forget(self.start, raw)
                return False
            if st.st_dev != dev:
                self.report.skipped += 1  # another filesystem: its contents are unknown, not absent
                return False
            if suspects([st], [raw or b""], self._threshold()):
                self._examine(fd, name, self.start, st, decode_state(raw) if raw else None)
            is_dir = stat.S_ISDIR(st.st_mode)
            self.report.dirs_seen += is_dir
            self.report.files_seen += not is_dir
            if not is_dir:
                self._forget(self.start, None)
                return False
            return True
        finally:
            os.close(fd)

    def _scan_listing(self, listing: DirListing) -> None:
        """The hot path: read the manifest's entries of this one directory,
        match them with the listing in bulk (:func:`agent.scan.match.suspects`)
        and examine only the entries that differ; what the manifest holds here
        and the disk does not is deleted."""
        prefix = listing.rel + b"/" if listing.rel else b""
        names, stats = listing.names, listing.stats
        keys = list(map(prefix.__add__, names))
        subdirs = list(compress(names, map(stat.S_ISDIR, map(_MODE, stats)))) if listing.dirs else []
        known_keys, raws, deep = self.s.journal.manifest_children(listing.rel, subdirs)
        long = self.long.pop(listing.rel, None)
        gone: dict[bytes, bytes] = {}
        if long or known_keys != keys:
            gone = dict(zip(known_keys, raws))
            gone.update(long or {})
            raws = list(map(gone.pop, keys, itertools.repeat(b"")))
        todo = suspects(stats, raws, self._threshold()) if known_keys or long else range(len(names))
        for i in todo:  # with nothing recorded here (a first scan), every entry is new
            raw = raws[i]
            self._examine(listing.fd, names[i], keys[i], stats[i], decode_state(raw) if raw else None)
        self.report.files_seen += len(names) - listing.dirs
        self.report.dirs_seen += listing.dirs
        for path, raw in sorted(gone.items()):
            self._forget(path, raw)
        for name in deep:  # entries below a child that is no directory now
            if prefix + name not in gone:
                self._forget(prefix + name, None)

    def _threshold(self) -> int:
        return _NEVER if self.threshold is None else self.threshold

    def _forget_vanished(self) -> None:
        """Directories that vanished between their parent's listing and their
        own: what the manifest holds below them is gone."""
        while self.walk.vanished:
            gone = self.walk.vanished.pop()
            if gone:  # the root itself vanishing is a race: not a reason to delete the mirror
                self._forget(gone, None)

    def _forget(self, top: bytes, raw: bytes | None) -> None:
        """Delete what the manifest holds below ``top`` (and at it, when its
        encoded state ``raw`` is given), which the walk does not see: children
        before their parents, read in chunks so no subtree is held whole."""
        below = top + b"/"
        long: dict[bytes, bytes] = {}
        for parent in [p for p in self.long if p == top or p.startswith(below)]:
            long.update(self.long.pop(parent))
        self._delete(long)  # longer than any direct key below their parents
        before = None
        while chunk := self.s.journal.manifest_below(top, before):
            self._delete(dict(chunk))
            before = chunk[-1][0]
        if raw is not None:
            self._delete({top: raw})

    def _delete(self, states: dict[bytes, bytes]) -> None:
        """Enqueue DELETE for these manifest paths, children first, except
        where their state is unknown (excluded, or below a skipped directory)."""
        unseen = {p: decode_state(raw) for p, raw in states.items()}
        for path, state in deletions(unseen, self.skipped, self.s.excludes):
            self._enqueue(Entry(Op.DELETE, path, time_ns=time.time_ns(), flags=_dir_flag(state.kind)))
            self.report.enqueued_deletes += 1

    def _examine(
        self, fd: int, name: bytes, rel: bytes, st: os.stat_result, recorded: FileState | None
    ) -> None:
        """Judge one entry that stat data did not clear. Anything that cannot
        be read any more is enqueued: the replayer ships whatever is there then
        (a delete if it is gone)."""
        fmt = st.st_mode & _S_IFMT
        if fmt in _SPECIAL:  # not replicated; but what the mirror holds in its place must go
            if recorded is not None and recorded.kind != FileKind.OTHER:
                self._enqueue(Entry(Op.CHANGE, rel, time_ns=time.time_ns()))
                self.report.enqueued_changes += 1
            return
        diff = Difference.CHANGED
        try:
            link = os.readlink(name, dir_fd=fd) if fmt == stat.S_IFLNK else b""
        except OSError:
            link = None
        if link is not None:
            diff = stat_difference(state_from_stat(st, link=link), recorded, self.threshold)
        if diff != Difference.SAME:
            self.report.suspects += 1
        if diff == Difference.HASH:
            assert recorded is not None  # HASH is only judged against a recorded state
            digest = self._digest(fd, name, rel, st)
            diff = Difference.SAME if digest == recorded.digest else Difference.CHANGED
        if diff == Difference.CHANGED:
            flags = IS_DIR if fmt == stat.S_IFDIR else 0
            self._enqueue(Entry(Op.CHANGE, rel, time_ns=time.time_ns(), flags=flags))
            self.report.enqueued_changes += 1

    def _digest(self, fd: int, name: bytes, rel: bytes, st: os.stat_result) -> bytes | None:
        self.report.hashed += 1
        self.report.bytes_hashed += st.st_size
        try:
            return _digest_at(fd, name, st)
        except OSError as exc:
            self.report.errors += 1
            log.warning("scan.unreadable", path=rel, error=str(exc))
            return None

    def _enqueue(self, entry: Entry) -> None:
        self.entries.append(entry)
        if len(self.entries) >= self.s.batch:
            self._flush()

    def _flush(self) -> None:
        if not self.entries:
            return
        entries, self.entries = self.entries, []
        self.deliver(entries)

    def _journal(self, entries: list[Entry]) -> None:
        self._count_pending(entries)
        recheck = ScanRecheck(self.s.root, self.dev)
        self.s.journal.append(entries, recheck=recheck)
        self.report.enqueued_deletes -= recheck.revived + recheck.dropped
        self.report.enqueued_changes += recheck.revived
        log.debug("scan.enqueued", entries=len(entries))

    def _count_pending(self, entries: list[Entry]) -> None:
        """Count enqueued paths that were already pending (before this scan
        appended anything), when the backlog is small enough to look at."""
        if not self.pending_checked:
            self.pending_checked = True
            self.pending_paths = _pending_paths(self.s.journal)
        if self.pending_paths is None:
            self.report.reenqueued_pending = None
        elif self.report.reenqueued_pending is not None:
            self.report.reenqueued_pending += sum(1 for e in entries if e.path in self.pending_paths)

    def _maybe_progress(self, current: bytes, force: bool = False) -> None:
        now = time.monotonic()
        if self.s.progress is None or (not force and now - self.last_progress < _PROGRESS_EVERY_S):
            return
        self.last_progress = now
        r = ScanReport(**{k: v for k, v in self.report.summary().items() if k in _HELPER_COUNTS})
        if self.team is not None:
            r.add(self.team.counts())
        enqueued = r.enqueued_changes + r.enqueued_deletes
        self.s.progress(
            ScanProgress(
                r.files_seen, r.dirs_seen, r.hashed, r.bytes_hashed, enqueued, now - self.began, current
            )
        )

    def _finish(self) -> ScanReport:
        self._flush()
        self.report.skipped += len(self.skipped)
        self.report.seconds = time.monotonic() - self.began
        self._maybe_progress(self.start, force=True)
        log.info("scan.done", root=self.s.root, start=self.start, **self.report.summary())
        return self.report


def _within(path: bytes, tops: set[bytes]) -> bool:
    """``path`` is one of ``tops`` or lies below one of them."""
    while path:
        if path in tops:
            return True
        path = path.rpartition(b"/")[0]
    return False


_HELPER_COUNTS = frozenset(
    ("files_seen", "dirs_seen", "suspects", "hashed", "bytes_hashed", "enqueued_changes", "enqueued_deletes",
     "skipped", "errors")
)  # fmt: skip


def _dir_flag(kind: FileKind) -> int:
    return IS_DIR if kind == FileKind.DIR else 0


def _pending_paths(journal: Journal) -> set[bytes] | None:
    """Paths pending for any track, or None when the backlog is too large."""
    stats = journal.stats()
    if sum(t.pending for t in stats.tracks.values()) > _PENDING_SET_MAX:
        return None
    paths: set[bytes] = set()
    for track in stats.tracks:
        for record in journal.pending(track):
            paths.add(record.entry.path)
            if record.entry.op == Op.MOVE:
                paths.add(record.entry.dest)
    return paths
