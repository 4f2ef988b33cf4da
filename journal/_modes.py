"""How each kind of process uses the journal: one strategy per mode, so the
store reads the same whichever process opened it.

- **agent** (``agent run``, one at a time): owns the intake. A small batch is
  made durable there (one write, one ``fdatasync``) and a thread folds it
  into LMDB within ``fold_delay``; every LMDB write, and every read, folds
  first, so the agent sees all it acknowledged.
- **client** (``replay``, ``verify --repair``, ``dead retry`` beside an agent):
  every write is one synced LMDB commit made under the intake lock, after
  folding whatever the agent's intake holds, so seqs never collide.
- **read** (``status``, ``verify``, ``wait``): never writes. LMDB is opened
  read-only and nothing is folded, locked for writing or created. Batches an
  agent acknowledged in the intake and has not folded yet (a running
  agent's last ``fold_delay``, or a crashed agent's last batches until the
  next agent or client open folds them) are not in its reads:
  :meth:`unfolded` counts their entries.

Every mode refuses an intake whose acknowledged records are damaged. What a
write folds (``to_fold``) and what follows its commit are the mode's; the
transaction itself is ``_writes.fold``; the agent's bookkeeping of unfolded
batches and its fold thread are ``_fold.Folder``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import _intake, _log, _upgrade
from ._fold import Folder
from ._intake import Batch, Intake, Scan
from ._steady import ShipGate
from .errors import JournalCorrupt, JournalError
from .types import Entry

__all__ = ["Strategy", "ReadMode", "ClientMode", "AgentMode", "Append", "Probe", "Recheck", "make"]

StoredLast = Callable[[], int]  # LMDB's last seq, from a fresh snapshot
Probe = Callable[[list[str] | None], tuple[int, tuple[str, ...]]]  # (LMDB's last seq, resolved tracks)
Recheck = Callable[[list[Entry]], list[Entry]]


@dataclass(frozen=True, slots=True)
class Append:
    """One append as asked for: the batch, its log records, the tracks it is
    for (None: every registered one), the checkpoint it moves, its recheck."""

    batch: list[Entry]
    records: list[tuple[int, bytes]]
    tracks: list[str] | None
    checkpoint_ns: int | None
    recheck: Recheck | None


def _judged(found: Scan | None, jdir: Path) -> str:
    """What a crash tore in the intake ("" if nothing); raises on damage."""
    if found is not None and found.damage:
        raise JournalCorrupt(found.damage, path=str(jdir / _intake.NAME))
    return found.torn if found is not None else ""


def _count_unfolded(jdir: Path, lock_fd: int | None, stored_last: StoredLast) -> int:
    """Entries of acknowledged intake batches that LMDB does not hold yet."""
    seen: list[int] = []

    def last() -> int:
        seen.append(stored_last())
        return seen[-1]

    found = _intake.scan_as_reader(jdir, lock_fd, last)
    if found is None:
        return 0
    _judged(found, jdir)
    return sum(b.count for b in found.chain if b.last > seen[-1])


class Strategy:
    """What a journal does in its mode; these defaults are the read mode's,
    and the writing modes override them."""

    name = "read"
    writable = False  # may commit to LMDB
    upgrades = False  # brings an older schema up to date

    def __init__(self, jdir: Path, stored_last: StoredLast) -> None:
        self._jdir = jdir
        self._stored_last = stored_last
        self.torn = ""  # what a crash left half written in the intake (dropped), if anything

    def check_schema(self, schema: int) -> None:
        """Raise when this mode must not use a journal of ``schema``."""

    def start(self, fold_delay: float) -> None:
        """Judge the intake, once the open is accepted (root and schema)."""
        self.torn = _judged(_intake.scan_as_reader(self._jdir, None, self._stored_last), self._jdir)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held around every LMDB write transaction."""
        raise JournalError("journal opened read-only", path=str(self._jdir))
        yield  # pragma: no cover

    def to_fold(self) -> list[Batch]:
        """The intake batches a write transaction folds in before its own work."""
        return []

    def committed(self, batches: list[Batch]) -> None:
        """A write transaction that folded ``batches`` committed."""

    def failed(self, batches: list[Batch]) -> None:
        """A write transaction that was to fold ``batches`` failed."""

    def before_read(self) -> None:
        """Runs before every read transaction."""

    def append_small(self, req: Append, probe: Probe) -> tuple[int, int] | None:
        """Make a batch durable outside LMDB, if this mode can: its (first,
        last) seq, else None (the batch then goes to LMDB)."""
        return None

    def unfolded(self) -> int:
        """Entries acknowledged in the intake that LMDB does not hold yet."""
        return _count_unfolded(self._jdir, None, self._stored_last)

    def close(self, fold: bool) -> None:
        """Release what the mode holds; with ``fold``, fold what it can first."""


class ReadMode(Strategy):
    """Never writes: the defaults."""


