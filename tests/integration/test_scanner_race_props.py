"""Property: however deletes (of files and of whole directories), re-creates
and the watcher's appends interleave with a scan (before and between its
listings, after it decided its deletes, right before it appends), a path
that exists at the end is never left with a coalesced DELETE, and the mirror
ends equal to the tree.

The watcher is played by the test (each change while the agent runs queues
the entry the watcher would journal, appended at once or, when it lags, with
a later change), so every interleaving is reached on purpose, not by timing
luck. The watcher never appends while the scanner's append is under way: it
would wait for the append lock there."""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.operate.config import LocalTarget
from agent.scan import scanner as scanner_mod
from agent.scan.scanner import Scanner
from agent.ship.local.shipper import LocalShipper
from agent.ship.planner import coalesce
from agent.ship.replayer import Replayer
from agent.tree.excludes import Excludes
from journal import IS_DIR, Entry, Journal, Op

TRACK = "copy"
PATHS = (b"d0/p0", b"d0/p1", b"d1/p2", b"d1/p3")
SLOTS = ("stopped", "listing0", "listing1", "listing2", "decided", "appending", "after")
Step = tuple[str, str, int, bool]  # slot, action, path index, the watcher lags (appends later)

steps = st.lists(
    st.tuples(
        st.sampled_from(SLOTS),
        st.sampled_from(("create", "delete", "rmtree")),
        st.integers(0, 3),
        st.booleans(),
    ),
    max_size=12,
)


class World:
    """The tree, the journal and the played watcher."""

    def __init__(self, root: bytes, journal: Journal, append: Callable[..., object]) -> None:
        self.root = root
        self.journal = journal
        self.append = append  # the journal's own append, for the played watcher
        self.queued: list[Entry] = []
        self.watching = False
        self.serial = 0

    def do(self, action: str, i: int, lag: bool, may_flush: bool) -> None:
        rel = PATHS[i]
        path, parent = self.root + b"/" + rel, rel.partition(b"/")[0]
        if action == "create":
            if not os.path.isdir(self.root + b"/" + parent):
                os.mkdir(self.root + b"/" + parent)
                self.event(Op.CHANGE, parent, IS_DIR)
            self.serial += 1
            with open(path, "wb") as f:
                f.write(b"v%d" % self.serial * self.serial)
            self.event(Op.CHANGE, rel)
        elif action == "delete" and os.path.lexists(path):
            os.unlink(path)
            self.event(Op.DELETE, rel)
        elif action == "rmtree" and os.path.isdir(self.root + b"/" + parent):
            for child in sorted(os.listdir(self.root + b"/" + parent)):
                os.unlink(self.root + b"/" + parent + b"/" + child)
                self.event(Op.DELETE, parent + b"/" + child)
            os.rmdir(self.root + b"/" + parent)
            self.event(Op.DELETE, parent, IS_DIR)
        if may_flush and not lag:
            self.flush()

    def event(self, op: Op, rel: bytes, flags: int = 0) -> None:
        if self.watching:
            self.queued.append(Entry(op, rel, time_ns=time.time_ns(), flags=flags))

    def flush(self) -> None:
        if self.queued:
            self.append(self.queued)
            self.queued = []


def run_slot(world: World, plan: list[Step], slot: str, *, may_flush: bool = True) -> None:
    for where, action, i, lag in plan:
        if where == slot:
            world.do(action, i, lag, may_flush)


def scenario(tmp: str, plan: list[Step], batch: int) -> None:
    root = os.fsencode(tmp) + b"/root"
    for d in (b"d0", b"d1"):
        os.makedirs(root + b"/" + d)
    for rel in PATHS:
        with open(root + b"/" + rel, "wb") as f:
            f.write(b"v0 " + rel)
    with Journal.open(Path(tmp) / "journal", root=os.fsdecode(root), tracks=[TRACK]) as journal:
        shipper = LocalShipper(LocalTarget(TRACK, Path(tmp) / "mirror"), Path(os.fsdecode(root)))
        replayer = Replayer(journal, shipper, os.fsdecode(root), settle_s=0.0, rng=random.Random(1))
        journal.append([Entry(Op.CHANGE, d, flags=IS_DIR) for d in (b"d0", b"d1")])
        journal.append([Entry(Op.CHANGE, rel) for rel in PATHS])
        drain(replayer)  # shipped while the agent ran; now it is stopped

        world = World(root, journal, journal.append)
        run_slot(world, plan, "stopped")
        world.watching = True  # the agent starts: the watcher first, then the scan
        hook(world, plan, journal)
        Scanner(Path(os.fsdecode(root)), journal, Excludes(()), batch=batch).scan(since_ns=None)
        run_slot(world, plan, "after")
        world.flush()

        exists = {rel for rel in (*PATHS, b"d0", b"d1") if os.path.lexists(root + b"/" + rel)}
        for change in coalesce(journal.pending(TRACK)):
            if change.path in exists:
                assert change.put or not change.delete, f"{change.path!r} exists but ends in DELETE"
        drain(replayer)
        mirror = os.fsencode(tmp) + b"/mirror"
        assert tree(mirror) == tree(root)


def hook(world: World, plan: list[Step], journal: Journal) -> None:
    """Run the plan's steps at their points inside the scan."""
    listings = [0]
    real_listing = scanner_mod.ScanRun._scan_listing
    real_deletions = scanner_mod.deletions

    def scan_listing(self: object, *args: object) -> None:
        run_slot(world, plan, f"listing{listings[0]}")
        listings[0] += 1
        real_listing(self, *args)  # type: ignore[arg-type]

    def deletions(*args: object) -> object:
        out = real_deletions(*args)  # type: ignore[arg-type]
        run_slot(world, plan, "decided")
        return out

    def append(*args: object, **kw: object) -> object:
        run_slot(world, plan, "appending", may_flush=False)
        return world.append(*args, **kw)

    scanner_mod.ScanRun._scan_listing = scan_listing  # type: ignore[method-assign]
    scanner_mod.deletions = deletions  # type: ignore[assignment]
    journal.append = append  # type: ignore[method-assign]


def drain(replayer: Replayer) -> None:
    for _ in range(100):
        report = replayer.step()
        if report.idle and report.wait_s is None:
            return
    raise AssertionError("replayer did not settle")


def tree(top: bytes) -> dict[bytes, bytes]:
    """Files (content) and directories (b"dir") of the tree."""
    out = {d: b"dir" for d in (b"d0", b"d1") if os.path.isdir(top + b"/" + d)}
    for rel in PATHS:
        try:
            with open(top + b"/" + rel, "rb") as f:
                out[rel] = f.read()
        except FileNotFoundError:
            pass
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, batch=st.sampled_from([1, 1000]))
@example(plan=[("stopped", "delete", 0, False), ("decided", "create", 0, False)], batch=1000)
def test_no_path_that_exists_ends_deleted(plan: list[Step], batch: int) -> None:
    real_listing, real_deletions = scanner_mod.ScanRun._scan_listing, scanner_mod.deletions
    try:
        with tempfile.TemporaryDirectory() as tmp:
            scenario(tmp, plan, batch)
    finally:
        scanner_mod.ScanRun._scan_listing = real_listing  # type: ignore[method-assign]
        scanner_mod.deletions = real_deletions
