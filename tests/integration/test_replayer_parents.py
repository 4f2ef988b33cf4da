"""A directory's mtime moves when an entry in it is added or removed. The
shippers give the mirror's parent directory the source's mtime after writing
or deleting in it, and the manifest follows what the mirror's directory got,
so a restart scan then finds nothing."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.operate.config import LocalTarget, RsyncTarget
from agent.scan.scanner import Scanner
from agent.ship.local.shipper import LocalShipper
from agent.ship.replayer import Replayer
from agent.ship.rsync.shipper import RsyncShipper
from agent.tree.excludes import Excludes
from journal import IS_DIR, Entry, Journal, Op

TRACK = "t"


@dataclass
class Rig:
    root: Path
    mirror: Path
    journal: Journal
    replayer: Replayer
    ns_precise: bool

    def ship(self, *entries: Entry) -> None:
        self.journal.append(list(entries))
        for _ in range(100):
            report = self.replayer.step()
            if report.idle and report.wait_s is None:
                return
        raise AssertionError("replayer did not settle")

    def scan(self) -> list[tuple[Op, bytes]]:
        first = self.journal.last_seq() + 1
        Scanner(self.root, self.journal, Excludes(())).scan(since_ns=None)
        return [(r.entry.op, r.entry.path) for r in self.journal.since(seq=first)]

    def mtime(self, top: Path, rel: str) -> int:
        ns = os.lstat(top / rel).st_mtime_ns
        return ns if self.ns_precise else ns // 10**9


@pytest.fixture(params=["local", "rsync"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    root, mirror = tmp_path / "root", tmp_path / "mirror"
    root.mkdir()
    mirror.mkdir()
    journal = Journal.open(tmp_path / "journal", root=str(root), tracks=[TRACK])
    if request.param == "local":
        shipper: LocalShipper | RsyncShipper = LocalShipper(LocalTarget(TRACK, mirror), root)
    else:
        shipper = RsyncShipper(RsyncTarget(TRACK, str(mirror), timeout_s=60), root)
    replayer = Replayer(journal, shipper, root, settle_s=0.0, rng=random.Random(1))
    try:
        yield Rig(root, mirror, journal, replayer, request.param == "local")
    finally:
        shipper.close()
        journal.close()


def test_entries_added_and_removed_keep_directory_states_true(rig: Rig) -> None:
    (rig.root / "d").mkdir()
    rig.ship(Entry(Op.CHANGE, b"d", flags=IS_DIR))
    for name in ("f", "g"):  # written after the directory was shipped: its mtime moves
        (rig.root / "d" / name).write_bytes(b"x")
    rig.ship(Entry(Op.CHANGE, b"d/f"), Entry(Op.CHANGE, b"d/g"))
    assert rig.mtime(rig.mirror, "d") == rig.mtime(rig.root, "d")
    assert rig.scan() == []  # the manifest holds the mtime the mirror got

    (rig.root / "d" / "f").unlink()
    rig.ship(Entry(Op.DELETE, b"d/f"))
    assert rig.mtime(rig.mirror, "d") == rig.mtime(rig.root, "d")  # at once, not at the next scan
    assert rig.scan() == []

    (rig.root / "d" / "sub").mkdir()
    rig.ship(Entry(Op.CHANGE, b"d/sub", flags=IS_DIR))
    (rig.root / "d" / "sub").rmdir()
    rig.ship(Entry(Op.DELETE, b"d/sub", flags=IS_DIR))
    assert rig.mtime(rig.mirror, "d") == rig.mtime(rig.root, "d")
    assert rig.scan() == []


def test_a_parent_whose_own_change_fails_keeps_its_old_state(rig: Rig) -> None:
    """Only the mtime is renewed: a mode change of the directory that was not
    shipped still shows at the next scan."""
    (rig.root / "d").mkdir(mode=0o755)
    rig.ship(Entry(Op.CHANGE, b"d", flags=IS_DIR))
    os.chmod(rig.root / "d", 0o700)  # not journaled: as if its entry were still failing
    (rig.root / "d" / "f").write_bytes(b"x")
    rig.ship(Entry(Op.CHANGE, b"d/f"))
    assert rig.scan() == [(Op.CHANGE, b"d")]
