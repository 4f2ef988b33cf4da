"""Random histories on a real tree, shipped by the real replayer through the
real LocalShipper with injected partial failures: after a clean final drain
the mirror equals the tree byte-for-byte."""

from __future__ import annotations

import os
import random
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.operate.config import LocalTarget
from agent.ship.actions import Plan
from agent.ship.base import Outcome, ShipResult
from agent.ship.local import shipper as local
from agent.ship.planner import depth
from agent.ship.replayer import Replayer
from journal import Journal
from tests.unit.test_planner import KINDS, OPS, ModelFS, Tree, build

TRACK = "copy"
LONG_OPS = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 999), st.integers(0, 999), st.booleans()),
    min_size=15,
    max_size=40,
)


class FlakyShipper:
    """The real LocalShipper behind scripted faults: per action, ``fate`` says
    ship it (0), skip it and report RETRY (1), or ship it and still report
    RETRY (2), as a transport that lost its answer would."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.name = real.name
        self.tracks = real.tracks
        self.fates: list[int] = []

    def ship(self, plan: Plan) -> Sequence[ShipResult]:
        fates = [self.fates.pop(0) if self.fates else 0 for _ in plan.actions]
        sent = Plan(tuple(a for a, f in zip(plan.actions, fates) if f != 1))
        results = list(self.real.ship(sent))
        for action, fate in zip(plan.actions, fates):
            if fate:
                results += [ShipResult(t, action.path, Outcome.RETRY, "injected") for t in action.tracks]
        return results

    def close(self) -> None:
        self.real.close()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def kind(mode: int) -> str:
    return "d" if stat.S_ISDIR(mode) else "f"


def read(path: bytes) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def sync_real(root: bytes, tree: Tree) -> None:
    """Make the real tree hold exactly the model's tree."""
    present = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            present[os.path.relpath(full, root)] = kind(os.lstat(full).st_mode)
    for rel in sorted(present, key=depth, reverse=True):
        if rel not in tree or tree[rel][0] != present[rel]:
            full = os.path.join(root, rel)
            if os.path.lexists(full):
                shutil.rmtree(full) if present[rel] == "d" else os.unlink(full)
    for rel in sorted(tree, key=depth):
        node, full = tree[rel], os.path.join(root, rel)
        if node[0] == "d":
            os.makedirs(full, exist_ok=True)
        else:
            data = b"%d" % node[1]
            if not os.path.exists(full) or read(full) != data:
                with open(full, "wb") as f:
                    f.write(data)
        os.chmod(full, node[-1])


def snapshot(top: bytes) -> dict[bytes, tuple]:
    out: dict[bytes, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st_ = os.lstat(full)
            body = read(full) if stat.S_ISREG(st_.st_mode) else b""
            out[os.path.relpath(full, top)] = (kind(st_.st_mode), stat.S_IMODE(st_.st_mode), body)
    return out


@settings(
    max_examples=int(os.environ.get("REPLAY_EXAMPLES", "50")),  # raise for a longer search
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    start=OPS,
    ops=LONG_OPS,
    plan=st.lists(
        st.tuples(st.booleans(), st.booleans(), st.lists(st.integers(0, 2), max_size=6)),
        min_size=15,
        max_size=40,
    ),
)
def test_real_replay_with_faults_converges(start, ops, plan):
    """Ship at random moments with random per-action faults and random backoff
    expiry; a final clean drain leaves the mirror equal to the tree."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root, mirror = base / "root", base / "mirror"
        root.mkdir()
        fs = build(start)
        sync_real(os.fsencode(root), fs.tree)
        shutil.copytree(root, mirror)
        fs.records.clear()
        with Journal.open(base / "journal", root=str(root), tracks=[TRACK]) as journal:
            flaky = FlakyShipper(local.LocalShipper(LocalTarget(TRACK, mirror), root))
            clock = Clock()
            replayer = Replayer(journal, flaky, root, settle_s=0.0, clock=clock, rng=random.Random(5))
            steps = iter(plan)
            for op in ops:
                run_op(fs, journal, os.fsencode(root), op)
                ship_now, expire, fates = next(steps, (False, False, []))
                if ship_now:
                    flaky.fates = list(fates)
                    replayer.step()
                    clock.now += 1000.0 if expire else 0.1
            flaky.fates = []
            clock.now += 1000.0
            for _ in range(10):
                report = replayer.step()
                if report.idle and report.wait_s is None:
                    break
                clock.now += report.wait_s or 0.0
            assert journal.pending(TRACK) == []
        assert snapshot(os.fsencode(mirror)) == snapshot(os.fsencode(root))


def run_op(fs: ModelFS, journal: Journal, root: bytes, op: tuple[str, int, int, bool]) -> None:
    first = len(fs.records)
    fs.apply(*op)
    sync_real(root, fs.tree)
    if len(fs.records) > first:
        journal.append([r.entry for r in fs.records[first:]])
