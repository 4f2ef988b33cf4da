"""A scan and a ship never overlap. A plan captured and shipped before a
scan's manifest snapshot but marked done after it leaves a path that neither
the snapshot nor the walk accounts for: if the tree lost the path meanwhile
(its event lost in an overflow), no DELETE would ever be made and the mirror
would keep it. Made deterministic: the ship is held after sending, before
its results are marked done, while the path goes away and a scan starts."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Sequence
from pathlib import Path

from agent.operate.config import LocalTarget
from agent.scan.scanner import Scanner
from agent.ship.actions import Plan
from agent.ship.base import ShipResult
from agent.ship.local.shipper import LocalShipper
from agent.ship.replayer import Replayer
from agent.tree.excludes import Excludes
from journal import Entry, Journal, Op
from tests.helpers.wait import wait_until


class HeldShipper:
    """The local shipper, holding its results until told to return them."""

    def __init__(self, inner: LocalShipper) -> None:
        self.inner = inner
        self.name, self.tracks = inner.name, inner.tracks
        self.restamps_parents = inner.restamps_parents
        self.sent = threading.Event()
        self.release = threading.Event()

    def ship(self, plan: Plan) -> Sequence[ShipResult]:
        results = self.inner.ship(plan)
        self.sent.set()
        assert self.release.wait(60), "the test never released the ship"
        return results

    def close(self) -> None:
        self.inner.close()


def test_a_scan_waits_for_a_ship_in_flight(tmp_path: Path) -> None:
    root, mirror = tmp_path / "root", tmp_path / "mirror"
    root.mkdir()
    mirror.mkdir()
    (root / "x").write_bytes(b"shipped, then lost\n")
    with Journal.open(tmp_path / "journal", root=str(root), tracks=["copy"]) as journal:
        shipper = HeldShipper(LocalShipper(LocalTarget("copy", mirror), root))
        replayer = Replayer(journal, shipper, root, settle_s=0.0, rng=random.Random(1))  # type: ignore[arg-type]
        journal.append([Entry(Op.CHANGE, b"x")])
        step = threading.Thread(target=replayer.step)
        step.start()
        assert shipper.sent.wait(30)
        assert (mirror / "x").exists()
        os.unlink(root / "x")  # the DELETE event is lost (an overflow): only a scan can find it
        scan = threading.Thread(target=Scanner(root, journal, Excludes(())).scan, kwargs={"since_ns": None})
        scan.start()
        scan.join(2.0)  # without the exclusion the scan would be done by now, before the ship is marked
        shipper.release.set()
        step.join(30)
        scan.join(30)
        assert not step.is_alive() and not scan.is_alive()
        shipper.sent.clear()
        wait_until(lambda: replayer.step().idle and not journal.pending("copy"), timeout=30)
        assert not (mirror / "x").exists(), "the mirror keeps a path the tree lost, with nothing pending"
