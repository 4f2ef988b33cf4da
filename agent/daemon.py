"""``agent run``: wire watcher, scanner and replayers around one journal.

Threads: the watcher (ingest), one replayer per target, one scan worker; the
main thread handles signals, publishes runtime counters and compacts. Signal
handlers only set a flag. Shutdown: stop reading, let the watcher commit its
last batch and checkpoint, give in-flight ships a moment, then end the
process groups of external programs still running (a msync blocked on a dead
makuosan member would hold the stop for a minute); what is not marked done
stays pending; exit 0.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from agent.errors import AgentError
from agent.operate.config import Config, tracks_of
from agent.operate.metrics import Metrics
from agent.operate.replay import walk
from agent.operate.runtime import Rates, Runtime, TargetCounters, failing_paths, write_runtime
from agent.operate.verify_trace import read_trace
from agent.scan.scanner import Scanner, ScanReport
from agent.ship import process as _exec
from agent.ship.backends import build_replayers
from agent.tree.excludes import Excludes
from agent.tree.fsstate import kind_of
from agent.watch.watcher import Watcher
from journal import IS_DIR, SEED_FLAG, Entry, FileKind, Journal, JournalCorrupt, JournalFull, Op

__all__ = ["run_agent", "Agent"]

log = structlog.get_logger("agent.daemon")

STOP_GRACE_S = 20.0
ABORT_AFTER_S = 0.5  # in-flight ships may finish this long before their programs are ended
COMPACT_EVERY_S = 3600.0
COMPACT_RETRY_S = 60.0  # after a compaction refused for want of disk space
RESCAN_MIN_INTERVAL_S = 5.0


@dataclass
class _Worker:
    name: str
    thread: threading.Thread | None = None
    error: BaseException | None = None


@dataclass
class Agent:
    """A running agent; :func:`run_agent` is the blocking entry point."""

    config: Config
    stop: threading.Event = field(default_factory=threading.Event)
    rescan: threading.Event = field(default_factory=threading.Event)
    workers: list[_Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        cfg = self.config
        self.root = Path(cfg.root)
        tracks = [t for target in cfg.targets for t in tracks_of(target)]
        self.journal = Journal.open(cfg.journal, root=str(self.root), tracks=tracks, mode="agent")
        if self.journal.intake_torn:  # a crash mid-append: that batch was never acknowledged
            log.info("journal.intake_torn_tail", dropped=self.journal.intake_torn)
        self.excludes = Excludes(list(cfg.exclude))
        self.watcher = Watcher(self.root, self.journal, self.excludes, on_rescan=self.rescan.set)
        self.scanner = Scanner(self.root, self.journal, self.excludes, helpers=cfg.scan_helpers)
        self.replayers = build_replayers(
            self.journal, cfg, cfg.targets, settle_s=cfg.settle_ms / 1000.0, quiet_s=cfg.quiet_ms / 1000.0
        )
        self.started_ns = time.time_ns()
        self._runtime_failed = False  # the last runtime.json write failed (logged once)
        self.damage: JournalCorrupt | None = None  # the journal was found damaged: exit 2 with its hint
        self.metrics: Metrics | None = None
        if cfg.metrics_port is not None:
            self.metrics = Metrics()
            port = self.metrics.serve(cfg.metrics_port, cfg.metrics_address)
            log.info("metrics.serving", address=cfg.metrics_address, port=port)

    # ---------------------------------------------------------------- startup
    def start(self) -> None:
        """Watch first, then scan from the checkpoint, then ship (docs/design.md §5-§6)."""
        _exec.resume()
        fresh = self.journal.last_seq() == 0 and self.journal.manifest_count() == 0
        if not fresh and self.journal.new_tracks:  # mark them first: a crash mid-seed is seen again
            rescan = Entry(Op.RESCAN, b"", time_ns=time.time_ns(), flags=SEED_FLAG)
            self.journal.append([rescan], tracks=self.journal.new_tracks)
        unseeded = () if fresh else self._unseeded_tracks()
        self.watcher.hold_checkpoint()  # the scan below must finish before the checkpoint moves
        self.scanner.prepare()  # its helpers start while the watches are set up
        self.watcher.start()
        self._spawn("watcher", self.watcher.run)
        checkpoint = self.journal.checkpoint()
        since = checkpoint.time_ns if checkpoint and not fresh else None
        report = self.scanner.scan(since_ns=since)
        log.info("scan.recovery", reason="startup", since_ns=since, **report.summary())
        self._observe_scan(report, "startup")
        if unseeded:
            self._seed_new_tracks(unseeded)
        self.watcher.release_checkpoint()
        for replayer in self.replayers:
            self._spawn(f"replayer:{replayer.shipper.name}", replayer.run)
        self._spawn("scanner", self._scan_loop)

    def _unseeded_tracks(self) -> tuple[str, ...]:
        """Tracks whose first pending entry is the seed marker: added to an
        existing journal, and the whole tree not yet queued for them."""
        out = []
        for track in self.journal.tracks():
            first = self.journal.pending(track, limit=1)
            if first and first[0].entry.op == Op.RESCAN and first[0].entry.flags & SEED_FLAG:
                out.append(track)
        return tuple(out)

    def _seed_new_tracks(self, tracks: tuple[str, ...]) -> None:
        """A target added to an existing journal has never received anything:
        queue every path of the tree for it alone. The marker entry stays
        first in the track's queue until the replayer marks it done, after
        these entries are journaled; a restart before that seeds again."""
        batch: list[Entry] = []
        count = 0
        for rel, st in walk(os.fsencode(self.root), self.excludes):
            kind = kind_of(st.st_mode)
            if kind == FileKind.OTHER:
                continue  # fifos, sockets, devices are not shipped (the scanner skips them too)
            batch.append(
                Entry(Op.CHANGE, rel, time_ns=time.time_ns(), flags=IS_DIR if kind == FileKind.DIR else 0)
            )
            if len(batch) >= 5000:
                self.journal.append(batch, tracks=tracks)
                count += len(batch)
                batch = []
        if batch:
            self.journal.append(batch, tracks=tracks)
            count += len(batch)
        log.info("tracks.seeded", tracks=list(tracks), paths=count)

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        worker = _Worker(name)

        def body() -> None:
            try:
                target(self.stop)
            except BaseException as exc:  # reported by the supervising loop
                worker.error = exc
                log.exception("worker.crashed", worker=name)
                if isinstance(exc, JournalCorrupt):
                    self.damaged(exc)
                self.stop.set()

        worker.thread = threading.Thread(target=body, name=name, daemon=True)
        self.workers.append(worker)
        worker.thread.start()

    def damaged(self, exc: JournalCorrupt) -> None:
        """The journal cannot be trusted: say so loudly and leave the mark that
        makes every later open (this agent's restart, status, verify) refuse it."""
        self.damage = self.damage or exc
        self.journal.noted(exc)
        log.error("journal.damaged", error=str(exc.args[0] if exc.args else exc), hint=exc.hint)

    # ---------------------------------------------------------------- loops
    def _scan_loop(self, stop: threading.Event) -> None:
        """Full rescans after overflow (coalesced: one scan covers every
        overflow seen before it started) and the optional periodic scan."""
        interval = self.config.rescan_interval_s
        last_periodic = time.monotonic()
        holds = 0  # overflow holds claimed by a scan that has not completed yet
        while not stop.is_set():
            woke = self.rescan.wait(timeout=1.0)
            if stop.is_set():
                return
            periodic = interval is not None and time.monotonic() - last_periodic >= interval
            if not woke and not periodic:
                continue
            self.rescan.clear()
            holds += self.watcher.pending_overflow_holds() if woke else 0
            try:
                report = self.scanner.scan(since_ns=None)
            except JournalFull as exc:  # waited out like the watcher does; the holds stay
                log.error("scan.journal_full", error=str(exc), retry_in_s=RESCAN_MIN_INTERVAL_S)
                if woke:
                    self.rescan.set()
                stop.wait(RESCAN_MIN_INTERVAL_S)
                continue
            reason = "overflow" if woke else "periodic"
            log.info("scan.recovery", reason=reason, **report.summary())
            self._observe_scan(report, reason)
            for _ in range(holds):
                self.watcher.release_checkpoint()
            holds = 0
            last_periodic = time.monotonic()
            stop.wait(RESCAN_MIN_INTERVAL_S if woke else 0)

    def _observe_scan(self, report: ScanReport, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.observe_scan(report.seconds, reason)

    def supervise(self) -> int:
        """Main-thread loop until a signal or a worker failure; returns the exit code."""
        last_compact = time.monotonic()
        previous = (time.monotonic(), 0, 0)
        while not self.stop.wait(1.0):
            previous = self._publish(previous)
            if time.monotonic() - last_compact >= COMPACT_EVERY_S:
                last_compact = time.monotonic()
                try:
                    removed = self.journal.compact(int(self.config.retention_s * 1e9))
                except JournalFull as exc:  # a full disk is waited out, not fatal
                    log.warning("journal.compact_failed", error=str(exc), retry_in_s=COMPACT_RETRY_S)
                    # sooner than the next hour: the gauge shows the refusal until a compaction succeeds
                    last_compact -= COMPACT_EVERY_S - COMPACT_RETRY_S
                else:
                    log.info("journal.compact", removed=removed)
        return self.shutdown()

    def _publish(self, previous: tuple[float, int, int]) -> tuple[float, int, int]:
        now = time.monotonic()
        events_in = self.watcher.entries_journaled
        out = sum(r.shipped_ok for r in self.replayers)
        dt = max(now - previous[0], 1e-9)
        runtime = Runtime(
            pid=os.getpid(),
            started_ns=self.started_ns,
            updated_ns=time.time_ns(),
            events_in=self.watcher.events_read,
            entries_journaled=events_in,
            overflows=self.watcher.overflows,
            targets={
                r.shipper.name: TargetCounters(r.shipped_ok, r.retries, r.failures) for r in self.replayers
            },
            rates=Rates((events_in - previous[1]) / dt, (out - previous[2]) / dt),
            failing=failing_paths(
                {k: (a.reason, a.tries) for r in self.replayers for k, a in r.backoff.snapshot().items()}
            ),
        )
        try:
            write_runtime(Path(self.config.journal), runtime)
        except OSError as exc:  # status is best effort: a full disk must not stop the agent
            if not self._runtime_failed:
                log.warning("runtime.write_failed", error=str(exc))
            self._runtime_failed = True
        else:
            self._runtime_failed = False
        if self.metrics is not None:
            self.metrics.update_from_totals(
                entries_journaled=events_in,
                overflows=self.watcher.overflows,
                outcomes={
                    r.shipper.name: {"ok": r.shipped_ok, "retry": r.retries, "failed": r.failures}
                    for r in self.replayers
                },
            )
            self.metrics.update_from_stats(self.journal.stats())
            self.metrics.update_journal_disk(str(self.config.journal), self.journal.space_refused)
            for replayer in self.replayers:
                absent = getattr(replayer.shipper, "absent_seconds", None)
                if absent is not None:
                    self.metrics.update_members(absent())
            self.metrics.update_verify(read_trace(Path(self.config.journal)))
        return (now, events_in, out)

    def _end_programs(self) -> None:
        """Let workers finish briefly, then end every external program still
        running: its results are not OK, so its entries stay pending."""
        deadline = time.monotonic() + ABORT_AFTER_S
        for worker in self.workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        if any(w.thread.is_alive() for w in self.workers):
            ended = _exec.abort_all()
            if ended:
                log.info("agent.stop_programs", ended=ended, note="their entries stay pending")

    def shutdown(self) -> int:
        self.stop.set()
        self.journal.wake()
        self._end_programs()
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in self.workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [w.name for w in self.workers if w.thread.is_alive()]
        failed = [w for w in self.workers if w.error is not None]
        for worker in failed:
            log.error("agent.failed", worker=worker.name, error=str(worker.error))
        if stuck:
            log.warning("agent.stop_timeout", workers=stuck, note="unfinished ships stay pending")
            return 2 if failed else 0  # threads still use the journal: leave it to process exit
        for replayer in self.replayers:
            replayer.shipper.close()
        self.scanner.close()  # helpers started for a scan that never ran
        if self.metrics is not None:
            self.metrics.close()
        self.journal.close()
        log.info("agent.stopped")
        return 2 if failed else 0


def run_agent(config: Config) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 2 when a part failed."""
    agent = Agent(config)
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        agent.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    log.info(
        "agent.start",
        root=str(config.root),
        journal=str(config.journal),
        targets=[t.name for t in config.targets],
        pid=os.getpid(),
    )
    try:
        agent.start()
    except (AgentError, JournalCorrupt) as exc:
        if isinstance(exc, JournalCorrupt):
            agent.damaged(exc)
        agent.stop.set()
        agent.shutdown()
        raise
    code = agent.supervise()
    log.info("agent.exit", code=code, signal=received[0] if received else None)
    if agent.damage is not None:
        raise agent.damage  # the command line reports it with its hint
    return code
