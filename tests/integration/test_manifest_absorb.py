"""One manifest serves every track. A track that ships late captures the tree
as it is then, possibly after a change whose event was lost (an overflow, a
kill); if the manifest took that state, the scan after the loss would see no
difference, and a track that shipped earlier would keep the old path for
ever. The manifest keeps its state instead, and the scan ships the change to
every track."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from agent.config import LocalTarget
from agent.excludes import Excludes
from agent.replayer import Replayer
from agent.scanner import Scanner
from agent.shippers.local import LocalShipper
from journal import Entry, Journal, Op


def _drain(replayer: Replayer, journal: Journal, track: str) -> None:
    for _ in range(50):
        replayer.step()
        if not journal.pending(track):
            return
    raise AssertionError(f"{track} did not drain")


def test_a_late_track_does_not_hide_a_lost_move_from_an_early_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"moved away while its event was lost\n")
    mirrors = {t: tmp_path / t for t in ("early", "late")}
    for m in mirrors.values():
        m.mkdir()
    with Journal.open(tmp_path / "journal", root=str(root), tracks=list(mirrors)) as journal:
        replayers = {
            t: Replayer(
                journal, LocalShipper(LocalTarget(t, m), root), root, settle_s=0.0, rng=random.Random(1)
            )
            for t, m in mirrors.items()
        }
        now = time.time_ns()
        journal.append([Entry(Op.CHANGE, b"d", time_ns=now, flags=1), Entry(Op.CHANGE, b"d/f", time_ns=now)])
        _drain(replayers["early"], journal, "early")
        assert (mirrors["early"] / "d" / "f").exists()
        os.rename(root / "d", root / "e")  # its MOVE is never journaled: the event was lost
        _drain(replayers["late"], journal, "late")  # ships what it finds: d gone
        Scanner(root, journal, Excludes(())).scan(since_ns=None)  # the scan that follows a loss
        for t in mirrors:
            _drain(replayers[t], journal, t)
        for t, m in mirrors.items():
            assert not (m / "d").exists(), f"{t} keeps the path the tree lost"
            assert (m / "e" / "f").read_bytes() == b"moved away while its event was lost\n", t
