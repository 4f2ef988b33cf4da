"""A scan's findings never overtake what the watcher journaled later.

The scan lists a directory early and appends its findings in batches, later. A path
re-created in between is journaled by the watcher first; the scan's stale
DELETE must not come after it (the mirror would lose the file). The race is
made deterministic: the path is re-created right after the listing, and the
scan goes on only once the real watcher has journaled the re-creation."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.operate.config import LocalTarget
from agent.scan import scanner as scanner_mod
from agent.scan.scanner import Scanner
from agent.ship.local.shipper import LocalShipper
from agent.ship.planner import coalesce
from agent.ship.replayer import Replayer
from agent.tree.excludes import Excludes
from agent.watch.watcher import Watcher
from journal import IS_DIR, Entry, Journal, Op
from tests.helpers.wait import wait_until

TRACK = "copy"


@dataclass
class Rig:
    root: Path
    mirror: Path
    journal: Journal
    replayer: Replayer

    def abs(self, rel: bytes) -> bytes:
        return os.fsencode(self.root) + b"/" + rel

    def drain(self) -> None:
        for _ in range(100):
            report = self.replayer.step()
            if report.idle and report.wait_s is None:
                return
        raise AssertionError("replayer did not settle")

    def ship_all(self, rels: list[bytes]) -> None:
        """Journal and ship the tree as it is, as a running agent would have."""
        self.journal.append(
            Entry(Op.CHANGE, rel, time_ns=time.time_ns(), flags=IS_DIR if os.path.isdir(self.abs(rel)) else 0)
            for rel in rels
        )
        self.drain()

    def final(self, path: bytes) -> tuple[bool, bool]:
        """(delete, put) of the path's coalesced pending entries."""
        changes = [c for c in coalesce(self.journal.pending(TRACK)) if c.path == path]
        assert changes, f"nothing pending for {path!r}"
        return changes[0].delete, changes[0].put


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    root, mirror = tmp_path / "root", tmp_path / "mirror"
    root.mkdir()
    journal = Journal.open(tmp_path / "journal", root=str(root), tracks=[TRACK])
    shipper = LocalShipper(LocalTarget(TRACK, mirror), root)
    replayer = Replayer(journal, shipper, root, settle_s=0.0, rng=random.Random(1))
    try:
        yield Rig(root, mirror, journal, replayer)
    finally:
        shipper.close()
        journal.close()


@pytest.fixture
def start_watcher(rig: Rig) -> Iterator[Callable[[], None]]:
    """Start the real watcher (the agent starting); stopped at the end."""
    stop = threading.Event()
    running: list[tuple[Watcher, threading.Thread]] = []

    def start() -> None:
        watcher = Watcher(rig.root, rig.journal, Excludes([]))
        watcher.start()
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        running.append((watcher, thread))

    yield start
    stop.set()
    for watcher, thread in running:
        thread.join(timeout=30)
        watcher.close()
        assert not thread.is_alive()


def journaled(journal: Journal, op: Op, path: bytes, after: int) -> bool:
    return any(r.entry.op == op and r.entry.path == path for r in journal.since(seq=after + 1))


def recreate_after_listing(monkeypatch: pytest.MonkeyPatch, rig: Rig, make: Callable[[], None]) -> list[int]:
    """Once the scan has listed the tree and decided its findings, before it
    appends the first of them, run ``make`` (a re-creation) and wait until
    the watcher has journaled it."""
    real = scanner_mod.ScanRun._flush
    marks: list[int] = []

    def hooked(run: scanner_mod.ScanRun) -> None:
        if run.entries and not marks:
            marks.append(rig.journal.last_seq())
            make()
        real(run)

    monkeypatch.setattr(scanner_mod.ScanRun, "_flush", hooked)
    return marks


