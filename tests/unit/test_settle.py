"""The adaptive settle decision (agent/ship/settle.py): a quiet path ships at once,
a path (or a directory's subtree) still changing waits, never longer than the
cap, and what ships is always a prefix of every path's history."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.ship.planner import build_plan
from agent.ship.settle import changing_paths, split
from journal import IS_DIR, Entry, Op, Record
from tests.unit.test_planner import OPS, SETTINGS, build, check_order, done_seqs, ship

MS = 1_000_000
CAP = 200 * MS


def rec(seq: int, op: Op, path: bytes, t_ms: int, dest: bytes = b"", dir_: bool = False) -> Record:
    return Record(seq, Entry(op, path, dest, t_ms * MS, IS_DIR if dir_ else 0))


def seqs(records: list[Record]) -> list[int]:
    return [r.seq for r in records]


def test_quiet_paths_ship_at_once():
    """Nothing younger touches them: everything ships, nothing is due."""
    records = [rec(1, Op.CHANGE, b"a", 0), rec(2, Op.CHANGE, b"d/b", 1), rec(3, Op.DELETE, b"c", 2)]
    out = split(records, changing_paths([rec(4, Op.CHANGE, b"other", 30)]), 30 * MS, CAP)
    assert seqs(out.ship) == [1, 2, 3] and out.wait == [] and out.due_ns is None


def test_a_path_still_changing_waits_others_go():
    """A younger record of the same path holds its older ones back until the
    cap, counted from the path's oldest record; other paths are not held."""
    records = [rec(1, Op.CHANGE, b"log", 0), rec(2, Op.CHANGE, b"quiet", 5), rec(3, Op.CHANGE, b"log", 10)]
    young = [rec(4, Op.CHANGE, b"log", 45)]
    out = split(records, changing_paths(young), 50 * MS, CAP)
    assert seqs(out.ship) == [2] and seqs(out.wait) == [1, 3]
    assert out.due_ns == CAP  # the oldest record of "log" was at t=0


def test_the_cap_ends_the_wait():
    """At the cap a path still changing ships every record taken so far."""
    records = [rec(1, Op.CHANGE, b"log", 0), rec(2, Op.CHANGE, b"log", 150)]
    out = split(records, {b"log"}, 200 * MS, CAP)
    assert seqs(out.ship) == [1, 2] and out.due_ns is None


def test_a_directory_still_filling_waits_with_its_entries():
    """A new directory whose entries keep arriving waits, and its entries
    wait with it (parents before children); its neighbours do not."""
    records = [
        rec(1, Op.CHANGE, b"new", 0, dir_=True),
        rec(2, Op.CHANGE, b"new/a", 1),
        rec(3, Op.CHANGE, b"old/x", 2),
        rec(4, Op.CHANGE, b"new/sub/b", 3),
    ]
    out = split(records, changing_paths([rec(5, Op.CHANGE, b"new/c", 40)]), 40 * MS, CAP)
    assert seqs(out.ship) == [3] and seqs(out.wait) == [1, 2, 4]


def test_files_of_a_busy_directory_are_not_held():
    """Only the path itself, not its siblings, has to be quiet for a file."""
    records = [rec(i, Op.CHANGE, b"d/f%d" % i, i) for i in range(1, 20)]
    young = [rec(i, Op.CHANGE, b"d/f%d" % i, i) for i in range(20, 40)]
    out = split(records, changing_paths(young), 40 * MS, CAP)
    assert seqs(out.ship) == list(range(1, 20))


def test_a_waiting_move_holds_both_names():
    """A move whose destination is still changing waits, and so does later
    history of its source and destination."""
    records = [
        rec(1, Op.MOVE, b"tmp", 0, dest=b"final"),
        rec(2, Op.CHANGE, b"tmp", 1),
        rec(3, Op.CHANGE, b"z", 2),
    ]
    out = split(records, {b"final"}, 30 * MS, CAP)
    assert seqs(out.ship) == [3] and seqs(out.wait) == [1, 2]


def test_the_root_is_never_changing():
    """A RESCAN (the root) ships at once whatever changes below."""
    assert changing_paths([rec(1, Op.CHANGE, b"a/b", 0)]) == {b"a", b"a/b"}
    out = split([rec(1, Op.RESCAN, b"", 0)], changing_paths([rec(2, Op.CHANGE, b"a", 30)]), 30 * MS, CAP)
    assert seqs(out.ship) == [1]


@SETTINGS
@given(
    start=OPS,
    ops=OPS,
    rounds=st.lists(st.tuples(st.sets(st.integers(0, 80)), st.integers(0, 400)), max_size=6),
)
def test_rounds_of_partial_settles_reproduce_the_source(start, ops, rounds):
    """Whatever is still changing in each round (any set of records' paths
    and their directories) and however old the records are, every PUT finds
    its parent, nothing is marked done out of order, and a last quiet round
    brings the mirror to the source."""
    fs = build(start)
    fs.records.clear()
    mirror = dict(fs.tree)
    build(ops, fs)
    pending = [
        Record(r.seq, Entry(r.entry.op, r.entry.path, r.entry.dest, r.seq * MS, r.entry.flags))
        for r in fs.records
    ]
    for picks, now_ms in rounds:
        young = [r for i, r in enumerate(fs.records) if i in picks]
        out = split(pending, changing_paths(young), now_ms * MS, CAP)
        assert sorted(seqs(out.ship) + seqs(out.wait)) == seqs(pending)
        plan, completions = build_plan({"t": out.ship})
        check_order(plan)
        ok = ship({"t": mirror}, plan, fs.tree)
        assert all(ok.values()), f"a PUT found no parent: {ok}"
        done = done_seqs(completions, ok, "t")
        pending = [r for r in pending if r.seq not in done]
    out = split(pending, set(), 0, CAP)
    assert out.wait == []
    ship({"t": mirror}, build_plan({"t": out.ship})[0], fs.tree)
    assert mirror == fs.tree
