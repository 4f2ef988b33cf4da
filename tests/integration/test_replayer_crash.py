"""SIGKILL of a process running the replayer (real LMDB, real LocalShipper):
whatever the journal says is done is on the mirror, and a restart ships the
rest without losing anything."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.operate.config import LocalTarget
from agent.ship.local import shipper as local
from agent.ship.replayer import Replayer
from journal import Entry, Journal, Op
from tests.helpers.wait import wait_until

TRACK = "copy"
FILES = 40
CHILD = """
import sys, threading
from pathlib import Path
from agent.operate.config import LocalTarget
from agent.ship.replayer import Replayer
from agent.ship.local.shipper import LocalShipper
from journal import Journal

journal_dir, root, mirror = sys.argv[1:4]
journal = Journal.open(journal_dir, root=root, tracks=["copy"])
shipper = LocalShipper(LocalTarget("copy", Path(mirror)), Path(root))
Replayer(journal, shipper, root, settle_s=0.0, batch_limit=2).run(threading.Event())
"""


def contents(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def run_child(jdir: Path, root: Path, mirror: Path) -> subprocess.Popen[bytes]:
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(jdir), str(root), str(mirror)],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def pending_paths(jdir: Path) -> set[bytes]:
    with Journal.open(jdir, mode="read") as j:
        return {r.entry.path for r in j.pending(TRACK)}


def test_sigkill_mid_replay_loses_nothing(tmp_path):
    """Kill the replaying process at four moments of progress; after each
    kill every path with no pending entry is on the mirror byte-for-byte;
    a final in-process run drains the rest."""
    root, mirror, jdir = tmp_path / "root", tmp_path / "mirror", tmp_path / "journal"
    root.mkdir()
    rng = random.Random(11)
    names = [b"f%02d-\xff\n" % i for i in range(FILES)]
    for n in names:
        (root / os.fsdecode(n)).write_bytes(rng.randbytes(256 * 1024))
    with Journal.open(jdir, root=str(root), tracks=[TRACK]) as j:
        j.append([Entry(Op.CHANGE, n, time_ns=time.time_ns()) for n in names])
    for _ in range(4):
        target_left = max(len(pending_paths(jdir)) - 6, 0)
        child = run_child(jdir, root, mirror)
        try:
            wait_until(lambda t=target_left: len(pending_paths(jdir)) <= t, timeout=60, interval=0.01)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        left = pending_paths(jdir)
        for n in names:
            if n not in left:
                assert contents(mirror / os.fsdecode(n)) == contents(root / os.fsdecode(n)), n
    with Journal.open(jdir, root=str(root), tracks=[TRACK]) as j:
        shipper = local.LocalShipper(LocalTarget(TRACK, mirror), root)
        replayer = Replayer(j, shipper, root, settle_s=0.0, rng=random.Random(1))
        while not replayer.step().idle:
            pass
        assert j.pending(TRACK) == [] and j.dead_letters() == []
    for n in names:
        assert contents(mirror / os.fsdecode(n)) == contents(root / os.fsdecode(n))
