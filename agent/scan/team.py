"""Share one scan's walk with helper processes, so a large tree is compared
with the manifest on every CPU.

A scan spends nearly all its time in one ``lstat`` per entry and the Python
around it; threads would take turns on the interpreter lock, processes do
not. So once a walk has run for :data:`SPAWN_AFTER_S` with directories still
pending, the scan starts helpers (``python -m agent.scan.assist``, the same
interpreter and code). Each opens the journal read-only and scans the
subtrees it is given exactly as the scan itself would, sending back only what
it finds: entries to journal, counts, log events. Journaling stays with the
scan (one writer, the same recheck under the journal's append locks).

Work moves by subtrees. An idle helper gets queued ones, or half of what the
scan's own walk has not reached yet (:meth:`agent.tree.walk.Walk.split`);
with neither, busy helpers are asked to give up half of theirs. A helper
giving subtrees back first sends what it has found; the scan journals what
it receives in order behind its own finds. So whatever was found about a
directory or its ancestors is journaled before anything found below it.

Nothing is lost to a helper that fails (exits, is killed, cannot read): the
subtrees it was given go back to the queue and are scanned again, by the scan
itself if no helper is left; what it already sent stays journaled (a path
found twice is harmless, shipping sends the current state); so do a busy
helper's when it has sent nothing for :data:`SILENCE_S` (it reports twice a
second between listings). Helpers end with
the scan: told to stop, else killed; the kernel kills them if the scanning
thread dies (``PR_SET_PDEATHSIG``), and they exit when their pipe closes.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from agent.scan.wire import Closed, read_frame, write_frame
from agent.tree.walk import Walk
from journal import Entry, Op

__all__ = ["Helper", "HelperSpec", "SPAWN_AFTER_S", "Team", "default_helpers", "end_helpers", "start_helpers"]

log = structlog.get_logger()

SPAWN_AFTER_S = 0.02  # a walk shorter than this is not worth a process
STOP_WAIT_S = 5.0
SILENCE_S = 300.0  # a busy helper that sends nothing this long is taken for hung: its work is redone
MAX_HELPERS = 8
_PROJECT = str(Path(__file__).resolve().parents[2])  # where the helper imports this same code from

Unit = tuple[bytes, int]  # (directory, its inode as listed)


def default_helpers() -> int:
    """One helper per CPU this process may run on, beyond the first, at most 3."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except OSError:
        cpus = os.cpu_count() or 1
    return max(0, min(cpus - 1, 3))


@dataclass(frozen=True, slots=True)
class HelperSpec:
    """What a helper needs to scan as the scan does."""

    root: bytes
    journal: str
    patterns: tuple[str, ...]
    threshold: int | None  # ctime/mtime at or after this is suspect; None: a full scan
    dev: int
    batch: int

    def message(self) -> tuple[object, ...]:
        return ("spec", self.root, self.journal, list(self.patterns), self.threshold, self.dev, self.batch)


@dataclass(eq=False)
class Helper:
    """One helper process, as the scan sees it."""

    proc: subprocess.Popen[bytes]
    to_fd: int
    from_fd: int
    units: list[Unit] = field(default_factory=list)  # given since it was last idle: redone if it fails
    ready: bool = False
    asked: bool = False  # asked to give up a subtree, no answer yet
    counts: dict[str, int] = field(default_factory=dict)
    alive: bool = True
    heard: float = field(default_factory=time.monotonic)  # its last message (it reports every 0.5 s)

    @property
    def idle(self) -> bool:
        return self.alive and self.ready and not self.units


