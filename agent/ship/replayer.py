"""The replayer: pending journal entries of one target -> plan -> shipper ->
done marks, backoff or dead letters.

One replayer per target, one thread each (docs/design.md §7). It never reads
inotify; it meets the watcher only in the journal. Every pending entry stays
pending until the shipper proved its paths OK, so a crash (of the agent or of
the shipper) at any moment loses nothing: the entries are shipped again,
which is harmless because a shipper sends current state.

Threading: ``run`` and ``step`` belong to one thread; the counters may be
read from any thread (plain ints, for status and metrics).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from agent.ship.actions import ActionKind, Plan
from agent.ship.base import Outcome, Shipper, ShipResult
from agent.ship.capture import Capture, is_dir
from agent.ship.links import LinkSpreader
from agent.ship.listing_drift import moved_listings
from agent.ship.manifest_updates import Key, absorbable, again_entries, cleared_trees, track_updates
from agent.ship.planner import CompletionMap, Selection, build_plan, resolve
from agent.ship.retry import Backoff, RetryPolicy
from agent.ship.settle import changing_paths, split
from agent.tree.excludes import Excludes
from agent.tree.recheck import ScanRecheck
from agent.tree.walk import root_dev
from journal import IS_DIR, SUBTREE, Entry, FileState, Journal, JournalCorrupt, Op

__all__ = ["Replayer", "StepReport"]

WAIT_S = 0.5  # longest idle wait: entries appended by other processes are seen this late
IDLE_MIN_S = 0.01
PAUSE_FACTOR = 4.0  # a step that marked nothing done is followed by a pause of this many times its cost
QUIET_S = 0.02  # a change ships once its path was quiet this long (settle_s caps the wait)
SCAN_PAGES = 50  # pages of pending entries read per track and step (held ones included)
_RANK = {Outcome.OK: 0, Outcome.RETRY: 1, Outcome.FAILED: 2}
log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class StepReport:
    """What one unit of work did. ``wait_s`` (only when nothing was planned):
    how long until a held or still changing entry may become ready; None when only
    a new entry can bring work."""

    entries: int = 0  # pending entries planned
    actions: int = 0  # actions handed to the shipper
    ok: int = 0  # (track, path) results
    retry: int = 0
    failed: int = 0
    dead: int = 0  # entries dead-lettered
    done: int = 0  # entries marked done
    held: int = 0  # entries held back by backoff
    wait_s: float | None = None
    raised: bool = False  # the shipper raised: everything counts as RETRY

    @property
    def idle(self) -> bool:
        return self.entries == 0


@dataclass(slots=True)
class _Results:
    outcome: dict[Key, tuple[Outcome, str]] = field(default_factory=dict)
    raised: bool = False


class Replayer:
    """Ships the pending entries of every track of ``shipper``."""

    def __init__(
        self,
        journal: Journal,
        shipper: Shipper,
        root: Path | str,
        *,
        settle_s: float = 0.2,
        quiet_s: float = QUIET_S,
        max_attempts: int = 5,
        retry_cap_s: float = 60.0,
        retry_base_s: float = 0.5,
        batch_limit: int = 5000,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
        excludes: Excludes | None = None,
    ) -> None:
        self.journal = journal
        self.excludes = excludes or Excludes(
            ()
        )  # what the shipper never sends: the manifest never records it
        self.shipper = shipper
        self.root = os.fsencode(os.fspath(root))
        self.settle_ns = int(settle_s * 1e9)  # the longest a path still changing is held back
        self.quiet_ns = min(int(quiet_s * 1e9), self.settle_ns)
        self.batch_limit = batch_limit
        self.backoff = Backoff(
            RetryPolicy(max_attempts=max_attempts, base_s=retry_base_s, cap_s=retry_cap_s),
            rng or random.Random(),
        )
        self._clock = clock
        self._wall_ns = wall_ns
        self._log = log.bind(target=shipper.name)
        self.shipped_ok = 0  # (track, path) results OK
        self.retries = 0  # (track, path) results RETRY
        self.failures = 0  # (track, path) results FAILED
        self.dead = 0  # entries moved to the dead-letter list
        self._links = LinkSpreader(journal, whole=getattr(shipper, "links_sent_together", False))
        kinds = getattr(shipper, "restamps_parents", frozenset())
        self._capture = Capture(journal, self.root, self.excludes, kinds)

    # ------------------------------------------------------------------ loop
    def run(self, stop: threading.Event) -> None:
        """Ship until ``stop`` is set. Set ``stop`` and call ``journal.wake()``
        for a prompt exit; an in-flight ship finishes, and whatever it did not
        prove stays pending.

        A step that marks nothing done (target down, paths backing off, entries
        still settling) is followed by a wait for new entries or the next due
        time, and by a pause proportional to its own cost, so a large held
        backlog cannot keep a core busy re-reading the queue."""
        self._log.info("replay.start", tracks=list(self.shipper.tracks))
        while not stop.is_set():
            seen = self.journal.last_seq()
            started = time.monotonic()
            try:
                report = self.step(stop)
            except JournalCorrupt:
                raise  # retrying cannot help, and must not write over the damage: the agent stops
            except Exception:
                self._log.exception("replay.error")
                stop.wait(1.0)
                continue
            if report.done or report.dead or stop.is_set():
                continue
            pause = min(WAIT_S, (time.monotonic() - started) * PAUSE_FACTOR)
            if pause >= IDLE_MIN_S and stop.wait(pause):
                break
            wait = report.wait_s if report.idle else self._due_in()
            timeout = WAIT_S if wait is None else min(WAIT_S, max(wait - pause, IDLE_MIN_S))
            self.journal.wait_for_change(seen, timeout)
        self._log.info("replay.stop")

    def _due_in(self) -> float | None:
        now = self._clock()
        due = self.backoff.next_due(now)
        return None if due is None else due - now

    def step(self, stop: threading.Event | None = None) -> StepReport:
        """One unit of work: select, plan, capture, ship, mark done."""
        now = self._clock()
        self.backoff.prune(now)
        selections = {t: self._select(t, now) for t in self.shipper.tracks}
        held = sum(s.held for s in selections.values())
        per_track = {t: s.taken for t, s in selections.items() if s.taken}
        if not per_track:
            return StepReport(held=held, wait_s=self._idle_wait(selections, now))
        plan, completions = build_plan(per_track)
        entries = sum(len(v) for v in per_track.values())
        if stop is not None and stop.is_set():
            return StepReport(held=held)
        with self.journal.shipping():  # a scan never sees a ship half done
            states = self._capture.capture(plan)
            started = time.monotonic()
            results = self._ship(plan, completions)
            records = [r for rs in per_track.values() for r in rs]
            states_before = states
            resync = self._moved_listings(plan, states, results)
            states, again = absorbable(states, records, self._wall_ns(), self.journal.manifest_get)
            if again or resync:  # the tree moved past the journal: every track ships these paths again
                # under the append locks, a path found gone that exists again is a CHANGE:
                # this DELETE must not land after the watcher's entry for the re-creation
                recheck = ScanRecheck(self.root, root_dev(self.root))
                entries_again = again_entries(again, states_before, self._wall_ns()) + resync
                self.journal.append(entries_again, recheck=recheck)
            report = self._mark_done(plan, completions, states, results, time.monotonic() - started)
        return _with(report, entries=entries, actions=len(plan), held=held, raised=results.raised)

    # ------------------------------------------------------------------ select
    def _select(self, track: str, now: float) -> Selection:
        """Page through pending so backed-off paths never block the others
        (up to ``SCAN_PAGES`` pages: entries behind a deeper held backlog wait
        until it shrinks). Of what it takes, paths still changing wait
        (:mod:`agent.ship.settle`)."""
        wall = self._wall_ns()
        sel = Selection(self.backoff.holds(track, now), limit=self.batch_limit, ready_ns=wall - self.quiet_ns)
        after = 0
        for _ in range(SCAN_PAGES):
            page = self.journal.pending(track, limit=self.batch_limit, after=after)
            if not page or sel.feed(page) or len(page) < self.batch_limit:
                break
            after = page[-1].seq
        ready = split(sel.taken, changing_paths(sel.young), wall, self.settle_ns)
        sel.taken, sel.due_ns = ready.ship, ready.due_ns
        return sel

    def _idle_wait(self, selections: Mapping[str, Selection], now: float) -> float | None:
        waits = []
        wall = self._wall_ns()
        for sel in selections.values():
            if sel.young_ns is not None:
                waits.append((sel.young_ns + self.quiet_ns - wall) / 1e9)
            if sel.due_ns is not None:
                waits.append((sel.due_ns - wall) / 1e9)
        due = self.backoff.next_due(now)
        if due is not None:
            waits.append(due - now)
        return max(min(waits), 0.0) if waits else None

    def _moved_listings(
        self, plan: Plan, states: Mapping[bytes, Mapping[bytes, FileState | None]], results: _Results
    ) -> list[Entry]:
        """SUBTREE changes for directories below a recursive PUT shipped OK
        whose listing moved after the capture (see agent/ship/listing_drift.py)."""
        tops = [
            a.path
            for a in plan.actions
            if a.kind == ActionKind.PUT
            and a.recursive
            and is_dir(states.get(a.path, {}).get(a.path))
            and any(results.outcome.get((t, a.path), (None,))[0] == Outcome.OK for t in a.tracks)
        ]
        if not tops:
            return []
        captured = {rel: s for top in tops for rel, s in states[top].items()}
        try:
            moved = moved_listings(self.root, root_dev(self.root), tops, captured, self.excludes)
        except OSError as exc:  # the root is gone: the next capture decides
            log.warning("capture.failed", path=b"", error=str(exc))
            return []
        if moved:
            self._log.info("ship.listing_moved", paths=len(moved), first=moved[0])
        now = self._wall_ns()
        return [Entry(Op.CHANGE, p, time_ns=now, flags=IS_DIR | SUBTREE) for p in moved]

    # ------------------------------------------------------------------ ship
    def _ship(self, plan: Plan, completions: CompletionMap) -> _Results:
        """Outcome per (track, path). Keys without an action are done as
        they are; a missing result or a raising shipper means RETRY."""
        res = _Results()
        need = {(t, a.path) for a in plan.actions for t in a.tracks}
        for key in completions:
            res.outcome[key] = (Outcome.OK, "") if key not in need else (Outcome.RETRY, "no result")
        if not plan:
            return res
        try:
            results: Sequence[ShipResult] = list(self.shipper.ship(plan))
        except Exception as exc:
            self._log.exception("ship.error", actions=len(plan))
            for key in need:
                res.outcome[key] = (Outcome.RETRY, f"shipper raised {type(exc).__name__}: {exc}")
            res.raised = True
            return res
        got: dict[Key, tuple[Outcome, str]] = {}
        for r in results:
            key = (r.track, r.path)
            if key in need and (key not in got or _RANK[r.outcome] > _RANK[got[key][0]]):
                got[key] = (r.outcome, r.reason)
        missing = need - got.keys()
        if missing:
            self._log.warning("ship.missing_result", paths=len(missing), first=min(missing)[1])
        res.outcome.update(got)
        return res

    # ------------------------------------------------------------------ mark done
    def _mark_done(
        self,
        plan: Plan,
        completions: CompletionMap,
        states: Mapping[bytes, Mapping[bytes, FileState | None]],
        results: _Results,
        seconds: float,
    ) -> StepReport:
        deletes = {(t, a.path) for a in plan.actions if a.kind == ActionKind.DELETE for t in a.tracks}
        puts = {(t, a.path) for a in plan.actions if a.kind == ActionKind.PUT for t in a.tracks}
        # before the marks: a crash between re-ships loses nothing
        self._spread_links(puts, deletes, states, results)
        dead_keys = self._record_outcomes(results.outcome, deletes | puts, deletes)
        not_ok = {k for k, (o, _) in results.outcome.items() if o != Outcome.OK}
        done_total = dead_total = 0
        for track in dict.fromkeys(t for t, _ in completions):
            dead_reasons = {k: results.outcome[k][1] or "failed" for k in dead_keys}
            done, dead = resolve(completions, track, not_ok, dead_reasons)
            if dead:
                self.dead += self.journal.mark_dead(track, dead)
                dead_total += len(dead)
            ok = [p for t, p in puts | deletes if t == track and results.outcome[(t, p)][0] == Outcome.OK]
            track_states, origin = track_updates(track, ok, completions, puts, states)
            # a delete removes the whole tree on the mirror: so must the manifest
            # (what was recorded before the delete's entry: see journal/_manifest.py)
            ok_deletes = [k for k in deletes if k[0] == track and results.outcome[k][0] == Outcome.OK]
            cleared = cleared_trees(track, ok_deletes, completions)
            if done or track_states or cleared:
                done_total += self.journal.mark_done(track, done, track_states, cleared, origin)
            self._log_track(track, results.outcome, puts | deletes, len(done), seconds)
        counts = {o: sum(1 for k in puts | deletes if results.outcome[k][0] == o) for o in Outcome}
        return StepReport(
            ok=counts[Outcome.OK],
            retry=counts[Outcome.RETRY],
            failed=counts[Outcome.FAILED],
            dead=dead_total,
            done=done_total,
        )

    def _spread_links(
        self,
        puts: set[Key],
        deletes: set[Key],
        states: Mapping[bytes, Mapping[bytes, FileState | None]],
        results: _Results,
    ) -> None:
        """Journal the other names of multiply-linked files shipped OK: a
        write through one name changed them all, also through a name that
        was gone when shipped."""
        shipped: dict[bytes, FileState | None] = {}
        for path in {p for t, p in puts if results.outcome[(t, p)][0] == Outcome.OK}:
            shipped.update(states.get(path, {}))
        removed = {p for t, p in puts | deletes if results.outcome[(t, p)][0] == Outcome.OK}
        removed = {p for p in removed if states.get(p, {}).get(p) is None}
        in_plan = {p for _, p in results.outcome}
        tracks = self.shipper.tracks

        def busy(path: bytes) -> bool:
            return path in in_plan or any(self.backoff.get(t, path) is not None for t in tracks)

        spread = self._links.spread_from(shipped, busy)
        if removed:
            spread += self._links.spread_from_removed(sorted(removed), busy)
        if spread:
            self._log.info("ship.links_spread", names=spread)

    def _record_outcomes(
        self, outcome: Mapping[Key, tuple[Outcome, str]], shipped: set[Key], deletes: set[Key]
    ) -> set[Key]:
        """Feed every shipped key's result to the backoff table; return the
        keys that just went dead."""
        now = self._clock()
        dead: set[Key] = set()
        for key in sorted(shipped):
            result, reason = outcome[key]
            verdict = self.backoff.record(*key, result, now=now, below=key in deletes, reason=reason)
            if result == Outcome.OK:
                self.shipped_ok += 1
            elif result == Outcome.RETRY:
                self.retries += 1
            else:
                self.failures += 1
                attempt = self.backoff.get(*key)
                self._log.warning(
                    "ship.failed",
                    track=key[0],
                    path=key[1],
                    reason=reason,
                    failures=attempt.failures if attempt else self.backoff.policy.max_attempts,
                    retry_in_s=round(verdict.delay, 3),
                )
            if verdict.dead:
                dead.add(key)
                self._log.error("ship.dead", track=key[0], path=key[1], reason=reason)
        return dead

    def _log_track(
        self,
        track: str,
        outcome: Mapping[Key, tuple[Outcome, str]],
        shipped: set[Key],
        done: int,
        seconds: float,
    ) -> None:
        mine = sorted(k for k in shipped if k[0] == track)
        ok = [k for k in mine if outcome[k][0] == Outcome.OK]
        retry = [k for k in mine if outcome[k][0] == Outcome.RETRY]
        if ok or done:
            self._log.info("ship.ok", track=track, paths=len(ok), entries=done, seconds=round(seconds, 4))
        if retry:
            attempt = self.backoff.get(*retry[0])
            self._log.warning(
                "ship.retry",
                track=track,
                paths=len(retry),
                first=retry[0][1],
                reason=outcome[retry[0]][1],
                retry_in_s=round(attempt.due - self._clock(), 3) if attempt else None,
            )


# ---------------------------------------------------------------------- helpers
def _with(report: StepReport, **changes: object) -> StepReport:
    return replace(report, **changes)  # type: ignore[arg-type]
