"""Read side of the journal: every query runs in a short read transaction
(an LMDB snapshot) and returns plain values; iterators read in chunks so no
transaction stays open while the caller works (a long-lived snapshot would pin
old pages and block growing the map)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import lmdb

from . import _env, _links, _log, _pending, _subtree
from ._gate import Gate
from ._layout import COUNT, PAIR, Dbs, count_key, decode_tracks, path_key, track_prefix
from ._modes import Strategy
from .codec import decode_entry, decode_seq, decode_state
from .errors import DamagedRecord, JournalCorrupt, JournalError
from .types import Checkpoint, FileState, Record

__all__ = ["JournalReads", "JournalStats", "TrackStats", "DeadLetter"]

T = TypeVar("T")
_CHUNK = 1000
_REASON = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class TrackStats:
    pending: int
    oldest_pending_ns: int | None  # time_ns of the oldest pending entry
    dead_letters: int


@dataclass(frozen=True, slots=True)
class JournalStats:
    entries: int
    last_seq: int
    bytes: int
    checkpoint: Checkpoint | None
    tracks: dict[str, TrackStats] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    track: str
    record: Record
    reason: str


class JournalReads:
    """Queries shared by every mode; :class:`journal.Journal` adds the writes."""

    _env: lmdb.Environment
    _dbs: Dbs
    _gate: Gate
    _changed: threading.Condition
    _last_seq: int
    _strategy: Strategy
    path: Path
    mode: str

    def _read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in a read transaction, after :meth:`_before_read`."""
        self._before_read()
        return self._snapshot(fn)

    def _before_read(self) -> None:
        """Hook: the writer folds acknowledged intake batches in first."""

    def _snapshot(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in a read transaction; adopt a map another process grew."""
        while True:
            try:
                with self._gate.shared(), self._env.begin() as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except lmdb.Error as exc:
                raise self.noted(_env.translate(exc, self.path)) from exc
            except JournalCorrupt as exc:
                self.noted(exc)
                raise

    def noted(self, exc: JournalError) -> JournalError:
        """Return ``exc``; when it is damage, first record it in the journal
        (writers only: a reader changes nothing) so every later open refuses."""
        if isinstance(exc, JournalCorrupt) and self._strategy.writable:
            _env.record_damage(self.path, str(exc.args[0] if exc.args else exc))
        return exc

    def _adopt_map_size(self) -> None:
        with self._gate.exclusive():
            self._env.set_mapsize(0)

    def _read_last_seq(self, txn: lmdb.Transaction) -> int:
        last = _log.last_seq(txn, self._dbs["log"])
        if last is not None:
            return last
        raw = txn.get(b"compacted", db=self._dbs["meta"])
        return PAIR.unpack(raw)[0] if raw else 0

    def _tracks(self, txn: lmdb.Transaction) -> list[str]:
        return decode_tracks(txn.get(b"tracks", db=self._dbs["meta"]))

    def tracks(self) -> list[str]:
        return self._read(self._tracks)

    def last_seq(self) -> int:
        return self._read(self._read_last_seq)

    def get(self, seq: int) -> Record | None:
        def find(txn: lmdb.Transaction) -> Record | None:
            raw = _log.entry_raw(txn, self._dbs["log"], seq)
            return Record(seq, decode_entry(raw)) if raw is not None else None

        return self._read(find)

    def pending(self, track: str, limit: int | None = None, after: int = 0) -> list[Record]:
        """Pending entries of ``track`` in seq order, starting after seq ``after``."""
        prefix = track_prefix(track)

        def scan(txn: lmdb.Transaction) -> list[Record]:
            out: list[Record] = []
            for first, last in _pending.ranges_from(txn, self._dbs["pend"], prefix, after + 1):
                want = last - first + 1 if limit is None else min(last - first + 1, limit - len(out))
                got = _log.read(txn, self._dbs["log"], first, want)
                if len(got) != want or (got and got[0].seq != first):
                    raise JournalCorrupt(f"pending entries {first}..{last} missing from log")
                out.extend(got)
                if limit is not None and len(out) >= limit:
                    break
            return out

        return self._read(scan)

    def pending_count(self, track: str, through: int) -> int:
        """How many seqs up to ``through`` are still pending on ``track``: a
        walk over the track's pending ranges, no entry is read."""
        prefix = track_prefix(track)

        def count(txn: lmdb.Transaction) -> int:
            total = 0
            for first, last in _pending.ranges_from(txn, self._dbs["pend"], prefix, 1):
                if first > through:
                    break
                total += min(last, through) - first + 1
            return total

        return self._read(count)

    def dead_letters(self, track: str | None = None) -> list[DeadLetter]:
        prefix = track_prefix(track) if track is not None else b""

        def scan(txn: lmdb.Transaction) -> list[DeadLetter]:
            out = []
            cur = txn.cursor(db=self._dbs["dead"])
            if not cur.set_range(prefix):
                return out
            for key, raw in cur:
                if not key.startswith(prefix):
                    break
                (rlen,) = _REASON.unpack_from(raw)
                name, seq_key = key.split(b"\0", 1)
                entry = decode_entry(raw[4 + rlen :])
                reason = raw[4 : 4 + rlen].decode(errors="replace")
                out.append(DeadLetter(name.decode(), Record(decode_seq(seq_key), entry), reason))
            return out

        return self._read(scan)

    def manifest_get(self, path: bytes) -> FileState | None:
        def find(txn: lmdb.Transaction) -> FileState | None:
            raw = txn.get(path_key(path), db=self._dbs["manifest"])
            return _state_of(path, raw) if raw is not None else None

        return self._read(find)

    def manifest_encoded(self, under: bytes | None = None) -> dict[bytes, bytes]:
        """Every path's *encoded* state (``codec.decode_state`` reads one) from
        one snapshot, or with ``under`` only that path and the paths below it
        (a range read). Built at C speed: for scans that compare most states
        by ``codec.state_stat_prefix`` and decode only the few that differ."""

        def read(txn: lmdb.Transaction) -> dict[bytes, bytes]:
            cur = txn.cursor(db=self._dbs["manifest"])
            out = dict(cur) if under is None else _manifest_range(cur, under)
            long = _subtree.long_paths(txn, self._dbs, under or b"")
            for key in [k for k in out if k[:1] == b"\0"] if long or under is None else ():
                del out[key]  # hashed keys of long paths: replaced by the paths
            out.update(long)
            if b"/" in out:
                out[b""] = out.pop(b"/")
            return out

        return self._read(read)

    def manifest_raw(self, path: bytes) -> bytes | None:
        """The encoded state of one path (``codec.decode_state`` reads it)."""
        return self._read(lambda txn: txn.get(path_key(path), db=self._dbs["manifest"]))

    def manifest_children(self, parent: bytes, subdirs: list[bytes]) -> _subtree.Children:
        """The manifest's entries directly inside ``parent``, stored under
        their own path: (keys, encoded states) in key order, and the names of
        the children that have entries below them but are not in ``subdirs``.

        ``subdirs`` are the children that are directories on disk:
        the read skips what lies below them, so a directory costs its own
        entries, not its subtree's; runs of keys are read at C speed. Long
        (hashed) paths are not included: see :meth:`manifest_long`."""
        return self._read(
            lambda txn: _subtree.children(txn.cursor(db=self._dbs["manifest"]), parent, subdirs)
        )

    def manifest_below(self, path: bytes, before: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """Up to 1,000 (key, encoded state) of the entries stored under their
        own path strictly below ``path``, in descending key order (children
        before their parents), starting below the key ``before``. For a
        caller that walks a gone subtree in chunks."""
        return self._read(lambda txn: _subtree.below(txn.cursor(db=self._dbs["manifest"]), path, before))

    def manifest_long(self, under: bytes = b"") -> dict[bytes, bytes]:
        """path -> encoded state of every long (hashed-key) path at or below
        ``under``: the few paths the key-ordered reads above do not reach."""

        return self._read(lambda txn: _subtree.long_paths(txn, self._dbs, under))

    def manifest_items(self) -> Iterator[tuple[bytes, FileState]]:
        """Every (path, state) of the manifest in key order, read in chunks:
        each state is one that was current while it was read; paths written
        during the iteration may or may not appear."""
        after: bytes | None = None
        while True:
            chunk = self._read(lambda txn, a=after: self._manifest_chunk(txn, a))
            for _key, path, state in chunk:
                yield path, state
            if len(chunk) < _CHUNK:
                return
            after = chunk[-1][0]

    def _manifest_chunk(
        self, txn: lmdb.Transaction, after: bytes | None
    ) -> list[tuple[bytes, bytes, FileState]]:
        cur = txn.cursor(db=self._dbs["manifest"])
        longpath = self._dbs["longpath"]
        if not (cur.set_range(after) if after is not None else cur.first()):
            return []
        out: list[tuple[bytes, bytes, FileState]] = []
        for key, raw in cur:
            if key == after:
                continue
            path = txn.get(key, db=longpath) if key[:1] == b"\0" else key
            if path is None:
                raise JournalCorrupt(f"manifest key {key.hex()} has no stored path")
            out.append((key, b"" if path == b"/" else path, _state_of(path, raw)))
            if len(out) >= _CHUNK:
                break
        return out

    def linked_names(self, inodes: Iterable[int]) -> dict[int, dict[bytes, FileState]]:
        """For each inode, the manifest's names whose state says the file has
        several names, with those states (from the hard-link index)."""
        wanted = list(inodes)
        return self._read(lambda txn: _links.linked_names(txn, self._dbs, wanted))

    def manifest_with_inodes(self, inodes: Iterable[int]) -> dict[int, dict[bytes, FileState]]:
        """Every manifest path whose state names one of ``inodes``, with its
        state: a pass over the whole manifest, for names the index cannot know."""
        wanted = set(inodes)
        return self._read(lambda txn: _links.manifest_with_inodes(txn, self._dbs, wanted))

    def manifest_count(self) -> int:
        return self._read(lambda txn: txn.stat(self._dbs["manifest"])["entries"])

    def stored_root(self) -> bytes | None:
        """The root the journal was created for (absolute, as bytes)."""
        return self._read(lambda txn: txn.get(b"root", db=self._dbs["meta"]))

    def checkpoint(self) -> Checkpoint | None:
        raw = self._read(lambda txn: txn.get(b"checkpoint", db=self._dbs["meta"]))
        return Checkpoint(*PAIR.unpack(raw)) if raw else None

    def compacted_through(self) -> Checkpoint | None:
        """(time_ns, seq) of the newest entry compaction removed, if any."""
        raw = self._read(lambda txn: txn.get(b"compacted", db=self._dbs["meta"]))
        if not raw:
            return None
        seq, t = PAIR.unpack(raw)
        return Checkpoint(t, seq)

    def since(self, *, seq: int | None = None, time_ns: int | None = None) -> Iterator[Record]:
        """Entries with seq >= ``seq`` or time_ns >= ``time_ns`` (exactly one given),
        in seq order, read in chunks."""
        if (seq is None) == (time_ns is None):
            raise ValueError("give exactly one of seq and time_ns")
        start = seq or 0
        while True:
            chunk = self._read(lambda txn, s=start: self._log_chunk(txn, s))
            for rec in chunk:
                if time_ns is None or rec.entry.time_ns >= time_ns:
                    yield rec
            if len(chunk) < _CHUNK:
                return
            start = chunk[-1].seq + 1

    def _log_chunk(self, txn: lmdb.Transaction, start: int) -> list[Record]:
        return _log.read(txn, self._dbs["log"], start, _CHUNK)

    def stats(self, now_ns: int | None = None) -> JournalStats:
        """Counts for ``agent status``; O(tracks + dead letters), not O(entries)."""

        def collect(txn: lmdb.Transaction) -> JournalStats:
            tracks = {t: self._track_stats(txn, t) for t in self._tracks(txn)}
            cp_raw = txn.get(b"checkpoint", db=self._dbs["meta"])
            first, last = _log.first_seq(txn, self._dbs["log"]), self._read_last_seq(txn)
            return JournalStats(
                0 if first is None else last - first + 1,
                last,
                (self.path / "data.mdb").stat().st_size,
                Checkpoint(*PAIR.unpack(cp_raw)) if cp_raw else None,
                tracks,
            )

        return self._read(collect)

    def _track_stats(self, txn: lmdb.Transaction, track: str) -> TrackStats:
        prefix = track_prefix(track)
        raw = txn.get(count_key(track), db=self._dbs["meta"])
        oldest = None
        first = _pending.first_pending(txn, self._dbs["pend"], prefix)
        if first is not None:
            log_raw = _log.entry_raw(txn, self._dbs["log"], first)
            oldest = decode_entry(log_raw).time_ns if log_raw else None
        dead = 0
        cur = txn.cursor(db=self._dbs["dead"])
        if cur.set_range(prefix):
            for key in cur.iternext(values=False):
                if not key.startswith(prefix):
                    break
                dead += 1
        return TrackStats(COUNT.unpack(raw)[0] if raw else 0, oldest, dead)

    # ------------------------------------------------------------------ waiting
    def _notify(self, last: int | None) -> None:
        with self._changed:
            if last is not None:
                self._last_seq = max(self._last_seq, last)
            self._changed.notify_all()

    def wait_for_change(self, after_seq: int, timeout: float) -> int:
        """Block until an entry after ``after_seq`` exists, or ``timeout`` passes
        (or another thread calls :meth:`wake`). Returns the last seq.

        Appends in this process wake waiters at once; appends by other
        processes (``agent replay`` while the agent runs) are seen when the
        timeout expires, so callers bound the timeout.
        """
        with self._changed:
            if self._last_seq <= after_seq:
                self._changed.wait(timeout)
        last = self.last_seq()
        with self._changed:
            self._last_seq = max(self._last_seq, last)
        return last

    def wake(self) -> None:
        """Wake every waiter (shutdown, requeue)."""
        self._notify(None)


def _state_of(path: bytes, raw: bytes) -> FileState:
    """The decoded state of ``path``; damage names the path."""
    try:
        return decode_state(raw)
    except DamagedRecord as exc:
        raise DamagedRecord(f"manifest state of {bytes(path)!r}: {exc}", path=str(exc.path)) from exc


def _manifest_range(cur: lmdb.Cursor, under: bytes) -> dict[bytes, bytes]:
    """Manifest entries stored under their own path that are ``under`` or below it."""
    out: dict[bytes, bytes] = {}
    own = cur.get(under) if under else None
    if own is not None:
        out[under] = own
    below = under + b"/" if under else b""
    if cur.set_range(below):
        for key, raw in cur:
            if not key.startswith(below):
                break
            out[key] = raw
    return out
