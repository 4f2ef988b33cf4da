"""The durable LMDB journal: entries, per-track progress, manifest, checkpoint.

Durability: :meth:`Journal.append` commits one synced write transaction per
batch; when it returns, the batch survives a crash or power loss. That return
is the acknowledgement point for the watcher. Every other write is one synced
transaction as well, so a batch, a done mark or a manifest update is either
wholly there after a crash or not at all.

Threading: one ``Journal`` may be shared by threads (LMDB serialises writers,
readers use their own snapshot). Never use a ``Journal`` across ``fork()``.

Processes: one *agent* process writes (an exclusive lock on the directory);
*client* processes (``replay``, ``verify --repair``) may append short requests
concurrently through LMDB's own writer lock; *read* processes never write.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import lmdb

from . import _compact, _env, _log, _pending
from ._env import Gate, Mode
from ._layout import (
    COUNT,
    PAIR,
    SCHEMA_VERSION,
    Dbs,
    count_key,
    encode_tracks,
    index_paths,
    open_dbs,
    path_key,
    track_prefix,
)
from ._reads import DeadLetter, JournalReads, JournalStats, TrackStats
from .codec import encode_seq, encode_state
from .errors import JournalCorrupt, JournalError, JournalFull, NotAJournal, WrongRoot
from .types import Checkpoint, Entry, FileState, Op

__all__ = ["Journal", "JournalStats", "TrackStats", "DeadLetter", "SCHEMA_VERSION"]

DEFAULT_MAP_SIZE = 1 << 30
T = TypeVar("T")


class Journal(JournalReads):
    """Open with :meth:`open`; use as a context manager or call :meth:`close`."""

    def __init__(self, env: lmdb.Environment, path: Path, mode: Mode, lock_fd: int | None, dbs: Dbs) -> None:
        self._env = env
        self.path = path
        self.mode = mode
        self._lock_fd = lock_fd
        self._dbs = dbs
        self._gate = Gate()
        self._changed = threading.Condition()
        self._last_seq = 0
        self.new_tracks: tuple[str, ...] = ()

    # ------------------------------------------------------------------ open/close
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        root: str | bytes | None = None,
        tracks: Iterable[str] = (),
        mode: Mode = "agent",
        map_size: int = DEFAULT_MAP_SIZE,
    ) -> Journal:
        """Create or open the journal in ``path``.

        ``root`` is checked against the root the journal was created for;
        ``tracks`` (targets, or target/member for msync) are registered and the
        ones that did not exist before are listed in :attr:`new_tracks`.
        A refused open (locked, foreign, corrupt, other schema or root) leaves
        the journal's data untouched.
        """
        if mode not in _env.MODES:
            raise ValueError(f"unknown journal mode {mode!r}")
        jdir = Path(path)
        track_list = tuple(dict.fromkeys(tracks))
        all(map(track_prefix, track_list))  # raises ValueError on a bad name
        _env.check_directory(jdir, mode)
        created = _env.files_to_create(jdir, mode)
        lock_fd = _env.lock_for(jdir, mode, created)
        try:
            journal = cls._open_locked(jdir, mode, lock_fd, map_size)
            try:
                journal._init_meta(root, track_list)
            except BaseException:
                journal._env.close()
                raise
        except BaseException as exc:
            err = _env.open_error(exc, jdir)
            fresh = jdir / "data.mdb" in created
            if isinstance(err, NotAJournal) or (isinstance(err, JournalFull) and fresh):
                _env.remove_created(created)  # nothing of value was there before
            _env.release_lock(lock_fd)
            if err is exc:
                raise
            raise err from exc
        return journal

    @classmethod
    def _open_locked(cls, jdir: Path, mode: Mode, lock_fd: int | None, map_size: int) -> Journal:
        env = _env.open_env(jdir, mode, map_size)
        try:
            dbs, _new = open_dbs(env, mode != "read", str(jdir))
        except BaseException:
            env.close()
            raise
        return cls(env, jdir, mode, lock_fd, dbs)

    def close(self) -> None:
        self._env.close()
        _env.release_lock(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_meta(self, root: str | bytes | None, tracks: tuple[str, ...]) -> None:
        root_b = os.fsencode(os.path.abspath(os.fsdecode(root))) if root is not None else None
        meta = self._dbs["meta"]

        def probe(txn: lmdb.Transaction) -> tuple[bytes | None, list[str], int]:
            return txn.get(b"root", db=meta), self._tracks(txn), self._read_last_seq(txn)

        stored_root, known, self._last_seq = self._read(probe)
        if stored_root is not None and root_b is not None and stored_root != root_b:
            raise WrongRoot(
                f"journal {self.path} belongs to root {os.fsdecode(stored_root)!r}, "
                f"not {os.fsdecode(root_b)!r}",
                path=str(self.path),
            )
        new = tuple(t for t in tracks if t not in known)
        if self.mode == "read" or ((stored_root is not None or root_b is None) and not new):
            self.new_tracks = new if self.mode != "read" else ()
            return

        def init(txn: lmdb.Transaction) -> None:
            if txn.get(b"agent_id", db=meta) is None:
                txn.put(b"agent_id", uuid.uuid4().hex.encode(), db=meta)
            if txn.get(b"root", db=meta) is None and root_b is not None:
                txn.put(b"root", root_b, db=meta)
            current = self._tracks(txn)
            txn.put(b"tracks", encode_tracks(current + [t for t in new if t not in current]), db=meta)

        self._write(init)
        self.new_tracks = new

    # ------------------------------------------------------------------ writes
    def _write(self, fn: Callable[[lmdb.Transaction], T], need: int = 0) -> T:
        """Run ``fn`` in one synced write transaction; grow the map when full.

        ``fn`` may run more than once (after growing), so it must only act
        through ``txn``, which is rolled back before each retry. ``need`` is
        roughly how many bytes the transaction writes (tells a full disk from
        an I/O error).
        """
        if self.mode == "read":
            raise JournalError("journal opened read-only", path=str(self.path))
        while True:
            try:
                with self._gate.shared(), self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self._adopt_map_size()
            except lmdb.Error as exc:
                raise _env.translate(exc, self.path, need) from exc

    def _grow(self) -> None:
        with self._gate.exclusive():
            self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def append(
        self,
        entries: Iterable[Entry],
        *,
        tracks: Iterable[str] | None = None,
        checkpoint_ns: int | None = None,
    ) -> tuple[int, int] | None:
        """Durably append ``entries`` in one transaction; return their (first, last) seq.

        Every entry becomes pending for ``tracks`` (default: every registered
        track; naming an unregistered track raises ValueError). ``checkpoint_ns``
        moves the checkpoint in the same transaction. Returns None when
        ``entries`` is empty (the checkpoint still moves).
        """
        if isinstance(tracks, str):
            raise TypeError("tracks must be an iterable of track names, not a str")
        batch = list(entries)
        records = _log.encode_batch(batch)
        prefixes = [track_prefix(t) for t in tracks] if tracks is not None else None

        def do(txn: lmdb.Transaction) -> tuple[int, int] | None:
            first = self._read_last_seq(txn) + 1
            last = first + len(batch) - 1
            if batch:
                self._put_batch(txn, first, batch, records, prefixes)
            if checkpoint_ns is not None:
                txn.put(b"checkpoint", PAIR.pack(checkpoint_ns, last), db=self._dbs["meta"])
            return (first, last) if batch else None

        result = self._write(do, need=3 * sum(len(raw) for _, raw in records))
        self._notify(result[1] if result else None)
        return result

    def _put_batch(
        self,
        txn: lmdb.Transaction,
        first: int,
        batch: list[Entry],
        records: list[tuple[int, bytes]],
        prefixes: list[bytes] | None,
    ) -> None:
        _log.put_batch(txn, self._dbs["log"], first, records)
        latest, longpaths = index_paths(batch, _log.record_keys(first, len(batch)))
        # Not sorted: sorting random keys first costs as much as inserting them
        # in random order (measured), and keys that arrive sorted stay sorted.
        txn.cursor(db=self._dbs["latest"]).putmulti(latest.items())
        if longpaths:
            txn.cursor(db=self._dbs["longpath"]).putmulti(longpaths.items())
        known = self._tracks(txn)
        if prefixes is None:
            targets = known
        else:
            targets = [p[:-1].decode() for p in prefixes]
            unknown = sorted(set(targets) - set(known))
            if unknown:
                raise ValueError(f"append for unregistered tracks {unknown}")
        for track in dict.fromkeys(targets):
            _pending.add_range(txn, self._dbs["pend"], track_prefix(track), first, first + len(batch) - 1)
            self._add_count(txn, track, len(batch))

    def _add_count(self, txn: lmdb.Transaction, track: str, delta: int) -> None:
        key = count_key(track)
        raw = txn.get(key, db=self._dbs["meta"])
        txn.put(key, COUNT.pack((COUNT.unpack(raw)[0] if raw else 0) + delta), db=self._dbs["meta"])

    def mark_done(
        self, track: str, seqs: Iterable[int], states: Mapping[bytes, FileState | None] | None = None
    ) -> int:
        """In one transaction: the entries ``seqs`` are done for ``track``, and the
        manifest takes ``states`` (None removes the path). Returns how many
        entries were pending and are now done. Idempotent."""
        prefix = track_prefix(track)
        seq_list = list(seqs)
        encoded = [(p, encode_state(s) if s is not None else None) for p, s in (states or {}).items()]

        def do(txn: lmdb.Transaction) -> int:
            removed = len(_pending.remove_seqs(txn, self._dbs["pend"], prefix, seq_list))
            if removed:
                self._add_count(txn, track, -removed)
            for path, raw in encoded:
                self._put_manifest(txn, path, raw)
            return removed

        return self._write(do)

    def _put_manifest(self, txn: lmdb.Transaction, path: bytes, raw: bytes | None) -> None:
        pk = path_key(path)
        if raw is None:
            txn.delete(pk, db=self._dbs["manifest"])
            return
        txn.put(pk, raw, db=self._dbs["manifest"])
        if pk[:1] == b"\0":
            txn.put(pk, path, db=self._dbs["longpath"])

    def mark_dead(self, track: str, reasons: Mapping[int, str]) -> int:
        """Move entries from pending to the dead-letter list of ``track``; each
        dead letter keeps a copy of its entry, so compaction may drop the log's."""
        prefix = track_prefix(track)
        encoded = {s: r.encode(errors="replace") for s, r in reasons.items()}

        def do(txn: lmdb.Transaction) -> int:
            moved = 0
            for seq in _pending.remove_seqs(txn, self._dbs["pend"], prefix, encoded):
                reason = encoded[seq]
                raw = _log.entry_raw(txn, self._dbs["log"], seq)
                if raw is None:
                    raise JournalCorrupt(f"pending entry {seq} missing from log")
                value = len(reason).to_bytes(4, "big") + reason + raw
                txn.put(prefix + encode_seq(seq), value, db=self._dbs["dead"])
                moved += 1
            if moved:
                self._add_count(txn, track, -moved)
            return moved

        return self._write(do)

    def requeue_dead(self, track: str | None = None) -> int:
        """Give dead letters (of one track, or all) a fresh try, pending for
        their track only. Each comes back as CHANGE of the paths it named
        (ship the *current* state): replaying an old DELETE or MOVE verbatim
        after newer entries could remove newer content on the mirror.
        Returns how many dead letters were requeued."""
        letters = self.dead_letters(track)

        def do(txn: lmdb.Transaction) -> tuple[int, int]:
            seq = self._read_last_seq(txn)
            count = 0
            for letter in letters:
                prefix = track_prefix(letter.track)
                if not txn.delete(prefix + encode_seq(letter.record.seq), db=self._dbs["dead"]):
                    continue  # requeued meanwhile by another process
                for entry in _as_changes(letter.record.entry):
                    seq += 1
                    self._put_batch(txn, seq, [entry], _log.encode_batch([entry]), [prefix])
                count += 1
            return count, seq

        count, last = self._write(do)
        self._notify(last)
        return count

    def manifest_put(self, states: Mapping[bytes, FileState | None]) -> None:
        """Write manifest states without marking entries done (baseline seeding)."""
        encoded = [(p, encode_state(s) if s is not None else None) for p, s in states.items()]

        def do(txn: lmdb.Transaction) -> None:
            for path, raw in encoded:
                self._put_manifest(txn, path, raw)

        self._write(do)

    def set_checkpoint(self, time_ns: int) -> Checkpoint:
        def do(txn: lmdb.Transaction) -> Checkpoint:
            cp = Checkpoint(time_ns, self._read_last_seq(txn))
            txn.put(b"checkpoint", PAIR.pack(cp.time_ns, cp.seq), db=self._dbs["meta"])
            return cp

        return self._write(do)

    def compact(self, retention_ns: int, now_ns: int | None = None, chunk: int = 10_000) -> int:
        """Remove entries that every track has finished (done or dead) and that
        are older than ``retention_ns``, oldest first, stopping at the first
        entry that must stay. Returns the number removed."""
        now = time.time_ns() if now_ns is None else now_ns
        horizon = now - retention_ns
        removed_total = 0
        while True:
            removed = self._write(lambda txn: _compact.compact_chunk(txn, self._dbs, horizon, chunk))
            removed_total += removed
            if removed < chunk:
                return removed_total


def _as_changes(entry: Entry) -> list[Entry]:
    """The CHANGE entries that re-ship whatever ``entry`` touched, as it is now."""
    paths = [entry.path, entry.dest] if entry.op == Op.MOVE else [entry.path]
    if entry.op == Op.RESCAN:
        return [entry]
    return [Entry(Op.CHANGE, p, time_ns=entry.time_ns, flags=entry.flags) for p in paths]
