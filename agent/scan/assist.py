"""A scan helper process: compares the subtrees a scan gives it with the
manifest, exactly as the scan does, and sends back what it finds.

Started by :mod:`agent.scan.team` as ``python -m agent.scan.assist PARENT_PID``
with pipes on stdin (orders) and stdout (findings); stderr is the agent's.
It opens the journal read-only and never writes it: entries go to the scan,
which journals them. Orders: ``("spec", ...)`` first, then ``("walk",
[(dir, inode), ...])``, ``("split",)`` (give up half of what it has not
reached yet) and ``("stop",)``. Findings: ``ready``, ``entries``, ``give``, ``counts``,
``idle``, ``log`` and ``failed`` (see :mod:`agent.scan.team`).

It dies with the thread that started it (``PR_SET_PDEATHSIG``) and exits
when its orders pipe closes, so it never outlives the scan.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import MutableMapping
from typing import Any

import structlog

from agent.scan.scanner import Scanner, ScanRun
from agent.scan.wire import Closed, read_frame, write_frame
from agent.tree.excludes import Excludes
from agent.tree.walk import Walk
from journal import Entry, Journal

_PR_SET_PDEATHSIG = 1
_COUNTS_EVERY_S = 0.5
_ORDERS = 0
_FINDINGS = 1  # moved off fd 1 at start, so a stray print cannot corrupt a frame


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)


def _plain(value: object) -> object:
    """A log field as something marshal carries."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _forward(_logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    """structlog's last processor here: log events go to the scan, which logs them."""
    name = str(event.pop("event", ""))
    write_frame(_FINDINGS, ("log", method, name, {k: _plain(v) for k, v in event.items()}))
    raise structlog.DropEvent


class _Helper:
    def __init__(self, spec: tuple[object, ...]) -> None:
        _, root, journal_path, patterns, threshold, dev, batch = spec
        assert isinstance(root, bytes) and isinstance(journal_path, str) and isinstance(patterns, list)
        assert threshold is None or isinstance(threshold, int)
        assert isinstance(dev, int) and isinstance(batch, int)
        self.journal = Journal.open(journal_path, mode="read")
        scanner = Scanner(root, self.journal, Excludes(patterns), slack_ns=0, batch=batch, helpers=0)
        self.run = ScanRun(scanner, b"", threshold, deliver=self._deliver)
        self.run.dev = dev
        self.sent_counts = time.monotonic()

    def serve(self) -> None:
        write_frame(_FINDINGS, ("ready",))
        while True:
            order = read_frame(_ORDERS)
            if order[0] == "walk":
                subtrees = order[1]
                assert isinstance(subtrees, list)
                self.run.walk_subtrees([(rel, ino) for rel, ino in subtrees], between=self._between)
                self.run.flush()
                write_frame(_FINDINGS, ("idle", self.run.counts()))
            elif order[0] == "stop":
                self.journal.close()
                return
            # a "split" that arrives after its subtree was done needs nothing

    def _deliver(self, entries: list[Entry]) -> None:
        rows = [(int(e.op), e.path, e.dest, e.time_ns, e.flags) for e in entries]
        write_frame(_FINDINGS, ("entries", rows))

    def _between(self, walk: Walk, _rel: bytes) -> None:
        """After each listing: give up a subtree when asked; report counts now and then."""
        if select.select([_ORDERS], [], [], 0)[0]:
            order = read_frame(_ORDERS)
            if order[0] == "split":
                subtrees = walk.split()
                self.run.hand_over(subtrees)
                write_frame(_FINDINGS, ("give", subtrees))  # maybe none: the scan may ask again
            elif order[0] == "stop":
                raise Closed("told to stop while walking")
        now = time.monotonic()
        if now - self.sent_counts >= _COUNTS_EVERY_S:
            self.sent_counts = now
            write_frame(_FINDINGS, ("counts", self.run.counts()))


def main() -> None:
    global _FINDINGS
    _die_with_parent(int(sys.argv[1]))
    _FINDINGS = os.dup(1)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the scan's process handles the operator's signals
    structlog.configure(
        processors=[_forward],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        spec = read_frame(_ORDERS)
        if spec[0] != "spec":
            raise ValueError(f"expected the scan's spec, got {spec[0]!r}")
        _Helper(spec).serve()
    except Closed:
        os._exit(0)  # the scan is gone or done with us
    except BaseException:  # reported to the scan, which redoes the work
        try:
            write_frame(_FINDINGS, ("failed", traceback.format_exc(limit=8)))
        except OSError:
            pass
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
