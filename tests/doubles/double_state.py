"""What the msync double keeps between invocations, and what it costs.

makuosan's sender outlives each msync process, so two things are shared by
every invocation of the double through its state directory:

- **drops**: a member that timed out is dropped from the sender's member list
  and stays dropped, for every later invocation, until it pings again. Here it
  pings again once it answers (its state is no longer ``timeout``) and
  ``ping_delay`` seconds (scaled) have passed since the drop;
- **time**: the cost of each step, multiplied by one knob, ``time_scale``
  (0 = instant, 1 = the speed a real cluster showed). Figures: an invocation
  1.2 ms, a console command 0.75 ms, each entry the daemon sends 0.45 ms
  (``-r`` pipelines, so that is all a walked file costs), 40 ms more for
  every console exchange that writes output over a TCP console (not over
  ``unix:``), and 500 ms x 120 = 60 s before a dead member is given up.
  The daemon serves every console connection from one loop, so invocations
  running at once proceed at once, but at most ``parallel`` files (makuosan's
  ``-f``, default 5) are in flight in the whole daemon: each entry's time is
  spent holding one of that many slots shared through the state directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Timing",
    "Drops",
    "INVOCATION_S",
    "COMMAND_S",
    "ENTRY_S",
    "TCP_PENALTY_S",
    "STALL_S",
    "PING_S",
    "PARALLEL",
]

INVOCATION_S = 0.0012
COMMAND_S = 0.00075
ENTRY_S = 0.00045
TCP_PENALTY_S = 0.040
STALL_S = 0.5 * 120
PING_S = 10.0
PARALLEL = 5  # makuosan -f: files in flight at once in the daemon


@dataclass
class Timing:
    """Sleeps standing in for makuosan's costs. ``model`` adds up what the
    invocation would have cost on a real cluster (scale 1), whatever the
    scale, so tests can reason about costs without waiting for them.
    ``extra_stall`` (absolute seconds) is added to the scaled dead-member
    stall. ``slots`` (the state directory) shares the daemon's ``parallel``
    files in flight between invocations."""

    scale: float = 0.0
    tcp: bool = True
    extra_stall: float = 0.0
    model: float = 0.0
    slots: Path | None = None
    parallel: int = PARALLEL

    def _spend(self, model_s: float) -> None:
        self.model += model_s
        if model_s * self.scale > 0:
            time.sleep(model_s * self.scale)

    def invocation(self) -> None:
        self._spend(INVOCATION_S)

    def command(self, produced_output: bool) -> None:
        """One console exchange; Nagle plus delayed ACK cost 40 ms when the
        daemon wrote lines before the prompt on a TCP console."""
        self._spend(COMMAND_S + (TCP_PENALTY_S if produced_output and self.tcp else 0.0))

    def entry(self) -> None:
        if self.slots is None or ENTRY_S * self.scale <= 0:
            self._spend(ENTRY_S)
            return
        with self._in_flight():
            self._spend(ENTRY_S)

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Hold one of the daemon's ``parallel`` file slots (a lock file each)."""
        assert self.slots is not None
        while True:
            for i in range(max(1, self.parallel)):
                fd = os.open(self.slots / f"in-flight.{i}", os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield
                finally:
                    os.close(fd)
                return
            time.sleep(0.0002)

    def stall(self) -> None:
        """The sender retrying a member that stopped answering, before it gives up."""
        self._spend(STALL_S)
        if self.extra_stall > 0:
            time.sleep(self.extra_stall)


class Drops:
    """Members the sender dropped after a receive timeout: name -> wall time."""

    def __init__(self, state: Path, ping_after: float) -> None:
        self._path = state / "dropped.json"
        self._lock = state / "dropped.lock"
        self.ping_after = ping_after

    @contextmanager
    def _locked(self) -> Iterator[dict[str, float]]:
        with open(self._lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self._path.read_text()) if self._path.exists() else {}
                before = dict(data)
                yield data
                if data != before:
                    tmp = self._path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(data))
                    os.replace(tmp, self._path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def current(self, answering: dict[str, bool]) -> set[str]:
        """Names still dropped. A member that answers again is re-listed once it
        pings, ``ping_after`` seconds after the drop at the earliest; a member
        that still does not answer never pings."""
        now = time.time()
        with self._locked() as data:
            for name in list(data):
                if answering.get(name, True) and now >= data[name] + self.ping_after:
                    del data[name]
            return set(data)

    def drop(self, name: str) -> None:
        with self._locked() as data:
            data[name] = time.time()

    def ping(self, name: str) -> None:
        """The member pinged: listed again at once."""
        with self._locked() as data:
            data.pop(name, None)
