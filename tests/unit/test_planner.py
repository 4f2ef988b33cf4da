"""The planner against a model: random operations on a model filesystem, the
journal entries the watcher would write for them, and a model mirror that
applies plans. Whatever the history, the mirror must end up equal to the
source, also when plans are shipped in pieces, partly fail, or wait behind
backed-off paths."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.planner import Selection, build_plan, coalesce, depth, parent, resolve
from journal import IS_DIR, Entry, Op, Record

NAMES = (b"a", b"-b", b"\xff\n")
KINDS = ("write", "write", "mkdir", "mkdir", "chmod", "rm", "rename", "rename", "moveout", "movein")
Node = tuple  # ("d", mode) or ("f", content, mode)
Tree = dict[bytes, Node]

OPS = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 999), st.integers(0, 999), st.booleans()),
    max_size=40,
)
EXAMPLES = int(os.environ.get("PLANNER_EXAMPLES", "300"))  # raise for a longer search
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ model filesystem
def under(path: bytes, top: bytes) -> bool:
    return path.startswith(top + b"/")


def subtree(tree: Tree, top: bytes) -> list[bytes]:
    return sorted((p for p in tree if p == top or under(p, top)), key=depth)


def remove(tree: Tree, top: bytes) -> None:
    for p in subtree(tree, top):
        del tree[p]


def is_dir(tree: Tree, path: bytes) -> bool:
    return path == b"" or tree.get(path, ("x",))[0] == "d"


@dataclass
class ModelFS:
    """A source tree that turns operations into the entries the watcher journals."""

    tree: Tree = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    counter: int = 0

    def emit(self, op: Op, path: bytes, dest: bytes = b"", dir_: bool = False) -> None:
        self.records.append(Record(len(self.records) + 1, Entry(op, path, dest, 0, IS_DIR if dir_ else 0)))

    def absent(self) -> list[bytes]:
        dirs = [b"", *sorted(p for p in self.tree if is_dir(self.tree, p) and depth(p) < 4)]
        return [
            d + b"/" + n if d else n
            for d in dirs
            for n in NAMES
            if (d + b"/" + n if d else n) not in self.tree
        ]

    def apply(self, kind: str, i: int, j: int, flag: bool) -> None:
        getattr(self, "op_" + kind)(i, j, flag)

    def op_write(self, i: int, j: int, flag: bool) -> None:
        spots = sorted(p for p in self.tree if not is_dir(self.tree, p)) + self.absent()
        if spots:
            p = spots[i % len(spots)]
            self.counter += 1
            self.tree[p] = ("f", self.counter, self.tree.get(p, ("f", 0, 0o644))[2])
            self.emit(Op.CHANGE, p)

    def op_mkdir(self, i: int, j: int, flag: bool) -> None:
        spots = self.absent()
        if spots:
            p = spots[i % len(spots)]
            self.tree[p] = ("d", 0o755)
            self.emit(Op.CHANGE, p, dir_=True)

    def op_chmod(self, i: int, j: int, flag: bool) -> None:
        paths = sorted(self.tree)
        if paths:
            p = paths[i % len(paths)]
            node = self.tree[p]
            self.tree[p] = (*node[:-1], node[-1] ^ 0o111)
            self.emit(Op.ATTR, p, dir_=node[0] == "d")

    def op_rm(self, i: int, j: int, flag: bool) -> None:
        paths = sorted(self.tree)
        if paths:
            for p in reversed(subtree(self.tree, paths[i % len(paths)])):  # rm -r: children first
                self.emit(Op.DELETE, p, dir_=is_dir(self.tree, p))
                del self.tree[p]

    def op_moveout(self, i: int, j: int, flag: bool) -> None:
        paths = sorted(self.tree)
        if paths:
            p = paths[i % len(paths)]
            self.emit(Op.DELETE, p, dir_=is_dir(self.tree, p))
            remove(self.tree, p)

    def op_movein(self, i: int, j: int, flag: bool) -> None:
        spots = self.absent()
        if not spots:
            return
        p = spots[i % len(spots)]
        self.counter += 1
        if not flag:
            self.tree[p] = ("f", self.counter, 0o600)
            self.emit(Op.CHANGE, p)
            return
        self.tree[p] = ("d", 0o700)
        self.emit(Op.CHANGE, p, dir_=True)
        for name in NAMES[: 1 + j % len(NAMES)]:  # the scan of the new directory
            self.tree[p + b"/" + name] = ("f", self.counter, 0o600)
            self.emit(Op.CHANGE, p + b"/" + name)

    def op_rename(self, i: int, j: int, flag: bool) -> None:
        paths = sorted(self.tree)
        if not paths:
            return
        src = paths[i % len(paths)]
        src_dir = is_dir(self.tree, src)
        same_kind = [
            p
            for p in paths
            if is_dir(self.tree, p) == src_dir and not (src_dir and subtree(self.tree, p)[1:])
        ]
        spots = [p for p in self.absent() + same_kind if p != src and not under(p, src) and not under(src, p)]
        if not spots:
            return
        dst = spots[j % len(spots)]
        moved = {dst + p[len(src) :]: self.tree[p] for p in subtree(self.tree, src)}
        remove(self.tree, src)
        remove(self.tree, dst)
        self.tree.update(moved)
        self.emit(Op.MOVE, src, dst, dir_=src_dir)


def build(ops: Iterable[tuple[str, int, int, bool]], fs: ModelFS | None = None) -> ModelFS:
    fs = fs or ModelFS()
    for op in ops:
        fs.apply(*op)
    return fs


# ------------------------------------------------------------------ model mirror
def apply_action(mirror: Tree, action: Action, source: Mapping[bytes, Node]) -> bool:
    """What a shipper does; False when it cannot (PUT under a missing parent).
    A recursive PUT copies the subtree but does not remove extra mirror entries."""
    p = action.path
    if action.kind == ActionKind.DELETE or p not in source:
        remove(mirror, p)
        return True
    if not is_dir(mirror, parent(p)):
        return False
    node = source[p]
    if node[0] == "f" or not is_dir(mirror, p):
        remove(mirror, p)
    mirror[p] = node
    if action.recursive:
        for q in subtree(dict(source), p):
            mirror[q] = source[q]
    return True


def ship(
    mirrors: Mapping[str, Tree], plan: Plan, source: Mapping[bytes, Node], fate: Iterable[int] = ()
) -> dict[tuple[str, bytes], bool]:
    """Apply ``plan`` to each track's mirror; ``fate`` scripts failures (0: ok,
    1: failed and not applied, 2: failed after applying). Returns ok per key."""
    fates = iter(fate)
    ok: dict[tuple[str, bytes], bool] = {}
    for action in plan.actions:
        for track in sorted(action.tracks):
            f = next(fates, 0)
            applied = f != 1 and apply_action(mirrors[track], action, source)
            ok[(track, action.path)] = ok.get((track, action.path), True) and f == 0 and applied
    return ok


def done_seqs(completions: Mapping, ok: Mapping[tuple[str, bytes], bool], track: str) -> set[int]:
    return set(resolve(completions, track, {k for k, good in ok.items() if not good}, {})[0])


def check_coverage(per_track: Mapping[str, Sequence[Record]], plan: Plan, completions: Mapping) -> None:
    for track, records in per_track.items():
        listed = {s for (t, _), rule in completions.items() if t == track for s in rule.seqs}
        assert {s for (t, _), rule in completions.items() if t == track for s in rule.after} <= listed
        assert listed == {r.seq for r in records}
    every = {r.seq for records in per_track.values() for r in records}
    for action in plan.actions:
        assert set(action.seqs) <= every and action.tracks <= set(per_track)


def check_order(plan: Plan) -> None:
    kinds = [a.kind for a in plan.actions]
    assert kinds == sorted(kinds, key=lambda k: k != ActionKind.DELETE), "deletes come first"
    deletes = [depth(a.path) for a in plan.actions if a.kind == ActionKind.DELETE]
    puts = [depth(a.path) for a in plan.actions if a.kind == ActionKind.PUT]
    assert deletes == sorted(deletes, reverse=True) and puts == sorted(puts)
    assert len({(a.kind, a.path) for a in plan.actions}) == len(plan.actions)


# ------------------------------------------------------------------ properties
@SETTINGS
@given(start=OPS, ops=OPS, cuts=st.lists(st.integers(0, 60), max_size=4), lags=st.lists(st.integers(0, 60)))
def test_plans_shipped_in_pieces_reproduce_the_source(start, ops, cuts, lags):
    """Ship the history in consecutive pieces, each at some later moment of the
    source: the mirror ends equal to the source, every PUT finds its parent."""
    fs = build(start)
    fs.records.clear()
    mirror = dict(fs.tree)
    snapshots, counts = [dict(fs.tree)], [0]
    for op in ops:
        fs.apply(*op)
        snapshots.append(dict(fs.tree))
        counts.append(len(fs.records))
    ends = sorted({min(c, len(fs.records)) for c in cuts} | {len(fs.records)})
    begin, when = 0, 0
    for i, end in enumerate(ends):
        chunk = fs.records[begin:end]
        journaled = next(n for n, c in enumerate(counts) if c >= end)  # the chunk exists from here on
        when = min(len(snapshots) - 1, max(when, journaled) + (lags[i] if i < len(lags) else 0))
        plan, completions = build_plan({"t": chunk})
        check_coverage({"t": chunk}, plan, completions)
        check_order(plan)
        ok = ship({"t": mirror}, plan, snapshots[when])
        assert all(ok.values()), f"a PUT found no parent: {ok}"
        begin = end
    ok = ship({"t": mirror}, build_plan({"t": []})[0], fs.tree)
    assert mirror == fs.tree


@SETTINGS
@given(
    start=OPS,
    rounds=st.lists(
        st.tuples(
            OPS,
            st.lists(st.integers(0, 2), max_size=30),  # per key: ok, failed, failed after applying
            st.integers(1, 40),  # batch limit
            st.one_of(st.just(-1), st.integers(0, 2**16 - 1)),  # which failing paths are still held
        ),
        max_size=5,
    ),
)
@example(  # a MOVE away pending behind a failed destination, after its path was re-created
    start=[],
    rounds=[([("write", 0, 0, False), ("rename", 0, 0, False), ("movein", 0, 0, True)], [1], 3, False)],
)
@example(  # a re-created child must wait for the older move away of its parent
    start=[],
    rounds=[
        (
            [("write", 0, 0, False)] * 7
            + [("movein", 1, 0, True), ("write", 62, 0, False), ("mkdir", 0, 0, False)]
            + [
                ("rm", 13, 0, False),
                ("moveout", 3, 0, False),
                ("rm", 236, 0, False),
                ("rename", 1, 1, False),
            ],
            [],
            14,
            False,
        ),
        ([("mkdir", 0, 0, False), ("write", 42, 0, False)], [1], 3, False),
        ([], [], 1, False),
    ],
)
@example(  # a directory moved in above a held removal must wait for it
    start=[],
    rounds=[
        (
            [
                *[("write", 176, 0, False), ("movein", 0, 20, True), ("mkdir", 0, 0, False)],
                *[("moveout", 272, 0, False), ("mkdir", 1, 0, False), ("rename", 3, 2, False)],
                *[("rename", 81, 0, False), ("rm", 1, 0, False)],
            ],
            [1],
            12,
            False,
        ),
        ([("rename", 0, 0, False)], [], 1, True),
    ],
)
@example(  # a removal folded into its parent's delete must not be overtaken below it
    start=[],
    rounds=[
        (
            [
                *[("mkdir", 74, 0, False), ("write", 1, 0, False), ("write", 697, 0, False)],
                *[("rename", 98, 0, False), ("moveout", 2, 0, False), ("rm", 1, 0, False)],
                *[("movein", 1, 1, True), ("rm", 222, 3, False), ("mkdir", 0, 0, False)],
                ("rm", 1, 0, False),
            ],
            [0, 0, 1],
            13,
            False,
        )
    ],
)
def test_partial_failures_and_backoff_never_lose_anything(start, rounds):
    """Two tracks, rounds of new events, random per-path failures (applied or
    not), any subset of the failing paths held back like the replayer's
    backoff does: one clean final round brings both mirrors to the source."""
    fs = build(start)
    fs.records.clear()
    mirrors = {"m1": dict(fs.tree), "m2": dict(fs.tree)}
    pending: dict[str, list[Record]] = {"m1": [], "m2": []}
    failing: dict[str, dict[bytes, bool]] = {"m1": {}, "m2": {}}  # the backoff table: path -> below
    for ops, fate, limit, mask in rounds:
        first = len(fs.records)
        build(ops, fs)
        for track in pending:
            pending[track] += fs.records[first:]
        taken = {}
        for track, recs in pending.items():
            held = sorted(failing[track].items())
            sel = Selection(
                {p: b for i, (p, b) in enumerate(held) if mask >> (i % 16) & 1}, limit=limit, ready_ns=1
            )
            sel.feed(recs)
            taken[track] = sel.taken
        plan, completions = build_plan(taken)
        check_coverage(taken, plan, completions)
        ok = ship(mirrors, plan, fs.tree, fate)
        deleting = {(t, a.path) for a in plan.actions if a.kind == ActionKind.DELETE for t in a.tracks}
        for track in pending:
            done = done_seqs(completions, ok, track)
            pending[track] = [r for r in pending[track] if r.seq not in done]
            for (t, p), good in ok.items():
                if t == track and good:
                    failing[track].pop(p, None)
                elif t == track:
                    failing[track][p] = (t, p) in deleting
    plan, completions = build_plan(pending)
    ok = ship(mirrors, plan, fs.tree)
    assert all(ok.values())
    for track in pending:
        assert done_seqs(completions, ok, track) == {r.seq for r in pending[track]}
        assert mirrors[track] == fs.tree, track


# ------------------------------------------------------------------ examples
def rec(seq: int, op: Op, path: bytes, dest: bytes = b"", dir_: bool = False, t: int = 0) -> Record:
    return Record(seq, Entry(op, path, dest, t, IS_DIR if dir_ else 0))


def summary(records: Sequence[Record]) -> list[tuple[str, bytes, bool]]:
    plan, _ = build_plan({"t": records})
    return [(a.kind.value, a.path, a.recursive) for a in plan.actions]


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([rec(1, Op.CHANGE, b"f"), rec(2, Op.ATTR, b"f")], [("put", b"f", False)]),
        ([rec(1, Op.CHANGE, b"f"), rec(2, Op.DELETE, b"f")], [("delete", b"f", False)]),
        ([rec(1, Op.DELETE, b"f"), rec(2, Op.CHANGE, b"f")], [("put", b"f", False)]),
        (
            [rec(1, Op.DELETE, b"d", dir_=True), rec(2, Op.CHANGE, b"d", dir_=True)],
            [("delete", b"d", False), ("put", b"d", False)],
        ),
        ([rec(1, Op.MOVE, b"a", b"b")], [("delete", b"a", False), ("put", b"b", False)]),
        (
            [rec(1, Op.DELETE, b"x"), rec(2, Op.CHANGE, b"x", dir_=True)],
            [("delete", b"x", False), ("put", b"x", False)],
        ),
        (
            [rec(1, Op.MOVE, b"a", b"b", dir_=True), rec(2, Op.CHANGE, b"b/x")],
            [("delete", b"a", False), ("delete", b"b", False), ("put", b"b", True), ("put", b"b/x", False)],
        ),
        (
            [rec(1, Op.CHANGE, b"d/x"), rec(2, Op.DELETE, b"d", dir_=True), rec(3, Op.CHANGE, b"d/y")],
            [("delete", b"d", False), ("put", b"d/y", False)],
        ),
        ([rec(1, Op.RESCAN, b"")], []),
        ([rec(1, Op.DELETE, b"")], []),
        (
            [
                rec(1, Op.DELETE, b"a/b/c"),
                rec(2, Op.DELETE, b"x"),
                rec(3, Op.CHANGE, b"p/q"),
                rec(4, Op.CHANGE, b"p"),
            ],
            [
                ("delete", b"a/b/c", False),
                ("delete", b"x", False),
                ("put", b"p", False),
                ("put", b"p/q", False),
            ],
        ),
    ],
)
def test_examples(records, expected):
    """Documented coalescing rules, one example each."""
    assert summary(records) == expected


def test_seqs_wait_for_moves_and_deletes_above_them():
    """A MOVE is done only with both ends; an entry below a directory delete of
    the same plan also waits for that delete; a RESCAN is done at once."""
    records = [
        rec(1, Op.DELETE, b"d", dir_=True),
        rec(2, Op.CHANGE, b"d", dir_=True),
        rec(3, Op.CHANGE, b"d/x"),
        rec(4, Op.MOVE, b"a", b"b"),
        rec(5, Op.RESCAN, b"r"),
    ]
    changes = {c.path: c for c in coalesce(records)}
    assert changes[b"d"].seqs == (1, 2) and changes[b"d/x"].seqs == (3,) and changes[b"d/x"].after == (1,)
    assert changes[b"a"].seqs == (4,) and changes[b"b"].seqs == (4,) and changes[b"a"].after == (4,)
    assert not changes[b"r"].delete and not changes[b"r"].put and changes[b"r"].seqs == (5,)
    _, completions = build_plan({"t": records})
    fails = {("t", b"d"): "boom"}
    assert resolve(completions, "t", {("t", b"d")}, fails) == ([4, 5], {1: "d: boom", 2: "d: boom"})
    assert resolve(completions, "t", {("t", b"b")}, {}) == ([1, 2, 3, 5], {})


def test_tracks_share_actions():
    """An action two tracks need is one action naming both; the rest name one."""
    plan, completions = build_plan(
        {"c/web2": [rec(1, Op.CHANGE, b"f"), rec(2, Op.CHANGE, b"g")], "c/web3": [rec(2, Op.CHANGE, b"g")]}
    )
    by_path = {a.path: a for a in plan.actions}
    assert by_path[b"g"].tracks == {"c/web2", "c/web3"} and by_path[b"f"].tracks == {"c/web2"}
    assert completions[("c/web3", b"g")].seqs == (2,) and ("c/web3", b"f") not in completions


def test_selection_holds_later_history_of_held_paths():
    """Held delete holds its subtree and whatever follows it there; a held
    put holds only its own path; a young entry ends the selection."""
    records = [
        rec(1, Op.CHANGE, b"d/new"),
        rec(2, Op.CHANGE, b"p/child"),
        rec(3, Op.MOVE, b"d/new", b"e"),
        rec(4, Op.CHANGE, b"e"),
        rec(5, Op.CHANGE, b"p"),
        rec(6, Op.CHANGE, b"z"),
        rec(7, Op.CHANGE, b"late", t=100),
        rec(8, Op.CHANGE, b"never"),
    ]
    sel = Selection({b"d": True, b"p": False}, limit=100, ready_ns=50)
    assert sel.feed(records)
    assert [r.seq for r in sel.taken] == [2, 6]
    assert sel.held == 4 and sel.young_ns == 100


def test_selection_limit():
    """At most ``limit`` records are taken, in seq order."""
    sel = Selection({}, limit=3, ready_ns=0)
    assert sel.feed([rec(i, Op.CHANGE, b"f%d" % i) for i in range(1, 10)])
    assert [r.seq for r in sel.taken] == [1, 2, 3] and sel.full


def test_a_subtree_change_of_a_directory_is_a_recursive_put() -> None:
    from journal import IS_DIR, SUBTREE

    plan, _ = build_plan({"t": [Record(1, Entry(Op.CHANGE, b"d", time_ns=1, flags=IS_DIR | SUBTREE))]})
    (action,) = plan.actions
    assert (action.kind, action.path, action.recursive) == (ActionKind.PUT, b"d", True)
    plan, _ = build_plan({"t": [Record(1, Entry(Op.CHANGE, b"d", time_ns=1, flags=IS_DIR))]})
    assert not plan.actions[0].recursive


def test_a_delete_after_a_subtree_change_leaves_only_the_delete() -> None:
    from journal import IS_DIR, SUBTREE

    records = [
        Record(1, Entry(Op.CHANGE, b"d", time_ns=1, flags=IS_DIR | SUBTREE)),
        Record(2, Entry(Op.DELETE, b"d", time_ns=2, flags=IS_DIR)),
    ]
    plan, _ = build_plan({"t": records})
    assert [(a.kind, a.path) for a in plan.actions] == [(ActionKind.DELETE, b"d")]


def test_a_removal_counts_from_its_own_entry() -> None:
    """``removed_at``: the newest entry that removed the path itself, not the
    oldest of the group (see journal/_manifest.py: removals drop only states
    recorded from older entries)."""
    changes = {
        c.path: c
        for c in coalesce(
            [
                rec(1, Op.CHANGE, b"f"),
                rec(2, Op.MOVE, b"f", b"g"),
                rec(3, Op.DELETE, b"d/x"),
                rec(4, Op.DELETE, b"d", dir_=True),
                rec(5, Op.DELETE, b"e"),
                rec(6, Op.CHANGE, b"e"),
                rec(7, Op.DELETE, b"e"),
            ]
        )
    }
    assert changes[b"f"].removed_at == 2
    assert changes[b"d"].removed_at == 4
    assert changes[b"e"].removed_at == 7
    assert changes[b"g"].removed_at == 0
