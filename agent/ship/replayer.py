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

from agent.ship.absorb import unexplained
from agent.ship.base import Outcome, Shipper, ShipResult
from agent.ship.links import LinkSpreader
from agent.ship.listing_drift import moved_listings
from agent.ship.plan import ActionKind, Plan
from agent.ship.planner import Selection, SettleMap, build_plan, resolve
from agent.ship.retry import Backoff, RetryPolicy
from agent.ship.settle import changing_paths, split
from agent.tree.excludes import Excludes
from agent.tree.fsstate import capture_at, capture_in, kind_of, lstat_below
from agent.tree.recheck import ScanRecheck
from agent.tree.walk import Walk, root_dev
from journal import IS_DIR, SUBTREE, Entry, FileKind, FileState, Journal, JournalCorrupt, Op, Record

__all__ = ["Replayer", "StepReport"]

WAIT_S = 0.5  # longest idle wait: entries appended by other processes are seen this late
IDLE_MIN_S = 0.01
PAUSE_FACTOR = 4.0  # a step that settled nothing is followed by a pause of this many times its cost
QUIET_S = 0.02  # a change ships once its path was quiet this long (settle_s caps the wait)
SCAN_PAGES = 50  # pages of pending entries read per track and step (held ones included)
_RANK = {Outcome.OK: 0, Outcome.RETRY: 1, Outcome.FAILED: 2}
Key = tuple[str, bytes]
log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class StepReport:
    """What one unit of work did. ``wait_s`` (only when nothing was planned):
    how long until a held or unsettled entry may become ready; None when only
    a new entry can bring work."""

    entries: int = 0  # pending entries planned
    actions: int = 0  # actions handed to the shipper
    ok: int = 0  # (track, path) results
    retry: int = 0
    failed: int = 0
    dead: int = 0  # entries dead-lettered
    settled: int = 0  # entries marked done
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

    # ------------------------------------------------------------------ loop
    def run(self, stop: threading.Event) -> None:
        """Ship until ``stop`` is set. Set ``stop`` and call ``journal.wake()``
        for a prompt exit; an in-flight ship finishes, and whatever it did not
        prove stays pending.

        A step that settles nothing (target down, paths backing off, entries
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
            if report.settled or report.dead or stop.is_set():
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
        """One unit of work: select, plan, capture, ship, settle."""
        now = self._clock()
        self.backoff.prune(now)
        selections = {t: self._select(t, now) for t in self.shipper.tracks}
        held = sum(s.held for s in selections.values())
        per_track = {t: s.taken for t, s in selections.items() if s.taken}
        if not per_track:
            return StepReport(held=held, wait_s=self._idle_wait(selections, now))
        plan, settle = build_plan(per_track)
        entries = sum(len(v) for v in per_track.values())
        if stop is not None and stop.is_set():
            return StepReport(held=held)
        with self.journal.shipping():  # a scan never sees a ship half done
            states = self._capture(plan)
            started = time.monotonic()
            results = self._ship(plan, settle)
            records = [r for rs in per_track.values() for r in rs]
            states_before = states
            resync = self._moved_listings(plan, states, results)
            states, again = _absorbable(states, records, self._wall_ns(), self.journal.manifest_get)
            if again or resync:  # the tree moved past the journal: every track ships these paths again
                # under the append locks, a path found gone that exists again is a CHANGE:
                # this DELETE must not land after the watcher's entry for the re-creation
                recheck = ScanRecheck(self.root, root_dev(self.root))
                entries_again = _again(again, states_before, self._wall_ns()) + resync
                self.journal.append(entries_again, recheck=recheck)
            report = self._settle(plan, settle, states, results, time.monotonic() - started)
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
        settled = split(sel.taken, changing_paths(sel.young), wall, self.settle_ns)
        sel.taken, sel.due_ns = settled.ship, settled.due_ns
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

    # ------------------------------------------------------------------ capture
    def _capture(self, plan: Plan) -> dict[bytes, dict[bytes, FileState | None]]:
        """Manifest states of every PUT, taken *before* shipping: a change made
        during the ship is journaled anew, so the manifest never claims a
        state newer than the one sent."""
        out: dict[bytes, dict[bytes, FileState | None]] = {}
        try:
            dev = root_dev(self.root)
        except OSError as exc:  # the root is gone: nothing to capture, the ship decides
            log.warning("capture.failed", path=b"", error=str(exc))
            return out
        cleared = {a.path for a in plan.actions if a.kind == ActionKind.DELETE}
        for action in plan.actions:
            if action.kind != ActionKind.PUT:
                continue
            states = out.setdefault(action.path, {})
            _capture_into(states, self.root, action.path, dev)
            if action.recursive and _is_dir(states.get(action.path)):
                _capture_below(states, self.root, action.path, dev, self.excludes)
                if action.path in cleared:
                    self._vanished_below(action.path, states)
        self._capture_parents(plan, out)
        return out

    def _vanished_below(self, top: bytes, states: dict[bytes, FileState | None]) -> None:
        """A directory moved in goes out as a delete and a recursive put; the
        delete makes the manifest forget everything below ``top``. What it
        knows there that this capture lacks, another track shipped from an
        earlier capture and has vanished since: it counts as found gone, so
        unless the shipped entries explain that (they do not: the move
        removed only its source), every track ships its removal, and a
        mirror that holds it never keeps it because its event was lost."""
        for path in self.journal.manifest_encoded(under=top):
            if path != top and path not in states:
                states[path] = None

    def _capture_parents(self, plan: Plan, out: dict[bytes, dict[bytes, FileState | None]]) -> None:
        """The mtimes of the parent directories the shipper sets after writing
        in them (its ``settles_parents`` action kinds): an entry added or
        removed moves a directory's mtime, and the manifest must hold what the
        mirror's directory got, or a restart would see it differ. Only the
        mtime (and ctime) of the manifest's state is renewed, for the same
        directory (inode): its other fields the shipper did not send. A parent
        with its own action in the plan is left to that action."""
        kinds = getattr(self.shipper, "settles_parents", frozenset())
        own = {a.path for a in plan.actions}
        seen: dict[bytes, FileState | None] = {}
        for action in plan.actions:
            parent = action.path.rpartition(b"/")[0]
            if action.kind not in kinds or not parent or parent in own:
                continue
            if parent not in seen:
                seen[parent] = _settled_parent(self.journal, self.root, parent)
            if seen[parent] is not None:
                out.setdefault(action.path, {})[parent] = seen[parent]

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
            and _is_dir(states.get(a.path, {}).get(a.path))
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
    def _ship(self, plan: Plan, settle: SettleMap) -> _Results:
        """Outcome per (track, path). Keys without an action are settled as
        they are; a missing result or a raising shipper means RETRY."""
        res = _Results()
        need = {(t, a.path) for a in plan.actions for t in a.tracks}
        for key in settle:
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

    # ------------------------------------------------------------------ settle
    def _settle(
        self,
        plan: Plan,
        settle: SettleMap,
        states: Mapping[bytes, Mapping[bytes, FileState | None]],
        results: _Results,
        seconds: float,
    ) -> StepReport:
        deletes = {(t, a.path) for a in plan.actions if a.kind == ActionKind.DELETE for t in a.tracks}
        puts = {(t, a.path) for a in plan.actions if a.kind == ActionKind.PUT for t in a.tracks}
        # before the marks: a crash between re-ships loses nothing
        self._spread_links(puts, deletes, states, results)
        dead_keys = self._judge(results.outcome, deletes | puts, deletes)
        not_ok = {k for k, (o, _) in results.outcome.items() if o != Outcome.OK}
        done_total = dead_total = 0
        for track in dict.fromkeys(t for t, _ in settle):
            dead_reasons = {k: results.outcome[k][1] or "failed" for k in dead_keys}
            done, dead = resolve(settle, track, not_ok, dead_reasons)
            if dead:
                self.dead += self.journal.mark_dead(track, dead)
                dead_total += len(dead)
            ok = [p for t, p in puts | deletes if t == track and results.outcome[(t, p)][0] == Outcome.OK]
            track_states, origin = _states_for(track, ok, settle, puts, states)
            # a delete removes the whole tree on the mirror: so must the manifest
            # (what was recorded before the delete's entry: see journal/_manifest.py)
            cleared = {
                p: _removed_at(settle, track, p)
                for t, p in sorted(deletes)
                if t == track and results.outcome[(t, p)][0] == Outcome.OK
            }
            if done or track_states or cleared:
                done_total += self.journal.mark_done(track, done, track_states, cleared, origin)
            self._log_track(track, results.outcome, puts | deletes, len(done), seconds)
        counts = {o: sum(1 for k in puts | deletes if results.outcome[k][0] == o) for o in Outcome}
        return StepReport(
            ok=counts[Outcome.OK],
            retry=counts[Outcome.RETRY],
            failed=counts[Outcome.FAILED],
            dead=dead_total,
            settled=done_total,
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

    def _judge(
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
def _absorbable(
    states: Mapping[bytes, Mapping[bytes, FileState | None]],
    records: Sequence[Record],
    now_ns: int,
    shipped: Callable[[bytes], FileState | None],
) -> tuple[dict[bytes, dict[bytes, FileState | None]], set[bytes]]:
    """The captured states without those the shipped entries do not explain
    (see :mod:`agent.ship.absorb`), and those paths: the manifest keeps its old
    state for them, and they are journaled again for every track, so a track
    that shipped them before gets the change whose event may be lost. The
    renewed mtimes of parent directories are the shippers' own doing and
    always kept."""
    own = {rel: s for top, got in states.items() for rel, s in got.items() if _at_or_below(rel, top)}
    # only a state some track was given can be held by a mirror that missed the change
    drop = {p for p in unexplained(records, own, now_ns) if shipped(p) is not None}
    kept = {top: {rel: s for rel, s in got.items() if rel not in drop} for top, got in states.items()}
    return kept, drop


def _again(
    paths: set[bytes], states: Mapping[bytes, Mapping[bytes, FileState | None]], now_ns: int
) -> list[Entry]:
    """Entries that explain what was found: a DELETE for a path found gone
    (a CHANGE would find it gone again and explain nothing), a CHANGE for a
    path found changed."""
    found = {rel: s for got in states.values() for rel, s in got.items() if rel in paths}
    return [
        Entry(Op.CHANGE if found.get(p) is not None else Op.DELETE, p, time_ns=now_ns) for p in sorted(paths)
    ]


def _states_for(
    track: str,
    ok_paths: Sequence[bytes],
    settle: SettleMap,
    puts: set[Key],
    states: Mapping[bytes, Mapping[bytes, FileState | None]],
) -> tuple[dict[bytes, FileState | None], dict[bytes, int]]:
    """Manifest updates for one track: None for what OK deletes removed
    (the path and the touched paths below it), then the captured states of
    OK puts, which win for a path that was re-created. With each, the entry
    it comes from: a removal the entry that removed the path, a state the
    newest entry of its path."""
    out: dict[bytes, FileState | None] = {}
    origin: dict[bytes, int] = {}
    for path in ok_paths:
        rule = settle.get((track, path))
        removed, last = _removed_at(settle, track, path), _last_seq(settle, track, path)
        gone = rule.gone if rule else ()
        out.update(dict.fromkeys(gone, None))
        origin.update(dict.fromkeys(gone, removed))
        if (track, path) not in puts:
            out[path], origin[path] = None, removed
            for p, s in states.get(path, {}).items():
                if not _at_or_below(p, path):
                    out[p], origin[p] = s, last
    for path in ok_paths:
        if (track, path) in puts:
            got = states.get(path, {})
            out.update(got)
            origin.update(dict.fromkeys(got, _last_seq(settle, track, path)))
    return out, origin


def _removed_at(settle: SettleMap, track: str, path: bytes) -> int:
    rule = settle.get((track, path))
    return rule.removed_at if rule else 0


def _last_seq(settle: SettleMap, track: str, path: bytes) -> int:
    rule = settle.get((track, path))
    return max(rule.seqs) if rule and rule.seqs else 0


def _at_or_below(path: bytes, top: bytes) -> bool:
    return path == top or path.startswith(top + b"/")


def _settled_parent(journal: Journal, root: bytes, parent: bytes) -> FileState | None:
    """The manifest's state of directory ``parent`` with its mtime now, or
    None when the manifest does not know it as this same directory."""
    old = journal.manifest_get(parent)
    try:
        st = lstat_below(root, parent)
    except OSError:
        return None
    if old is None or st is None or old.kind != FileKind.DIR or kind_of(st.st_mode) != FileKind.DIR:
        return None
    if st.st_ino != old.inode:
        return None
    return replace(old, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)


def _capture_into(states: dict[bytes, FileState | None], root: bytes, rel: bytes, dev: int) -> None:
    """The state of ``rel``, read without leaving the tree (no symlink
    followed, no mount point crossed); a path that is not a clean relative
    one is not captured (the shipper reports it FAILED)."""
    try:
        states[rel] = capture_in(root, rel, dev)
    except ValueError:
        return
    except OSError as exc:  # unreadable or another filesystem: the manifest keeps its old state
        log.warning("capture.failed", path=rel, error=str(exc))


def _capture_below(
    states: dict[bytes, FileState | None], root: bytes, rel: bytes, dev: int, excludes: Excludes
) -> None:
    """States of a subtree that arrived by a move, from the one walker that
    never follows a symlink nor crosses a mount point; every entry is read
    relative to its directory's checked fd."""
    walk = Walk(root, excludes, dev, rel)
    for listing in walk:
        prefix = listing.rel + b"/" if listing.rel else b""
        for name in listing.names:
            try:
                states[prefix + name] = capture_at(listing.fd, name, dev)
            except OSError as exc:
                log.warning("capture.failed", path=prefix + name, error=str(exc))


def _is_dir(state: FileState | None) -> bool:
    return state is not None and state.kind == FileKind.DIR


def _with(report: StepReport, **changes: object) -> StepReport:
    return replace(report, **changes)  # type: ignore[arg-type]
