"""The processes a test started indirectly. A SIGKILLed agent leaves its
shipper processes running, re-parented to init: usually they finish on their
own, but an rsync that opened a path just made a fifo waits for a writer for
ever. A test records them (by pid and start time, so a reused pid is never
hit) before it kills the agent (``remember``), and the suite ends the ones
still running after each test (``end_remembered``, tests/conftest.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

__all__ = ["Started", "descendants", "end_descendants", "remember", "end_remembered", "running"]

Started = tuple[int, int]  # (pid, start time in clock ticks since boot)

_remembered: list[Started] = []


def _start_time(pid: int) -> int | None:
    """When ``pid`` started, or None when there is no such running process
    (a zombie has ended already)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[1].split()  # after the command name: state is field 3
    return None if fields[0] == b"Z" else int(fields[19])  # field 22: start time


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    return _start_time(pid) is not None


def descendants(pid: int) -> list[Started]:
    """Every process below ``pid`` now, deepest last."""
    out: list[Started] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                kids = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                start = _start_time(kid)
                if start is not None:
                    out.append((kid, start))
                    todo.append(kid)
    return out


def end_descendants(started: list[Started]) -> int:
    """SIGKILL those of ``started`` still running as the same process;
    returns how many."""
    ended = 0
    for pid, start in started:
        if _start_time(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
                ended += 1
            except ProcessLookupError:
                pass
    return ended


def remember(pid: int) -> None:
    """Note what runs below ``pid`` now, before it is killed."""
    _remembered.extend(descendants(pid))


def end_remembered() -> int:
    """End what was remembered and still runs; returns how many."""
    ended = end_descendants(_remembered)
    _remembered.clear()
    return ended
