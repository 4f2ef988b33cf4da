"""Members that stopped answering in the middle of an msync call.

makuosan retries a member that stopped answering for 60 s before it drops
it, and every msync call sending to that member blocks meanwhile, live
members included. The shipper sees a call that prints nothing for a while
(at ``-l 2`` every file prints a line per member) and tries each member
alone; a member that stalls alone is *suspect*: for a while, the shipper
sends to the others only (``-t``) and keeps the suspect's tracks pending.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Suspects", "idle_limit", "SUSPECT_S", "SLOWEST_BPS"]

SUSPECT_S = 60.0  # makuosan itself gives a silent member up after 500 ms x 120
SLOWEST_BPS = 5 * 1024 * 1024  # a file in flight may be this slow before its silence counts
ENTRY_S = 0.001  # a walk or a --delete listing may be silent this long per entry (makuosan: ~0.2 ms)


def idle_limit(stall_s: float, biggest: int, entries: int = 0) -> float | None:
    """Seconds of silence after which a call is blocked: ``stall_s`` plus the
    time the biggest file of the call may take to cross, plus the time
    members may take to list ``entries`` for a ``--delete`` (which prints
    only what it deletes). None: never."""
    if stall_s <= 0:
        return None
    return stall_s + biggest / SLOWEST_BPS + entries * ENTRY_S


class Suspects:
    """host -> until when it is left out (monotonic seconds). Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, hold_s: float = SUSPECT_S) -> None:
        self._clock = clock
        self._hold = hold_s
        self._until: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def mark(self, host: bytes) -> None:
        with self._lock:
            self._until[host] = self._clock() + self._hold

    def active(self, host: bytes) -> bool:
        with self._lock:
            until = self._until.get(host)
            if until is not None and self._clock() >= until:
                del self._until[host]
                until = None
            return until is not None
