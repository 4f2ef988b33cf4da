"""The inotify fd reader: one thread that does nothing but empty the kernel
queue with large reads (docs/design.md §2, §5).

Translating and journaling cost far more per event than reading, and an
append may wait on a busy disk; a reader that did those too would leave the
kernel queue to fill and overflow (``max_queued_events``) where a bare reader
like ``inotifywait`` keeps up. So this thread only reads, and hands the raw
bytes over; the watcher thread takes everything read so far in one go,
decodes it in bulk and journals it.

Checkpoint: each *drain* (reads until the fd is empty) is preceded by
``t0 = clock_ns()`` and followed by a marker carrying that ``t0``. Every
change completed before ``t0`` had its event read before the marker, so once
the watcher has taken a marker, the checkpoint may move to its ``t0`` (as
far as reading goes: entries still held by move pairing hold it back).

Memory is bounded: past ``max_buffered`` bytes not yet taken, the reader
stops reading and the kernel queue takes the pressure again (an overflow
there is reported as usual).

Threading: :meth:`run` in its own thread; :meth:`take` from one other thread.
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Reader", "Taken"]

READ_SIZE = 1 << 20
POLL_MS = 100  # an idle drain (a fresh marker) at least this often
MAX_BUFFERED = 64 << 20
# A drain that found only a trickle (a writer slower than this thread, the
# usual case) is followed by a short pause, so the next read takes what
# gathered meanwhile: one read and one hand-over per few hundred events, not
# per few. The kernel queue holds 16,384 events by default; no writer fills
# it in LINGER_S, and a drain as large as SMALL_READ (a busy queue) never waits.
LINGER_S = 0.002
SMALL_READ = 16 << 10


@dataclass(slots=True)
class Taken:
    """What the reader read since the last take: raw event bytes, and the
    ``t0`` of the newest complete drain among them (None: none completed)."""

    data: bytes = b""
    t0_ns: int | None = None


class Reader:
    def __init__(
        self,
        fd: int,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        read_size: int = READ_SIZE,
        max_buffered: int = MAX_BUFFERED,
        linger_s: float = LINGER_S,
    ) -> None:
        self._fd = fd
        self._clock_ns = clock_ns
        self._read_size = read_size
        self._max_buffered = max_buffered
        self._linger_s = linger_s
        self._items: collections.deque[bytes | int] = collections.deque()  # bytes, or a drain's t0
        self._buffered = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.error: BaseException | None = None  # why the reader stopped early
        self.bytes_read = 0
        self.reads = 0

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def run(self) -> None:
        """Drain, mark, wait for the fd; until :meth:`stop` or a read error
        (kept in ``error``; the watcher raises it)."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            while not self._stop.is_set():
                t0 = self._clock_ns()  # before the reads that empty the fd
                got = self._drain(poller)
                if got < 0:
                    continue  # stopping
                self._mark(t0)
                if 0 < got < SMALL_READ and self._stop.wait(self._linger_s):
                    break
                poller.poll(POLL_MS)
        except BaseException as exc:
            self.error = exc
        finally:
            self.stop()

    def _drain(self, poller: select.poll) -> int:
        """Read until the fd is empty (bytes read) or a stop (-1)."""
        got = 0
        while poller.poll(0):
            if not self._room():
                return -1
            data = os.read(self._fd, self._read_size)
            got += len(data)
            with self._cond:
                self._items.append(data)
                self._buffered += len(data)
                self.bytes_read += len(data)
                self.reads += 1
                self._cond.notify_all()
        return got

    def _room(self) -> bool:
        with self._cond:
            while self._buffered >= self._max_buffered and not self._stop.is_set():
                self._cond.wait(POLL_MS / 1000)
            return not self._stop.is_set()

    def _mark(self, t0: int) -> None:
        with self._cond:
            if self._items and isinstance(self._items[-1], int):
                self._items[-1] = t0  # an idle drain: the newer marker says more
            else:
                self._items.append(t0)
            self._cond.notify_all()

    def wait(self, timeout_s: float) -> bool:
        """Until something was read or marked, the reader stopped, or timeout."""
        with self._cond:
            if not self._items and not self._stop.is_set():
                self._cond.wait(timeout_s)
            return bool(self._items)

    def pending_bytes(self) -> int:
        with self._cond:
            return self._buffered

    def take(self, max_bytes: int) -> Taken:
        """Everything read so far, in order (at most about ``max_bytes``: the
        rest stays for the next take)."""
        out = Taken()
        chunks: list[bytes] = []
        size = 0
        with self._cond:
            while self._items and size < max_bytes:
                item = self._items.popleft()
                if isinstance(item, int):
                    out.t0_ns = item
                else:
                    chunks.append(item)
                    size += len(item)
            self._buffered -= size
            self._cond.notify_all()
        out.data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return out
