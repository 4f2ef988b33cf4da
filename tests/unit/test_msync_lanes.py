"""Lanes of the msync shipper: which paths may go out in msync calls running
at once, and that a plan of scattered files does."""

from __future__ import annotations

import os
from pathlib import Path

from agent.operate.config import MsyncTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome
from agent.ship.msync.jobs import lane_of, lane_roots
from agent.ship.msync.shipper import MsyncShipper
from tests.doubles.fixtures import make_double

OLD = 1_700_000_000


def test_paths_in_ancestor_relation_share_a_root() -> None:
    """A directory and what lies below it keep their plan order (one lane);
    paths in disjoint subtrees do not depend on each other."""
    paths = [b"top/d1/f", b"top/d2/f", b"new", b"new/sub/f", b"new/g", b"x/y", b"x", b"z"]
    assert lane_roots(paths) == [b"top/d1/f", b"top/d2/f", b"new", b"new", b"new", b"x", b"x", b"z"]
    assert lane_roots([b"a/b", b"", b"c"]) == [b"", b"", b""]  # the root holds everything
    assert lane_roots([b"ab/c", b"a"]) == [b"ab/c", b"a"]  # components, not byte prefixes


def test_roots_are_spread_over_lanes_by_weight_keeping_roots_whole() -> None:
    roots = [b"a", b"b", b"a", b"c", b"d", b"e"]
    weights = [5, 1, 5, 1, 1, 1]
    lanes = lane_of(roots, weights, 2)
    assert lanes[0] == lanes[2]  # one root, one lane
    assert sum(w for w, lane in zip(weights, lanes) if lane == lanes[0]) == 10
    assert {lane for lane in lanes} == {0, 1}
    assert lane_of(roots, weights, 1) == [0] * 6


def test_scattered_files_under_one_directory_go_out_in_calls_at_once(tmp_path: Path) -> None:
    """One file rewritten in each of many directories below one top
    directory: the calls run side by side (makuosan pipelines the files of
    concurrent calls, docs/msync.md §8), every member still answers per file."""
    root = tmp_path / "root"
    console = f"unix:{tmp_path / 'mk1.sock'}"  # no 40 ms per answering exchange
    dbl = make_double(tmp_path / "dbl", base=root, jail=tmp_path, listening=[console])
    paths = []
    for d in range(120):
        for name in (b"f", b"g", b"h"):  # g and h unchanged: no recursive send carries the directory
            rel = b"top/d%03d/%s" % (d, name)
            full = os.path.join(os.fsencode(root), rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(b"v%d" % d)
            os.utime(full, (OLD, OLD))
        paths.append(b"top/d%03d/f" % d)
    dbl.update(time_scale=10.0)  # 30 files: about 0.4 s per call
    target = MsyncTarget(
        name="c", members=("mk2", "mk3"), console=console, msync=str(dbl.msync), base=root, batch=30
    )
    plan = Plan(tuple(Action(ActionKind.PUT, p) for p in paths))
    results = MsyncShipper(target, root, env=dbl.env()).ship(plan)
    assert {r.outcome for r in results} == {Outcome.OK} and len(results) == 240
    sends = [(s, e) for s, e, argv in dbl.spans() if argv[2:4] == [b"-l", b"2"]]
    assert len(sends) == 4
    assert max(s for s, _ in sends) < min(e for _, e in sends), "the four calls never ran at once"
