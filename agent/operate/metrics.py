"""Optional Prometheus endpoint (``metrics_port``), bound to 127.0.0.1 unless
``metrics_address`` says otherwise.

Each :class:`Metrics` owns its registry, so several agents (or tests) in one
process do not collide. The daemon feeds it: counters through ``add_*``,
journal-derived gauges through :meth:`Metrics.update_from_stats`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from agent.operate.verify_trace import VerifyTrace
from journal import JournalStats

__all__ = ["Metrics"]


class Metrics:
    """The agent's metrics. Thread-safe (prometheus_client locks internally)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_journaled = Counter(
            "msync_agent_events_journaled", "Journal entries durably appended", registry=r
        )
        self.pending = Gauge("msync_agent_pending", "Entries pending per track", ["track"], registry=r)
        self.oldest_pending = Gauge(
            "msync_agent_oldest_pending_seconds",
            "Age of the oldest pending entry per track",
            ["track"],
            registry=r,
        )
        self.ship_outcomes = Counter(
            "msync_agent_ship_outcomes",
            "Shipped paths by outcome (ok, retry, failed)",
            ["track", "outcome"],
            registry=r,
        )
        self.scan_duration = Histogram(
            "msync_agent_scan_duration_seconds",
            "Duration of tree scans",
            registry=r,
            buckets=(0.1, 1, 10, 60, 600, 3600),
        )
        self.overflows = Counter("msync_agent_overflows", "inotify queue overflows", registry=r)
        self.dead_letters = Gauge(
            "msync_agent_dead_letters", "Dead-lettered entries per track", ["track"], registry=r
        )
        self.start_time = Gauge(
            "msync_agent_start_time_seconds", "When this agent started (unix time)", registry=r
        )
        self.start_time.set(time.time())
        self.scans = Counter("msync_agent_scans", "Tree scans by reason", ["reason"], registry=r)
        self.checkpoint_age = Gauge(
            "msync_agent_checkpoint_age_seconds",
            "Age of the checkpoint: every change before it is journaled",
            registry=r,
        )
        self.journal_bytes = Gauge("msync_agent_journal_bytes", "Size of the journal's data file", registry=r)
        self.journal_free = Gauge(
            "msync_agent_journal_disk_free_bytes",
            "Free space on the journal's filesystem (for the agent's user)",
            registry=r,
        )
        self.journal_full = Gauge(
            "msync_agent_journal_full",
            "1 while some kind of journal write (append, done mark...) was last refused for want of space",
            registry=r,
        )
        self.member_absent = Gauge(
            "msync_agent_member_absent_seconds",
            "How long an expected msync member has been missing from msync --members (0: listed)",
            ["track"],
            registry=r,
        )
        self.verify_time = Gauge(
            "msync_agent_verify_last_timestamp_seconds", "When agent verify last finished", registry=r
        )
        self.verify_clean = Gauge(
            "msync_agent_verify_clean", "1 when the last agent verify found no drift and no error", registry=r
        )
        self.verify_drift = Gauge(
            "msync_agent_verify_drift_paths", "Drifted paths the last verify found", ["target"], registry=r
        )
        self.verify_error = Gauge(
            "msync_agent_verify_error",
            "1 when the last verify could not check the target",
            ["target"],
            registry=r,
        )
        self._server = None
        self._thread = None
        self._totals: dict[tuple[str, ...], int] = {}

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Start the HTTP endpoint in a daemon thread; returns the bound port
        (useful with ``port=0``)."""
        self._server, self._thread = start_http_server(port, addr=address, registry=self.registry)
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------ counters
    def add_journaled(self, n: int) -> None:
        self.events_journaled.inc(n)

    def add_ship_outcomes(self, track: str, counts: Mapping[str, int]) -> None:
        """``counts`` maps an outcome (``ok``, ``retry``, ``failed``) to a number of paths."""
        for outcome, n in counts.items():
            if n:
                self.ship_outcomes.labels(track=track, outcome=outcome).inc(n)

    def add_overflow(self, n: int = 1) -> None:
        if n:
            self.overflows.inc(n)

    def observe_scan(self, seconds: float, reason: str = "startup") -> None:
        self.scan_duration.observe(seconds)
        self.scans.labels(reason=reason).inc()

    def update_from_totals(
        self,
        *,
        entries_journaled: int,
        overflows: int,
        outcomes: Mapping[str, Mapping[str, int]],
    ) -> None:
        """Feed running totals (as the daemon keeps them); counters move by
        the difference since the previous call. ``outcomes`` maps a track or
        target to ``{"ok": n, "retry": n, "failed": n}`` totals."""
        self.add_journaled(self._delta(("journaled",), entries_journaled))
        self.add_overflow(self._delta(("overflows",), overflows))
        for track, counts in outcomes.items():
            self.add_ship_outcomes(track, {o: self._delta(("ship", track, o), n) for o, n in counts.items()})

    def _delta(self, key: tuple[str, ...], total: int) -> int:
        previous = self._totals.get(key, 0)
        self._totals[key] = total
        return max(0, total - previous)

    # ------------------------------------------------------------------ gauges
    def update_from_stats(self, stats: JournalStats, now_ns: int | None = None) -> None:
        """Set the per-track gauges from :meth:`journal.Journal.stats`."""
        now = time.time_ns() if now_ns is None else now_ns
        for track, ts in stats.tracks.items():
            self.pending.labels(track=track).set(ts.pending)
            age = 0.0 if ts.oldest_pending_ns is None else max(0.0, (now - ts.oldest_pending_ns) / 1e9)
            self.oldest_pending.labels(track=track).set(age)
            self.dead_letters.labels(track=track).set(ts.dead_letters)
        checkpoint = stats.checkpoint
        if checkpoint is not None:
            self.checkpoint_age.set(max(0.0, (now - checkpoint.time_ns) / 1e9))
        self.journal_bytes.set(stats.bytes)

    def update_journal_disk(self, journal_dir: str, full: bool) -> None:
        """Free space where the journal lives, and whether appends wait for it."""
        try:
            st = os.statvfs(journal_dir)
        except OSError:
            return
        self.journal_free.set(st.f_bavail * st.f_frsize)
        self.journal_full.set(1 if full else 0)

    def update_members(self, absent_s: Mapping[str, float]) -> None:
        """``absent_s`` maps an msync member's track to seconds absent (0: listed)."""
        for track, seconds in absent_s.items():
            self.member_absent.labels(track=track).set(seconds)

    def update_verify(self, trace: VerifyTrace | None) -> None:
        """The last ``agent verify`` result, as recorded in the journal directory."""
        if trace is None:
            return
        self.verify_time.set(trace.time_ns / 1e9)
        self.verify_clean.set(1 if trace.result == "clean" else 0)
        for name, t in trace.targets.items():
            self.verify_drift.labels(target=name).set(t.drift)
            self.verify_error.labels(target=name).set(1 if t.error else 0)
