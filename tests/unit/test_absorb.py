"""The manifest takes a captured state only when the shipped entries explain it."""

from __future__ import annotations

from agent.ship.absorb import unexplained
from journal import IS_DIR, Entry, FileKind, FileState, Op, Record

S = 10**9


def rec(seq: int, op: Op, path: bytes, t: int, dest: bytes = b"", flags: int = 0) -> Record:
    return Record(seq, Entry(op, path, dest=dest, time_ns=t * S, flags=flags))


def state(ctime: int, kind: FileKind = FileKind.FILE) -> FileState:
    return FileState(kind, ctime_ns=ctime * S)


def test_a_change_after_the_newest_entry_is_not_explained() -> None:
    records = [rec(1, Op.CHANGE, b"a", 10)]
    assert unexplained(records, {b"a": state(9)}, now_ns=100 * S) == set()
    assert unexplained(records, {b"a": state(11)}, now_ns=100 * S) == {b"a"}


def test_a_path_found_gone_needs_a_removal_at_or_above_it() -> None:
    assert unexplained([rec(1, Op.CHANGE, b"d/x", 10)], {b"d/x": None}, 100 * S) == {b"d/x"}
    assert unexplained([rec(1, Op.DELETE, b"d/x", 10)], {b"d/x": None}, 100 * S) == set()
    assert unexplained([rec(1, Op.DELETE, b"d", 10, flags=IS_DIR)], {b"d/x": None}, 100 * S) == set()
    moved = [rec(1, Op.MOVE, b"d", 10, dest=b"e", flags=IS_DIR)]
    assert unexplained(moved, {b"d/x": None, b"e/x": state(5)}, 100 * S) == set()


def test_entries_above_and_below_explain_a_directory_and_its_children() -> None:
    """A directory's ctime moves when entries inside change; a moved-in
    subtree is explained by the move above it."""
    records = [rec(1, Op.CHANGE, b"d", 10, flags=IS_DIR), rec(2, Op.CHANGE, b"d/f", 12)]
    assert unexplained(records, {b"d": state(11, FileKind.DIR), b"d/f": state(11)}, 100 * S) == set()
    assert unexplained(records, {b"d": state(99, FileKind.DIR)}, 100 * S) == set()  # a directory is taken
    assert unexplained(records, {b"d/g": state(9)}, 100 * S) == set()  # older than d's entry
    assert unexplained(records, {b"d/g": state(11)}, 100 * S) == {b"d/g"}  # a sibling explains nothing


def test_markers_explain_nothing_and_future_ctimes_are_taken() -> None:
    marker_and_change = [rec(1, Op.CHANGE, b"a", 10), rec(2, Op.RESCAN, b"", 50)]
    assert unexplained(marker_and_change, {b"a": state(20)}, 100 * S) == {b"a"}
    assert unexplained([rec(1, Op.CHANGE, b"a", 0)], {b"a": state(20)}, 100 * S) == set()  # no time known
    assert unexplained([rec(1, Op.CHANGE, b"a", 10)], {b"a": state(200)}, 100 * S) == set()
