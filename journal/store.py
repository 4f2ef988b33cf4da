"""The durable LMDB journal: entries, per-track progress, manifest, checkpoint.

Durability: when :meth:`Journal.append` returns, the batch survives a crash or
power loss; that return is the acknowledgement point for the watcher. In the
agent, a small batch is made durable in the intake (``_intake``: one write, one
``fdatasync``) and folded into LMDB within ``fold_delay`` seconds, or at once
when this process reads or writes the journal; a large batch, and every append
by another mode, is one synced LMDB transaction. Every other write is one
synced transaction as well (which first folds the intake), so a batch, a done
mark or a manifest update is either wholly there after a crash or not at all.
Processes that only read see a small batch once it is folded.

Threading: one ``Journal`` may be shared by threads (LMDB serialises writers,
readers use their own snapshot). Never use a ``Journal`` across ``fork()``.

Processes: one *agent* process writes (an exclusive lock on the directory);
*client* processes (``replay``, ``verify --repair``) may append short requests
concurrently through LMDB's own writer lock; *read* processes never write.
What differs between these modes is one strategy object each (``_modes``);
the transactions themselves are ``_writes`` and ``_reads``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import lmdb

from . import _compact, _create, _env, _log, _manifest, _modes, _upgrade, _writes
from ._env import Mode
from ._gate import Gate
from ._layout import SCHEMA_VERSION, Dbs, open_dbs, track_prefix
from ._reads import DeadLetter, JournalReads, JournalStats, TrackStats
from ._steady import ShipGate
from .codec import encode_state
from .errors import JournalCorrupt, JournalFull, NotAJournal, WrongRoot
from .types import Checkpoint, Entry, FileState, Op

__all__ = ["Journal", "JournalStats", "TrackStats", "DeadLetter", "SCHEMA_VERSION"]

DEFAULT_MAP_SIZE = 1 << 30
DEFAULT_FOLD_DELAY = 0.05  # seconds an acknowledged small batch may wait to reach LMDB
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
        self._ships = ShipGate(path)
        self._appending = threading.RLock()  # one seq allocation at a time in this process
        self._probed: tuple[int, int, list[str]] | None = None  # see _probe
        stored_last = lambda: self._snapshot(self._read_last_seq)  # noqa: E731
        self._strategy = _modes.make(mode, path, stored_last, self._ships, self._fold, self._appending)
        self.schema = SCHEMA_VERSION
        self._refused_for_space: set[str] = set()  # see _minding_space

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
        fold_delay: float = DEFAULT_FOLD_DELAY,
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
            _create.prepare(jdir, mode == "agent", jdir / "data.mdb" in created, map_size)
            journal = cls._open_locked(jdir, mode, lock_fd, map_size)
            try:
                journal._strategy.check_schema(journal.schema)
                journal._init_meta(root, track_list)
                journal._strategy.start(fold_delay)
                journal._upgrade()
            except BaseException:
                journal._shut(fold=False)  # the lock is released below
                raise
        except BaseException as exc:
            err = _env.open_error(exc, jdir)
            fresh = jdir / "data.mdb" in created
            if isinstance(err, NotAJournal) or (isinstance(err, JournalFull) and fresh):
                _env.remove_created(created)  # nothing of value was there before
                _create.abandon(jdir, mode == "agent")
            _env.release_lock(lock_fd)
            if err is exc:
                raise
            raise err from exc
        return journal

    @classmethod
    def _open_locked(cls, jdir: Path, mode: Mode, lock_fd: int | None, map_size: int) -> Journal:
        env = _env.open_env(jdir, mode, map_size)
        try:
            dbs, schema = open_dbs(env, mode != "read", str(jdir))
            journal = cls(env, jdir, mode, lock_fd, dbs)
        except BaseException:
            env.close()
            raise
        journal.schema = schema
        return journal

    def close(self) -> None:
        """Fold what the intake holds into LMDB (when the disk allows; else it
        stays safe in the intake for the next open), then release everything."""
        self._shut(fold=True)
        _env.release_lock(self._lock_fd)
        self._lock_fd = None

    def _shut(self, *, fold: bool) -> None:
        self._strategy.close(fold)
        self._env.close()

    @property
    def intake_torn(self) -> str:
        """What a crash tore in the intake (a batch never acknowledged, dropped), or ""."""
        return self._strategy.torn

    def unfolded(self) -> int:
        """How many acknowledged entries wait in the intake, not yet in LMDB.
        An agent's reads fold them first; a client's and a reader's reads do
        not see them (a reader never folds: the agent does within its fold
        delay, or the next agent or client open after a crash)."""
        return self._strategy.unfolded()

    def _fold(self) -> None:
        self._write(lambda txn: None, kind="fold")  # a write folds every acknowledged intake batch first

    def _before_read(self) -> None:
        self._strategy.before_read()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _upgrade(self) -> None:
        """The agent brings an older schema up to date, once the open is
        accepted (root checked, intake judged and folded)."""
        if self.schema != SCHEMA_VERSION and self._strategy.upgrades:
            _upgrade.upgrade(self._write, self._env, self._dbs, self.schema)
            self.schema = SCHEMA_VERSION

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
        new = tuple(t for t in tracks if t not in known) if self._strategy.writable else ()
        if not self._strategy.writable or ((stored_root is not None or root_b is None) and not new):
            self.new_tracks = new
            return

        self._write(lambda txn: _writes.register(txn, self._dbs, root_b, new), kind="register")
        self.new_tracks = new

    # ------------------------------------------------------------------ writes
    @property
    def space_refused(self) -> bool:
        """True while the last attempt of some kind of write (an append, a
        done mark, a compaction...) was refused for lack of disk space, from
        whichever thread: the operator's signal that the journal's disk is
        full. Each kind clears its own refusal when it next succeeds, so one
        small write that still fits does not hide a refused append."""
        return bool(self._refused_for_space)

    @contextlib.contextmanager
    def _minding_space(self, kind: str) -> Iterator[None]:
        try:
            yield
        except JournalFull:
            self._refused_for_space.add(kind)
            raise
        self._refused_for_space.discard(kind)

    def _write(self, fn: Callable[[lmdb.Transaction], T], need: int = 0, kind: str = "write") -> T:
        """Run ``fn`` in one synced write transaction; grow the map when full.

        ``fn`` may run more than once (after growing), so it must only act
        through ``txn``, which is rolled back before each retry. ``need`` is
        roughly how many bytes the transaction writes (tells a full disk from
        an I/O error). ``kind`` names the write for ``space_refused``.
        """
        with self._minding_space(kind), self._strategy.writing():
            while True:
                batches = self._strategy.to_fold()
                try:
                    with self._gate.shared(), self._env.begin(write=True) as txn:
                        last = _writes.fold(txn, self._dbs, self._read_last_seq(txn), batches)
                        result = fn(txn)
                except lmdb.MapFullError:
                    self._grow()
                    continue
                except lmdb.MapResizedError:
                    self._adopt_map_size()
                    continue
                except lmdb.Error as exc:
                    self._strategy.failed(batches)
                    raise self.noted(_env.translate(exc, self.path, need)) from exc
                except JournalCorrupt as exc:
                    self.noted(exc)
                    raise
                self._strategy.committed(batches)
                if batches:
                    self._notify(last)
                return result

    def _grow(self) -> None:
        with self._gate.exclusive():
            self._env.set_mapsize(self._env.info()["map_size"] * 2)

    def append(
        self,
        entries: Iterable[Entry],
        *,
        tracks: Iterable[str] | None = None,
        checkpoint_ns: int | None = None,
        recheck: _modes.Recheck | None = None,
    ) -> tuple[int, int] | None:
        """Durably append ``entries`` as one batch; return their (first, last) seq.

        Every entry becomes pending for ``tracks`` (default: every registered
        track; naming an unregistered track raises ValueError). ``checkpoint_ns``
        moves the checkpoint with the batch. Returns None when the batch is
        empty (the checkpoint still moves). When this returns, the batch is
        durable: in LMDB, or in the intake (agent, small batches).

        ``recheck`` lets a caller whose entries were decided some time ago
        (a scan) look again at the last moment: it gets the batch and returns
        the one to append (entries dropped or rewritten). It runs right
        before the seqs are given, under the locks that number appends: this
        process's append lock, and the intake lock (a batch for the intake)
        or LMDB's writer lock (a batch for LMDB; a client holds the intake
        lock too). So no other append, from any thread or process, is
        numbered between its look and this batch. It may run more than once
        and must not use the journal.
        """
        if isinstance(tracks, str):
            raise TypeError("tracks must be an iterable of track names, not a str")
        batch = list(entries)
        wanted = list(tracks) if tracks is not None else None
        req = _modes.Append(batch, _log.encode_batch(batch), wanted, checkpoint_ns, recheck)
        with self._minding_space("append"), self._appending:
            span = self._strategy.append_small(req, self._probe)
            return span if span is not None else self._append_to_lmdb(req)

    def _probe(self, tracks: list[str] | None) -> tuple[int, tuple[str, ...]]:
        """LMDB's last seq, and the tracks a batch is for: read again only when
        LMDB's last transaction id moved (a commit of any process), so most
        small appends read no snapshot. Caller holds ``_appending``."""
        with self._gate.shared():
            txnid = self._env.info()["last_txnid"]
        if self._probed is None or self._probed[0] != txnid:
            # read after the id: a commit in between only makes the next call look again
            last, known = self._snapshot(lambda txn: (self._read_last_seq(txn), self._tracks(txn)))
            self._probed = (txnid, last, known)
        return self._probed[1], _writes.pick_tracks(self._probed[2], tracks)

    def _append_to_lmdb(self, req: _modes.Append) -> tuple[int, int] | None:
        def do(txn: lmdb.Transaction) -> tuple[int, int] | None:
            final, final_records = req.batch, req.records
            if req.recheck is not None:  # LMDB's writer lock is held: no append can come between
                final = req.recheck(req.batch)
                final_records = _log.encode_batch(final)
            resolved = _writes.resolve_tracks(txn, self._dbs, req.tracks)
            first = self._read_last_seq(txn) + 1
            last = first + len(final) - 1
            if final:
                _writes.put_batch(txn, self._dbs, first, len(final), final_records, resolved)
            if req.checkpoint_ns is not None:
                _writes.set_checkpoint(txn, self._dbs, req.checkpoint_ns, last)
            return (first, last) if final else None

        result = self._write(do, need=3 * sum(len(raw) for _, raw in req.records), kind="append")
        self._notify(result[1] if result else None)
        return result

    def mark_done(
        self,
        track: str,
        seqs: Iterable[int],
        states: Mapping[bytes, FileState | None] | None = None,
        cleared: Iterable[bytes] | Mapping[bytes, int] = (),
        origin: Mapping[bytes, int] | None = None,
    ) -> int:
        """In one transaction: the entries ``seqs`` are done for ``track``; the
        manifest forgets every path strictly below each of ``cleared`` (trees
        the mirror no longer holds), then takes ``states`` (None removes the
        path). Returns how many were pending and are now done. Idempotent.

        ``origin`` (path -> entry of its state) and ``cleared`` as a mapping
        (tree -> entry of its removal) make a removal drop only what was
        recorded from older entries (journal/_manifest.py); without them
        removals are unconditional."""
        track_prefix(track)  # raises ValueError on a bad name
        seq_list = list(seqs)
        encoded = [(p, encode_state(s) if s is not None else None) for p, s in (states or {}).items()]
        trees = dict(cleared.items()) if isinstance(cleared, Mapping) else dict.fromkeys(cleared)
        trees.pop(b"", None)  # the root is never cleared
        known = dict(origin or {})
        return self._write(
            lambda txn: _writes.mark_done(txn, self._dbs, track, seq_list, encoded, trees, known), kind="done"
        )

    def mark_dead(self, track: str, reasons: Mapping[int, str]) -> int:
        """Move entries from pending to the dead-letter list of ``track``; each
        dead letter keeps a copy of its entry, so compaction may drop the log's."""
        track_prefix(track)  # raises ValueError on a bad name
        encoded = {s: r.encode(errors="replace") for s, r in reasons.items()}
        return self._write(lambda txn: _writes.mark_dead(txn, self._dbs, track, encoded), kind="dead")

    def requeue_dead(self, track: str | None = None, paths: Collection[bytes] | None = None) -> int:
        """Give dead letters (of one track, or all; of ``paths`` only, when
        given) a fresh try, pending for their track only. Each comes back as
        CHANGE of the paths it named (ship the *current* state): replaying an
        old DELETE or MOVE verbatim after newer entries could remove newer
        content on the mirror. Returns how many dead letters were requeued."""
        letters = [d for d in self.dead_letters(track) if paths is None or _names_any(d, paths)]

        def do(txn: lmdb.Transaction) -> tuple[int, int]:
            return _writes.requeue(txn, self._dbs, self._read_last_seq(txn), letters)

        with self._appending:  # allocates seqs
            count, last = self._write(do, kind="requeue")
        self._notify(last)
        return count

    def drop_dead(self, track: str | None, paths: Collection[bytes]) -> list[DeadLetter]:
        """Forget the dead letters (of one track, or all) naming ``paths``:
        the operator fixed the mirror by hand. Returns the letters removed."""
        letters = [d for d in self.dead_letters(track) if _names_any(d, paths)]
        return self._write(lambda txn: _writes.drop_dead(txn, self._dbs, letters), kind="drop_dead")

    def shipping(self) -> contextlib.AbstractContextManager[None]:
        """Hold while capturing, shipping and marking done one plan: a scan
        waits for it, and it waits for a scan (any process; see ``_steady``)."""
        return self._ships.shipping()

    def scanning(self) -> contextlib.AbstractContextManager[None]:
        """Hold from taking a manifest snapshot to the last append of a scan:
        no ship starts or finishes meanwhile (any process)."""
        return self._ships.scanning()

    def manifest_put(self, states: Mapping[bytes, FileState | None]) -> None:
        """Write manifest states without marking entries done (baseline seeding)."""
        encoded = [(p, encode_state(s) if s is not None else None) for p, s in states.items()]

        def do(txn: lmdb.Transaction) -> None:
            for path, raw in encoded:
                _manifest.put(txn, self._dbs, path, raw)

        self._write(do, kind="manifest")

    def set_checkpoint(self, time_ns: int) -> Checkpoint:
        def do(txn: lmdb.Transaction) -> Checkpoint:
            cp = Checkpoint(time_ns, self._read_last_seq(txn))
            _writes.set_checkpoint(txn, self._dbs, cp.time_ns, cp.seq)
            return cp

        return self._write(do, kind="checkpoint")

    def compact(self, retention_ns: int, now_ns: int | None = None, chunk: int = 10_000) -> int:
        """Remove entries that every track has finished (done or dead) and that
        are older than ``retention_ns``, oldest first, stopping at the first
        entry that must stay. Returns the number removed."""
        now = time.time_ns() if now_ns is None else now_ns
        horizon = now - retention_ns
        removed_total = 0
        while True:
            removed = self._write(
                lambda txn: _compact.compact_chunk(txn, self._dbs, horizon, chunk), kind="compact"
            )
            removed_total += removed
            if removed < chunk:
                return removed_total


def _names_any(letter: DeadLetter, paths: Collection[bytes]) -> bool:
    entry = letter.record.entry
    return entry.path in paths or (entry.op == Op.MOVE and entry.dest in paths)
