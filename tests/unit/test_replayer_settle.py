"""The replayer's adaptive settle with a real journal, real files and an
injected clock: a quiet change ships without waiting out ``settle_ms``, a path
still changing is coalesced, and a path that never stops changing is shipped
at least once per ``settle_ms`` and ends in its final state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.operate.config import LocalTarget
from agent.ship.local.shipper import LocalShipper
from journal import Journal
from tests.unit.test_replayer import Clock, ScriptedShipper, change, make, open_journal, pending, write


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.fixture
def journal(tmp_path: Path, root: Path) -> Iterator[Journal]:
    with open_journal(tmp_path, root) as j:
        yield j


MS = 1_000_000


def test_quiet_change_ships_before_the_settle_delay(journal, root, clock):
    """A change nothing followed for the quiet delay ships at once, long
    before ``settle_ms``."""
    write(root, b"f", b"x")
    journal.append([change(b"f", t=clock.wall - 30 * MS)])
    shipper = ScriptedShipper()
    replayer = make(journal, shipper, root, clock, settle_s=0.2)
    assert replayer.step().done == 1 and pending(journal) == []


def test_young_change_waits_for_the_quiet_delay(journal, root, clock):
    """A change younger than the quiet delay waits exactly until it is quiet."""
    write(root, b"f", b"x")
    journal.append([change(b"f", t=clock.wall - 5 * MS)])
    replayer = make(journal, ScriptedShipper(), root, clock, settle_s=0.2, quiet_s=0.02)
    report = replayer.step()
    assert report.idle and abs(report.wait_s - 0.015) < 1e-6
    clock.advance(0.015)
    assert replayer.step().done == 1


def test_path_still_changing_is_coalesced(journal, root, clock):
    """Entries of a path that is still being written wait while a quiet path
    ships; once the path is quiet, all of them go out as one action."""
    write(root, b"log", b"x")
    write(root, b"other", b"y")
    w = clock.wall
    journal.append(
        [change(b"log", t=w - 60 * MS), change(b"log", t=w - 40 * MS), change(b"other", t=w - 40 * MS)]
    )
    journal.append([change(b"log", t=w - 5 * MS)])
    shipper = ScriptedShipper()
    replayer = make(journal, shipper, root, clock, settle_s=0.2)
    assert replayer.step().done == 1
    assert shipper.shipped(b"other") == 1 and shipper.shipped(b"log") == 0
    assert pending(journal) == [b"log"] * 3
    report = replayer.step()
    assert report.idle and report.wait_s is not None and report.wait_s <= 0.015 + 1e-6
    clock.advance(0.015)
    assert replayer.step().done == 3
    assert shipper.shipped(b"log") == 1 and pending(journal) == []


def test_path_changing_without_pause_is_not_starved(tmp_path: Path, journal, root, clock):
    """A file rewritten every 10 ms for 2 s reaches the mirror at least once
    per ``settle_ms`` (not a hundred times, not never), and in its final
    state once the writes stop."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shipper = LocalShipper(LocalTarget("mirror", mirror), root)
    replayer = make(journal, shipper, root, clock, settle_s=0.2)
    seen: list[bytes] = []
    for i in range(200):
        write(root, b"log", b"version %d" % i)
        journal.append([change(b"log", t=clock.wall)])
        clock.advance(0.01)
        replayer.step()
        got = (mirror / "log").read_bytes() if (mirror / "log").exists() else None
        if got is not None and (not seen or seen[-1] != got):
            seen.append(got)
    assert 9 <= len(seen) <= 11, seen  # one ship per 200 ms of writing
    clock.advance(0.02)
    replayer.step()
    assert (mirror / "log").read_bytes() == b"version 199" and pending(journal) == []