def test_file_recreated_during_the_scan_reaches_the_mirror(
    rig: Rig, start_watcher: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rm while stopped, re-create while the startup scan runs: the scan's
    DELETE does not come after the watcher's CHANGE, and the mirror has v2."""
    os.makedirs(rig.abs(b"a"))
    for name in (b"a/target", b"a/other", b"keep"):
        with open(rig.abs(name), "wb") as f:
            f.write(b"v1 " + name)
    rig.ship_all([b"a", b"a/target", b"a/other", b"keep"])
    os.unlink(rig.abs(b"a/target"))  # while the agent is stopped
    os.unlink(rig.abs(b"a/other"))
    start = rig.journal.last_seq()
    start_watcher()

    def make() -> None:
        with open(rig.abs(b"a/target"), "wb") as f:
            f.write(b"v2")
        wait_until(lambda: journaled(rig.journal, Op.CHANGE, b"a/target", start), timeout=15)

    recreate_after_listing(monkeypatch, rig, make)
    report = Scanner(rig.root, rig.journal, Excludes([])).scan(since_ns=None)
    assert rig.final(b"a/target") == (False, True)  # a PUT, no delete after it
    assert rig.final(b"a/other") == (True, False)  # really gone: still deleted
    assert (report.enqueued_deletes, report.enqueued_changes) == (1, 2)  # a/target, and a: its mtime
    wait_until(lambda: journaled(rig.journal, Op.DELETE, b"a/other", start), timeout=15)
    rig.drain()
    assert (rig.mirror / "a" / "target").read_bytes() == b"v2"
    assert not (rig.mirror / "a" / "other").exists()


def test_directory_recreated_during_a_subtree_scan_keeps_its_new_children(
    rig: Rig, start_watcher: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory deleted while stopped and re-created (with a child) while a
    subtree scan runs: its stale DELETE would absorb the watcher's entries
    for the new child; the mirror must get the new directory and child."""
    os.makedirs(rig.abs(b"top/d"))
    with open(rig.abs(b"top/d/old"), "wb") as f:
        f.write(b"old")
    rig.ship_all([b"top", b"top/d", b"top/d/old"])
    os.unlink(rig.abs(b"top/d/old"))
    os.rmdir(rig.abs(b"top/d"))
    start = rig.journal.last_seq()
    start_watcher()

    def make() -> None:
        os.mkdir(rig.abs(b"top/d"))
        wait_until(lambda: journaled(rig.journal, Op.CHANGE, b"top/d", start), timeout=15)
        with open(rig.abs(b"top/d/new"), "wb") as f:
            f.write(b"new")
        wait_until(lambda: journaled(rig.journal, Op.CHANGE, b"top/d/new", start), timeout=15)

    recreate_after_listing(monkeypatch, rig, make)
    Scanner(rig.root, rig.journal, Excludes([])).scan_subtree(b"top")
    assert rig.final(b"top/d") == (False, True)
    assert rig.final(b"top/d/new")[1]
    rig.drain()
    assert (rig.mirror / "top" / "d" / "new").read_bytes() == b"new"
    assert not (rig.mirror / "top" / "d" / "old").exists()


def test_a_file_become_directory_keeps_the_delete_before_it(
    rig: Rig, start_watcher: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan finds a file changed and lists it; it then becomes a
    directory, which the watcher journals (DELETE, then CHANGE of a
    directory). The scan's CHANGE must not come after as a file's: a file's
    PUT would drop the delete before it, and a target that cannot put a
    directory over a file (msync) needs that delete."""
    with open(rig.abs(b"x"), "wb") as f:
        f.write(b"v1")
    rig.ship_all([b"x"])
    with open(rig.abs(b"x"), "wb") as f:
        f.write(b"v2, while stopped")
    start = rig.journal.last_seq()
    start_watcher()

    def make() -> None:
        os.unlink(rig.abs(b"x"))
        os.mkdir(rig.abs(b"x"))
        wait_until(lambda: journaled(rig.journal, Op.CHANGE, b"x", start), timeout=15)

    recreate_after_listing(monkeypatch, rig, make)
    Scanner(rig.root, rig.journal, Excludes([])).scan(since_ns=None)
    last = list(rig.journal.since(seq=start + 1))[-1].entry
    assert (last.op, last.path, last.flags) == (Op.CHANGE, b"x", IS_DIR)
    assert rig.final(b"x") == (True, True)
    rig.drain()
    assert os.path.isdir(rig.mirror / "x") and not os.path.islink(rig.mirror / "x")
