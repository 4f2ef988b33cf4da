"""The replayer against a real journal and real files, with a scripted shipper
(a stand-in for the shipper contract, recording plans and returning the
outcomes a test asks for)."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import blake3
import pytest
from structlog.testing import capture_logs

from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome, ShipResult
from agent.ship.replayer import Replayer
from journal import IS_DIR, Entry, FileKind, Journal, Op
from tests.helpers.wait import wait_until

T0 = 1_700_000_000 * 10**9
Script = Callable[[str, Action, int], Outcome | tuple[Outcome, str]]


class ScriptedShipper:
    """Records every plan; answers per (track, action) from ``script``."""

    def __init__(self, tracks: tuple[str, ...] = ("mirror",), script: Script | None = None) -> None:
        self.name = "scripted"
        self.tracks = tracks
        self.script: Script = script or (lambda track, action, n: Outcome.OK)
        self.plans: list[Plan] = []
        self.raises: BaseException | None = None

    def ship(self, plan: Plan) -> list[ShipResult]:
        self.plans.append(plan)
        if self.raises is not None:
            raise self.raises
        out = []
        for action in plan.actions:
            for track in sorted(action.tracks):
                got = self.script(track, action, len(self.plans))
                outcome, reason = (
                    got if isinstance(got, tuple) else (got, "" if got == Outcome.OK else "scripted")
                )
                out.append(ShipResult(track, action.path, outcome, reason))
        return out

    def close(self) -> None:
        pass

    def shipped(self, path: bytes) -> int:
        return sum(1 for p in self.plans for a in p.actions if a.path == path)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = T0 + 10**9

    def __call__(self) -> float:
        return self.now

    def wall_ns(self) -> int:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += int(seconds * 1e9)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_journal(tmp_path: Path, root: Path, tracks: tuple[str, ...] = ("mirror",)) -> Journal:
    return Journal.open(tmp_path / "journal", root=str(root), tracks=tracks)


@pytest.fixture
def journal(tmp_path: Path, root: Path) -> Iterator[Journal]:
    j = open_journal(tmp_path, root)
    try:
        yield j
    finally:
        j.close()


def make(journal: Journal, shipper: ScriptedShipper, root: Path, clock: Clock, **kw: object) -> Replayer:
    kw.setdefault("settle_s", 0.0)
    return Replayer(journal, shipper, root, clock=clock, wall_ns=clock.wall_ns, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def change(path: bytes, *, op: Op = Op.CHANGE, dest: bytes = b"", t: int = T0, dir_: bool = False) -> Entry:
    return Entry(op, path, dest, t, IS_DIR if dir_ else 0)


def write(root: Path, rel: bytes, data: bytes) -> None:
    full = os.path.join(os.fsencode(root), rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)


def pending(journal: Journal, track: str = "mirror") -> list[bytes]:
    return [r.entry.path for r in journal.pending(track)]


def drain(replayer: Replayer, clock: Clock, steps: int = 200) -> None:
    """Step (jumping the clock over backoff waits) until nothing is left to try."""
    for _ in range(steps):
        report = replayer.step()
        if report.idle and report.wait_s is None:
            return
        clock.advance(report.wait_s or 0.0)
    raise AssertionError("replayer did not settle")


# ------------------------------------------------------------------ tests
def test_ok_marks_done_with_manifest_states(journal, root, clock):
    """OK paths are done, and the manifest holds their state as captured
    (digest of the real content); PUTs come parents first."""
    names = [b"d", b"d/f\nnew", b"-rf", b"\xff\xfe"]
    (root / "d").mkdir()
    for n in names[1:]:
        write(root, n, b"content of " + n)
    journal.append([change(b"d", dir_=True), *(change(n) for n in names[1:])])
    shipper = ScriptedShipper()
    report = make(journal, shipper, root, clock).step()
    assert report.done == 4 and report.ok == 4 and pending(journal) == []
    puts = [a.path for a in shipper.plans[0].actions]
    assert puts.index(b"d") < puts.index(b"d/f\nnew")
    for n in names[1:]:
        state = journal.manifest_get(n)
        assert state is not None and state.kind == FileKind.FILE
        assert state.digest == blake3.blake3(b"content of " + n).digest()
    assert journal.manifest_get(b"d").kind == FileKind.DIR


def test_only_ok_paths_are_marked_done(journal, root, clock):
    """RETRY and FAILED paths stay pending with no manifest state; OK ones
    are done."""
    for n in (b"ok", b"retry", b"failed"):
        write(root, n, n)
    journal.append([change(b"ok"), change(b"retry"), change(b"failed")])
    outcome = {b"ok": Outcome.OK, b"retry": Outcome.RETRY, b"failed": Outcome.FAILED}
    replayer = make(journal, ScriptedShipper(script=lambda t, a, n: outcome[a.path]), root, clock)
    report = replayer.step()
    assert (report.ok, report.retry, report.failed, report.done) == (1, 1, 1, 1)
    assert sorted(pending(journal)) == [b"failed", b"retry"]
    assert journal.manifest_get(b"ok") is not None
    assert journal.manifest_get(b"retry") is None and journal.manifest_get(b"failed") is None
    assert (replayer.shipped_ok, replayer.retries, replayer.failures) == (1, 1, 1)


def test_delete_ok_removes_manifest_entry(journal, root, clock):
    """A shipped delete removes the path from the manifest."""
    write(root, b"gone", b"x")
    journal.append([change(b"gone")])
    replayer = make(journal, ScriptedShipper(), root, clock)
    replayer.step()
    assert journal.manifest_get(b"gone") is not None
    os.unlink(root / "gone")
    journal.append([change(b"gone", op=Op.DELETE)])
    replayer.step()
    assert journal.manifest_get(b"gone") is None and pending(journal) == []


def test_permanent_failure_dead_letters_and_the_rest_flows(journal, root, clock):
    """A path FAILED five times goes to the dead-letter list with its reason;
    every other entry, also ones appended meanwhile, keeps shipping."""
    write(root, b"bad", b"x")
    journal.append([change(b"bad"), change(b"good0")])
    shipper = ScriptedShipper(
        script=lambda t, a, n: (Outcome.FAILED, "name not allowed") if a.path == b"bad" else Outcome.OK
    )
    with capture_logs() as logs:
        replayer = make(journal, shipper, root, clock, max_attempts=5)
        for i in range(1, 8):
            journal.append([change(b"good%d" % i)])
            replayer.step()
            clock.advance(120.0)
    assert shipper.shipped(b"bad") == 5
    assert pending(journal) == []
    dead = journal.dead_letters("mirror")
    assert [(d.record.entry.path, d.reason) for d in dead] == [(b"bad", "bad: name not allowed")]
    assert replayer.dead == 1 and all(shipper.shipped(b"good%d" % i) == 1 for i in range(8))
    events = [e["event"] for e in logs]
    assert "ship.dead" in events and events.count("ship.failed") == 5
    assert all(e.get("target") == "scripted" for e in logs if e["event"].startswith("ship."))


def test_retry_backs_off_and_never_dead_letters(journal, root, clock):
    """RETRY holds the path until its backoff expires (the clock decides),
    with growing delays, and never dead-letters however often it happens."""
    write(root, b"f", b"x")
    journal.append([change(b"f")])
    shipper = ScriptedShipper(script=lambda t, a, n: (Outcome.RETRY, "target down"))
    replayer = make(journal, shipper, root, clock, retry_cap_s=30.0)
    waits = []
    for _ in range(40):
        assert replayer.step().retry == 1
        held = replayer.step()
        assert held.idle and held.held == 1 and held.wait_s > 0
        waits.append(held.wait_s)
        clock.advance(held.wait_s)
    assert shipper.shipped(b"f") == 40 and pending(journal) == [b"f"]
    assert journal.dead_letters() == [] and replayer.dead == 0
    assert waits[0] < waits[4] and max(waits) <= 30.0 and waits[-1] > 15.0


def test_target_down_then_up_drains_everything(journal, root, clock):
    """Every ship fails transiently for a while; once the target is back all
    entries are done and nothing is dead."""
    entries = [change(b"f%03d" % i) for i in range(50)]
    for e in entries:
        write(root, e.path, e.path)
    journal.append(entries[:25])
    up = threading.Event()
    shipper = ScriptedShipper(script=lambda t, a, n: Outcome.OK if up.is_set() else Outcome.RETRY)
    replayer = make(journal, shipper, root, clock)
    for _ in range(10):
        replayer.step()
        clock.advance(5.0)
    journal.append(entries[25:])
    replayer.step()
    assert len(pending(journal)) == 50
    up.set()
    drain(replayer, clock)
    assert pending(journal) == [] and journal.dead_letters() == []
    assert all(journal.manifest_get(e.path) is not None for e in entries)


def test_settle_delay(journal, root, clock):
    """With the quiet delay equal to the settle delay (a fixed settle), entries
    younger than it wait; the report says how long."""
    write(root, b"f", b"x")
    journal.append([change(b"f", t=clock.wall - 50_000_000)])
    shipper = ScriptedShipper()
    replayer = make(journal, shipper, root, clock, settle_s=0.2, quiet_s=0.2)
    report = replayer.step()
    assert report.idle and shipper.plans == []
    assert report.wait_s == pytest.approx(0.15, abs=1e-6)
    clock.advance(0.15)
    assert replayer.step().done == 1 and pending(journal) == []


def test_young_entry_keeps_later_ones_back(journal, root, clock):
    """Selection stops at the first young entry, so a path's history is never
    shipped out of order around it."""
    journal.append([change(b"a", t=clock.wall), change(b"b", t=T0)])
    shipper = ScriptedShipper()
    replayer = make(journal, shipper, root, clock, settle_s=0.2)
    assert replayer.step().idle
    clock.advance(0.2)
    assert replayer.step().done == 2


def test_two_members_one_down(tmp_path, root, clock):
    """Two progress tracks of one target: the member answering RETRY keeps
    everything pending for itself; the other member's progress is unaffected,
    also for entries appended later. Shared actions name both members."""
    tracks = ("c/web2", "c/web3")
    with open_journal(tmp_path, root, tracks) as journal:
        write(root, b"f", b"x")
        journal.append([change(b"f")])
        shipper = ScriptedShipper(tracks, lambda t, a, n: Outcome.RETRY if t == "c/web3" else Outcome.OK)
        replayer = make(journal, shipper, root, clock)
        replayer.step()
        assert shipper.plans[0].actions[0].tracks == frozenset(tracks)
        for i in range(5):
            journal.append([change(b"g%d" % i)])
            replayer.step()
            assert pending(journal, "c/web2") == []
        assert pending(journal, "c/web3") == [b"f"] + [b"g%d" % i for i in range(5)]
        assert journal.dead_letters() == []
        later = [a.tracks for p in shipper.plans[1:] for a in p.actions if a.path == b"g4"]
        assert later == [frozenset({"c/web2", "c/web3"})]


def test_shipper_exception_marks_nothing(journal, root, clock):
    """A raising shipper: nothing marked done, nothing in the manifest, the
    error is logged with its traceback, and the next try ships it all."""
    write(root, b"f", b"x")
    journal.append([change(b"f"), change(b"g", op=Op.DELETE)])
    shipper = ScriptedShipper()
    shipper.raises = RuntimeError("boom")
    with capture_logs() as logs:
        replayer = make(journal, shipper, root, clock)
        report = replayer.step()
    assert report.raised and report.retry == 2 and report.done == 0
    assert sorted(pending(journal)) == [b"f", b"g"] and journal.manifest_get(b"f") is None
    error = next(e for e in logs if e["event"] == "ship.error")
    assert error["log_level"] == "error" and error.get("exc_info")
    shipper.raises = None
    drain(replayer, clock)
    assert pending(journal) == [] and journal.manifest_get(b"f") is not None


def test_backed_off_paths_do_not_block_others(journal, root, clock):
    """With a batch limit smaller than the held backlog, paging still reaches
    the entries behind it."""
    journal.append([change(b"stuck") for _ in range(12)] + [change(b"free%d" % i) for i in range(5)])
    shipper = ScriptedShipper(script=lambda t, a, n: Outcome.RETRY if a.path == b"stuck" else Outcome.OK)
    replayer = make(journal, shipper, root, clock, batch_limit=4)
    replayer.step()  # ships the first page: "stuck" goes into backoff
    for _ in range(5):
        replayer.step()
    assert pending(journal) == [b"stuck"] * 12


def test_delete_retried_holds_the_re_created_subtree(journal, root, clock):
    """A directory delete that keeps failing holds back the later entries below
    it, so they are never marked done before it (its retry would wipe them)."""
    write(root, b"d/new", b"x")
    journal.append([change(b"d", op=Op.DELETE, dir_=True), change(b"d", dir_=True), change(b"d/new")])
    fail_delete = threading.Event()
    fail_delete.set()

    def script(track: str, action: Action, n: int) -> Outcome:
        if action.kind == ActionKind.DELETE and fail_delete.is_set():
            return Outcome.RETRY
        return Outcome.OK

    shipper = ScriptedShipper(script=script)
    replayer = make(journal, shipper, root, clock)
    replayer.step()
    assert pending(journal) == [b"d", b"d", b"d/new"]
    journal.append([change(b"d/later")])
    assert replayer.step().idle  # d is backing off: d/later waits behind it
    fail_delete.clear()
    drain(replayer, clock)
    assert pending(journal) == []


def test_moved_directory_manifest_covers_subtree(journal, root, clock):
    """A directory moved in is shipped as one recursive PUT and the manifest
    learns every path below it."""
    write(root, b"new/sub/f", b"1")
    write(root, b"new/g", b"2")
    journal.append([change(b"old", op=Op.MOVE, dest=b"new", dir_=True)])
    shipper = ScriptedShipper()
    make(journal, shipper, root, clock).step()
    kinds = [(a.kind, a.path, a.recursive) for a in shipper.plans[0].actions]
    assert (ActionKind.PUT, b"new", True) in kinds and (ActionKind.DELETE, b"old", False) in kinds
    for p in (b"new", b"new/sub", b"new/sub/f", b"new/g"):
        assert journal.manifest_get(p) is not None, p


def test_run_ships_and_stops_promptly(journal, root):
    """The loop ships appended entries with the real clock and exits when
    stopped, also while paths back off."""
    shipper = ScriptedShipper(script=lambda t, a, n: Outcome.RETRY if a.path == b"down" else Outcome.OK)
    replayer = Replayer(journal, shipper, root, settle_s=0.01, retry_cap_s=30.0)
    stop = threading.Event()
    thread = threading.Thread(target=replayer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        write(root, b"f", b"x")
        journal.append([Entry(Op.CHANGE, b"f", time_ns=time.time_ns()), Entry(Op.CHANGE, b"down")])
        wait_until(lambda: pending(journal) == [b"down"], timeout=10)
        wait_until(lambda: replayer.retries >= 2, timeout=10)
    finally:
        stop.set()
        journal.wake()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert pending(journal) == [b"down"] and journal.manifest_get(b"f") is not None


def test_missing_or_mixed_results_are_not_ok(journal, root, clock):
    """A path the shipper did not report on is retried; with two actions on
    one path (delete, then put) the worse result counts."""
    os.mkdir(root / "d")
    journal.append([change(b"d", op=Op.DELETE, dir_=True), change(b"d", dir_=True), change(b"quiet")])

    class Partial(ScriptedShipper):
        def ship(self, plan: Plan) -> list[ShipResult]:
            self.plans.append(plan)
            return [
                ShipResult(
                    "mirror", a.path, Outcome.OK if a.kind == ActionKind.DELETE else Outcome.FAILED, "x"
                )
                for a in plan.actions
                if a.path == b"d"
            ]

    report = make(journal, Partial(), root, clock).step()
    assert (report.ok, report.retry, report.failed, report.done) == (0, 1, 1, 0)
    assert sorted(pending(journal)) == [b"d", b"d", b"quiet"]


def test_stop_before_shipping_ships_nothing(journal, root, clock):
    """A step that sees ``stop`` set before shipping leaves everything pending."""
    journal.append([change(b"f")])
    shipper = ScriptedShipper()
    stop = threading.Event()
    stop.set()
    assert make(journal, shipper, root, clock).step(stop).idle
    assert shipper.plans == [] and pending(journal) == [b"f"]
