"""rsync deletes against a real rsync, to a local path and to a daemon on
loopback: what is absent is done without creating anything, what rsync
cannot remove on the mirror is FAILED and ends as a dead letter."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.operate.config import RsyncTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome
from agent.ship.replayer import Replayer
from agent.ship.rsync.shipper import RsyncShipper
from journal import Entry, Journal, Op
from tests.fixtures.rsyncd import start_rsyncd
from tests.helpers.trees import snapshot

TRACK = "dr"


@dataclass
class Mirror:
    src: Path
    path: Path  # the mirror directory as the test sees it
    dest: str  # the rsync destination


@contextmanager
def _mirror(tmp_path: Path, kind: str, options: dict[str, str] | None = None) -> Iterator[Mirror]:
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    src.mkdir()
    mirror.mkdir()
    if kind == "path":
        yield Mirror(src, mirror, str(mirror))
        return
    with start_rsyncd(tmp_path / "rsyncd", mirror, options=options) as daemon:
        yield Mirror(src, mirror, daemon.url)


@contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """``chattr +i``: not even root may unlink it (EPERM on the mirror)."""
    subprocess.run(["chattr", "+i", os.fspath(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", os.fspath(path)], check=True)


def _delete(*paths: bytes) -> Plan:
    return Plan(tuple(Action(ActionKind.DELETE, p) for p in paths))


@pytest.mark.parametrize("kind", ["path", "daemon"])
def test_absent_and_below_file_deletes_create_nothing(tmp_path: Path, kind: str) -> None:
    """Deletes of deep absent paths and of paths below a file are OK and leave
    the mirror exactly as it was."""
    with _mirror(tmp_path, kind) as m:
        (m.path / "f24").write_bytes(b"file")
        (m.path / "d").mkdir()
        before = snapshot(m.path)
        shipper = RsyncShipper(RsyncTarget(TRACK, m.dest, timeout_s=60), m.src)
        plan = _delete(b"gone/a/b", b"f24/d0/x", b"f24/d0/d1/y", b"d/missing/deeper", b"#c/d")
        results = shipper.ship(plan)
        assert [r.outcome for r in results] == [Outcome.OK] * 5, results
        assert snapshot(m.path) == before


@pytest.mark.parametrize("kind", ["path", "daemon"])
def test_undeletable_mirror_path_is_failed(tmp_path: Path, kind: str) -> None:
    """A mirror entry rsync may not remove is FAILED with rsync's words; the
    other deletes of the batch are done."""
    with _mirror(tmp_path, kind) as m:
        (m.path / "locked").mkdir()
        (m.path / "locked" / "f").write_bytes(b"stays")
        (m.path / "free").write_bytes(b"goes")
        shipper = RsyncShipper(RsyncTarget(TRACK, m.dest, timeout_s=60), m.src)
        with _immutable(m.path / "locked" / "f"):
            results = {r.path: r for r in shipper.ship(_delete(b"locked/f", b"free", b"gone/x"))}
        assert results[b"locked/f"].outcome is Outcome.FAILED, results
        assert "not permitted" in results[b"locked/f"].reason
        assert results[b"free"].outcome is Outcome.OK and results[b"gone/x"].outcome is Outcome.OK
        assert not (m.path / "free").exists() and not (m.path / "gone").exists()


def test_permission_denied_on_daemon_is_failed(tmp_path: Path) -> None:
    """A daemon running as an unprivileged user that may not write a directory:
    the delete and the put into it are FAILED, not retried forever."""
    with _mirror(tmp_path, "daemon", options={"uid": "65534", "gid": "65534"}) as m:
        (m.path / "locked").mkdir(mode=0o755)
        (m.path / "locked" / "f").write_bytes(b"stays")
        (m.src / "locked").mkdir()
        (m.src / "locked" / "new").write_bytes(b"new")
        shipper = RsyncShipper(RsyncTarget(TRACK, m.dest, timeout_s=60), m.src)
        plan = Plan((Action(ActionKind.DELETE, b"locked/f"), Action(ActionKind.PUT, b"locked/new")))
        results = {r.path: r for r in shipper.ship(plan)}
        assert results[b"locked/f"].outcome is Outcome.FAILED, results
        assert results[b"locked/new"].outcome is Outcome.FAILED, results
        assert all("Permission denied" in r.reason for r in results.values())
        assert (m.path / "locked" / "f").read_bytes() == b"stays"


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("kind", ["path", "daemon"])
def test_permanent_delete_error_ends_as_dead_letter(tmp_path: Path, kind: str) -> None:
    """Through the replayer: an undeletable mirror path is dead after
    ``max_attempts`` ships; an absent deep path is done at once; nothing
    stays pending."""
    with _mirror(tmp_path, kind) as m:
        (m.path / "locked").mkdir()
        (m.path / "locked" / "f").write_bytes(b"stays")
        journal = Journal.open(tmp_path / "journal", root=str(m.src), tracks=[TRACK])
        shipper = RsyncShipper(RsyncTarget(TRACK, m.dest, timeout_s=60), m.src)
        clock = _Clock()
        replayer = Replayer(
            journal, shipper, m.src, settle_s=0.0, max_attempts=3, clock=clock, rng=random.Random(1)
        )
        try:
            journal.append([Entry(Op.DELETE, p, b"", 0, 0) for p in (b"locked/f", b"gone/a/b")])
            with _immutable(m.path / "locked" / "f"):
                for _ in range(50):
                    report = replayer.step()
                    if report.idle and report.wait_s is None:
                        break
                    clock.now += report.wait_s or 0.0
            assert journal.pending(TRACK) == []
            dead = journal.dead_letters(TRACK)
            assert [d.record.entry.path for d in dead] == [b"locked/f"]
            assert replayer.failures == 3
        finally:
            shipper.close()
            journal.close()
        assert not (m.path / "gone").exists()


@pytest.mark.parametrize("kind", ["path", "daemon"])
def test_file_replaced_by_fifo_is_done_and_gone(tmp_path: Path, kind: str) -> None:
    """Through the replayer: a file that became a fifo leaves the mirror, and
    nothing stays pending or dead."""
    with _mirror(tmp_path, kind) as m:
        (m.path / "f").write_bytes(b"old")
        os.mkfifo(m.src / "f")
        journal = Journal.open(tmp_path / "journal", root=str(m.src), tracks=[TRACK])
        shipper = RsyncShipper(RsyncTarget(TRACK, m.dest, timeout_s=60), m.src)
        replayer = Replayer(journal, shipper, m.src, settle_s=0.0, clock=_Clock(), rng=random.Random(1))
        try:
            journal.append([Entry(Op.CHANGE, b"f", b"", 0, 0)])
            report = replayer.step()
            assert report.done == 1, report
            assert journal.pending(TRACK) == [] and journal.dead_letters() == []
        finally:
            shipper.close()
            journal.close()
        assert not os.path.lexists(m.path / "f")