class Team:
    """The helpers of one scan. The scan calls :meth:`tick` after each
    listing, :meth:`next_subtrees` when its own walk is done, then
    :meth:`close` (or :meth:`abort` on an error)."""

    def __init__(
        self,
        spec: HelperSpec,
        size: int,
        take: Callable[[list[Entry]], None],
        hand_over: Callable[[list[Unit]], None],
        started: list[Helper] | None = None,
    ) -> None:
        self.spec = spec
        self.size = size
        self.take = take  # entries a helper found: the scan journals them
        self.hand_over = hand_over  # subtrees are about to leave the scan
        self.began = time.monotonic()
        self.helpers: list[Helper] = []
        self.queue: list[Unit] = []
        self.started = False
        if started:  # started ahead (Scanner.prepare): their interpreter start is already paid
            self._enlist(started)

    # ------------------------------------------------------------ the scan's calls
    def tick(self, walk: Walk) -> None:
        """Between two listings: start the helpers when the walk is long
        enough, read what they sent, and give idle ones work."""
        if not self.started:
            if time.monotonic() - self.began < SPAWN_AFTER_S or len(walk.pending) < 2:
                return
            self._start()
        if self.helpers:
            self._read(0)
            self._feed(walk)

    def next_subtrees(self) -> list[Unit]:
        """Subtrees for the scan to walk itself, once its own walk is done;
        none when every subtree has been scanned. Serves the helpers while it
        waits."""
        while True:
            if self.queue:
                taken, self.queue = self.queue, []
                return taken
            busy = [h for h in self._alive() if h.units]
            if not busy:
                return []
            self._feed(None)
            self._ask_busy()  # the scan itself is idle: a busy helper shares with it too
            quiet = min(h.heard for h in busy) + SILENCE_S - time.monotonic()
            self._read(max(0.0, quiet))
            for h in busy:
                if h.alive and h.units and time.monotonic() - h.heard >= SILENCE_S:
                    self._lost(h, f"silent for {SILENCE_S:.0f} s")

    def counts(self) -> dict[str, int]:
        """The helpers' counts so far, summed."""
        total: dict[str, int] = {}
        for h in self.helpers:
            for key, value in h.counts.items():
                total[key] = total.get(key, 0) + value
        return total

    def close(self) -> None:
        """Stop the helpers (all idle by now) and wait for them; one still
        starting has nothing to finish, and is not waited for."""
        for h in self._alive():
            if not h.ready:
                self._end(h, kill=True)
        for h in self._alive():
            try:
                write_frame(h.to_fd, ("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + STOP_WAIT_S
        for h in self._alive():
            self._end(h, kill=not self._drain(h, deadline))

    def abort(self) -> None:
        """Kill the helpers still running (the scan failed)."""
        for h in self._alive():
            self._end(h, kill=True)

    # ------------------------------------------------------------ helpers
    def _start(self) -> None:
        self._enlist(start_helpers(self.size))

    def _enlist(self, helpers: list[Helper]) -> None:
        self.started = True
        for h in helpers:
            self.helpers.append(h)
            try:
                write_frame(h.to_fd, self.spec.message())
            except OSError as exc:
                self._lost(h, f"could not start: {exc}")
        if self.helpers:
            log.info("scan.helpers", count=len(self.helpers))

    def _alive(self) -> list[Helper]:
        return [h for h in self.helpers if h.alive]

    def _feed(self, walk: Walk | None) -> None:
        """Give every idle helper a subtree: a queued one, else the bottom of
        the scan's own walk; with none to give, ask busy helpers for one."""
        for h in self._alive():
            if not h.idle:
                continue
            if self.queue:
                share = max(1, len(self.queue) // 2)
                units, self.queue = self.queue[-share:], self.queue[:-share]
            else:
                units = walk.split() if walk is not None else []
            if not units:
                self._ask_busy()
                return
            self.hand_over(units)
            h.units.extend(units)
            h.heard = time.monotonic()
            try:
                write_frame(h.to_fd, ("walk", units))
            except OSError as exc:
                self._lost(h, f"pipe: {exc}")

    def _ask_busy(self) -> None:
        for h in self._alive():
            if h.units and not h.asked:
                h.asked = True
                try:
                    write_frame(h.to_fd, ("split",))
                except OSError as exc:
                    self._lost(h, f"pipe: {exc}")

    def _read(self, timeout: float | None) -> None:
        """Handle the messages that arrived (waiting up to ``timeout``)."""
        live = {h.from_fd: h for h in self._alive()}
        if not live:
            return
        readable, _, _ = select.select(list(live), [], [], timeout)
        for fd in readable:
            h = live[fd]
            try:
                message = read_frame(fd)
            except (Closed, OSError, ValueError) as exc:
                self._lost(h, f"exited ({exc or 'pipe closed'})")
                continue
            self._handle(h, message)  # journaling what it found may fail: that fails the scan

    def _drain(self, h: Helper, deadline: float) -> bool:
        """Read a stopping helper's last messages up to its end of file
        (True), or until the deadline (False: it is stuck)."""
        while h.alive:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([h.from_fd], [], [], left)[0]:
                log.warning("scan.helper_stuck", helper=h.proc.pid, waited_s=STOP_WAIT_S)
                return False
            try:
                message = read_frame(h.from_fd)
            except (Closed, OSError, ValueError):
                return True
            self._handle(h, message)
        return True

    def _handle(self, h: Helper, message: tuple[object, ...]) -> None:
        h.heard = time.monotonic()
        kind = message[0]
        if kind == "entries":
            rows = message[1]
            assert isinstance(rows, list)
            self.take([Entry(Op(op), path, dest, t, flags) for op, path, dest, t, flags in rows])
        elif kind == "give":
            units = message[1]
            assert isinstance(units, list)
            self.queue.extend((rel, ino) for rel, ino in units)
            h.asked = False
        elif kind in ("counts", "idle", "ready"):
            if kind != "ready":
                counts = message[1]
                assert isinstance(counts, dict)
                h.counts = counts
            if kind == "idle":
                h.units.clear()
                h.asked = False
            h.ready = True
        elif kind == "log":
            method, event, fields = message[1], message[2], message[3]
            assert isinstance(method, str) and isinstance(event, str) and isinstance(fields, dict)
            getattr(log, method, log.info)(event, helper=h.proc.pid, **fields)
        elif kind == "failed":
            self._lost(h, str(message[1]))
        else:
            raise ValueError(f"unknown message {kind!r}")

    def _lost(self, h: Helper, why: str) -> None:
        """A helper failed: what it was given goes back to the queue."""
        if not h.alive:
            return
        log.warning("scan.helper_failed", helper=h.proc.pid, error=why, requeued=len(h.units))
        self.queue.extend(h.units)
        h.units.clear()
        self._end(h, kill=True)

    def _end(self, h: Helper, *, kill: bool) -> None:
        end_helpers([h], kill=kill)


def start_helpers(count: int) -> list[Helper]:
    """Start ``count`` helper processes; they load their code and then wait
    for a scan's spec. Fewer (logged) when processes cannot be started."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT, env.get("PYTHONPATH", "")) if p)
    helpers: list[Helper] = []
    for _ in range(min(count, MAX_HELPERS)):
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent.scan.assist", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                cwd="/",
                close_fds=True,
            )
        except OSError as exc:
            log.warning("scan.helper_unavailable", error=str(exc))
            break
        assert proc.stdin is not None and proc.stdout is not None
        helpers.append(Helper(proc, proc.stdin.fileno(), proc.stdout.fileno()))
    return helpers


def end_helpers(helpers: list[Helper], *, kill: bool) -> None:
    """Wait for these helpers to exit (killed first with ``kill``, or when
    they take longer than :data:`STOP_WAIT_S`) and close their pipes."""
    for h in helpers:
        h.alive = False
        if kill:
            h.proc.kill()
        try:
            h.proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            h.proc.wait()
        for stream in (h.proc.stdin, h.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
