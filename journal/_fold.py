"""The agent's side of the intake: which acknowledged batches are not in LMDB
yet, the thread that folds them in, and when the intake may be rewound.

Folding itself is the journal's (a write transaction folds these batches
before its own work); this keeps the bookkeeping and the timing apart from it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._intake import Batch, Intake, scan
from .errors import JournalCorrupt, JournalError

__all__ = ["Folder"]


class Folder:
    """Thread-safe. ``fold`` commits every unfolded batch to LMDB (and calls
    :meth:`folded`); ``appending`` is the journal's seq-allocation lock."""

    def __init__(self, intake: Intake, fold: Callable[[], None], appending: threading.RLock) -> None:
        self.intake = intake
        self._fold = fold
        self._appending = appending
        self._cv = threading.Condition()
        self._unfolded: list[Batch] = []
        self._last = 0  # last seq written to the intake
        self.failed = False  # a fold failed; until one succeeds, appends bypass the intake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def recover(self, stored_last: Callable[[], int]) -> str:
        """Take over what the intake holds (left by a crash, or all folded);
        ``stored_last`` reads LMDB's last seq. Returns what a crash tore (a
        record never acknowledged, dropped) or ""; raises on damage."""
        found = scan(self.intake.read_all(), stored_last())
        if found.damage:
            raise JournalCorrupt(found.damage, path=str(self.intake.path))
        with self._cv:
            self._unfolded = found.chain
            self._last = max((b.last for b in self._unfolded), default=0)
        return found.torn

    def start(self, delay: float) -> None:
        self._thread = threading.Thread(target=self._loop, args=(delay,), name="journal-fold", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def unfolded(self) -> list[Batch]:
        with self._cv:
            return list(self._unfolded)

    def waiting(self) -> bool:
        """Whether anything waits to be folded (a cheap check before reads)."""
        return bool(self._unfolded)

    def next_first(self, stored_last: int) -> int:
        """The seq the next intake batch starts at: after the intake's last and
        after LMDB's (a client may have appended there). Caller holds ``appending``."""
        return max(self._last, stored_last) + 1

    def added(self, batch: Batch) -> None:
        """``batch`` is durable in the intake. Caller holds ``appending``."""
        with self._cv:
            self._unfolded.append(batch)
            self._last = batch.last
            self._cv.notify_all()

    def folded(self, batches: list[Batch]) -> None:
        """``batches`` are durable in LMDB: forget them, and rewind the intake
        when nothing in it is unfolded. Skipped while another thread appends
        (it holds ``appending``): its record may be written but not yet added."""
        if not batches:
            return
        with self._cv:
            self._unfolded = [b for b in self._unfolded if b.last > batches[-1].last]
        if self._appending.acquire(blocking=False):
            try:
                with self._cv:
                    if not self._unfolded:
                        self.intake.rewind()
            finally:
                self._appending.release()

    def _loop(self, delay: float) -> None:
        """Fold ``delay`` after a batch arrives, so batches arriving meanwhile
        share one LMDB commit. A failure (a full disk) is retried later; the
        batches stay safe in the intake meanwhile."""
        while True:
            with self._cv:
                while not self._unfolded and not self._stop.is_set():
                    self._cv.wait()
            if self._stop.wait(delay):
                return
            try:
                self._fold()
            except JournalError:
                self._stop.wait(delay)