class ClientMode(Strategy):
    name = "client"
    writable = True

    def __init__(self, jdir: Path, stored_last: StoredLast, ships: ShipGate) -> None:
        super().__init__(jdir, stored_last)
        self._ships = ships
        self._lock: int | None = None  # opened by the first write (a refused open makes no file)
        self._intake: Intake | None = None

    def check_schema(self, schema: int) -> None:
        _upgrade.refuse_old_schema(schema, self.name, self._jdir)

    def start(self, fold_delay: float) -> None:
        self._ships.create()
        self.torn = _judged(_intake.scan_as_reader(self._jdir, self._held(), self._stored_last), self._jdir)

    def _held(self) -> int:
        if self._lock is None:
            self._lock = _intake.open_lock(self._jdir)
        return self._lock

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with _intake.locked(self._held()):
            yield

    def to_fold(self) -> list[Batch]:
        if self._intake is None:
            self._intake = Intake.open(self._jdir, create=False)  # the agent may have made it since
        return self._intake.read_chain() if self._intake is not None else []

    def unfolded(self) -> int:
        return _count_unfolded(self._jdir, self._held(), self._stored_last)

    def close(self, fold: bool) -> None:
        if self._intake is not None:
            self._intake.close()
            self._intake = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


class AgentMode(Strategy):
    name = "agent"
    writable = True
    upgrades = True

    def __init__(
        self,
        jdir: Path,
        stored_last: StoredLast,
        ships: ShipGate,
        fold: Callable[[], None],
        appending: threading.RLock,
    ) -> None:
        super().__init__(jdir, stored_last)
        self._ships = ships
        self._fold = fold
        self._appending = appending
        self._lock: int | None = None
        self._folder: Folder | None = None

    def start(self, fold_delay: float) -> None:
        """Open (or create) the intake, fold what a crash left in it, and
        start the fold thread."""
        self._lock = _intake.open_lock(self._jdir)
        self._ships.create()
        intake = Intake.open(self._jdir, create=True)
        assert intake is not None
        folder = Folder(intake, self._fold, self._appending)
        try:
            self.torn = folder.recover(self._stored_last)
        except BaseException:
            intake.close()
            raise
        self._folder = folder
        self._fold()
        folder.start(fold_delay)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        yield  # this process numbers appends under its own locks (see append_small)

    def to_fold(self) -> list[Batch]:
        return self._folder.unfolded() if self._folder is not None else []

    def committed(self, batches: list[Batch]) -> None:
        if self._folder is not None:
            self._folder.failed = False
            self._folder.folded(batches)

    def failed(self, batches: list[Batch]) -> None:
        if self._folder is not None and batches:
            self._folder.failed = True

    def before_read(self) -> None:
        """Fold first (when the disk refuses, read what LMDB has; the batches
        stay in the intake)."""
        if self._folder is not None and self._folder.waiting():
            try:
                self._fold()
            except JournalError:
                pass

    def append_small(self, req: Append, probe: Probe) -> tuple[int, int] | None:
        """One record in the intake: the batch is durable when this returns.
        None when the batch (after ``recheck``) is empty or too big for it, it
        is full, or folding fails: then the batch goes to LMDB, which folds the
        intake first (and rechecks again). Caller holds ``appending``."""
        folder, batch, records = self._folder, req.batch, req.records
        if folder is None or len(records) != 1 or len(records[0][1]) > _intake.MAX_BODY or folder.failed:
            return None  # a failing fold (full disk) must reach the caller, not fill the intake
        assert self._lock is not None
        with _intake.locked(self._lock):  # against a client folding, then appending
            if req.recheck is not None:
                batch = req.recheck(batch)
                records = _log.encode_batch(batch)
                if len(records) != 1 or len(records[0][1]) > _intake.MAX_BODY:
                    return None
            stored_last, resolved = probe(req.tracks)
            first = folder.next_first(stored_last)
            item = Batch(first, len(batch), resolved, req.checkpoint_ns, records[0][1])
            if not folder.intake.append(item):
                return None
            folder.added(item)
        # No wake-up here: a waiter would read, and reading folds at once, so every
        # small batch would cost a second commit. Waiters wake when the fold
        # thread commits (within fold_delay), one commit for every batch since.
        return item.first, item.last

    def unfolded(self) -> int:
        return sum(b.count for b in self._folder.unfolded()) if self._folder is not None else 0

    def close(self, fold: bool) -> None:
        """Stop the fold thread; with ``fold``, fold what the intake holds
        (when the disk allows; else it stays safe there for the next open)."""
        if self._folder is not None:
            self._folder.stop()
            if fold and self._folder.waiting():
                try:
                    self._fold()
                except JournalError:
                    pass
            self._folder.intake.close()
            self._folder = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def make(
    name: str,
    jdir: Path,
    stored_last: StoredLast,
    ships: ShipGate,
    fold: Callable[[], None],
    appending: threading.RLock,
) -> Strategy:
    if name == "agent":
        return AgentMode(jdir, stored_last, ships, fold, appending)
    if name == "client":
        return ClientMode(jdir, stored_last, ships)
    if name == "read":
        return ReadMode(jdir, stored_last)
    raise ValueError(f"unknown journal mode {name!r}")
