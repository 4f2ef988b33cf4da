"""Which names of a hard-linked file are journaled again after one is shipped."""

from __future__ import annotations

from agent.ship.links import WHOLE_MAX, other_names
from journal import FileKind, FileState


def state(inode: int, mtime: int, nlink: int = 2) -> FileState:
    return FileState(FileKind.FILE, 3, 0o644, 0, 0, mtime, mtime, inode, b"d", b"", nlink)


NEW, OLD = state(7, 2), state(7, 1)


def test_a_stale_name_travels_with_the_shipped_one() -> None:
    assert other_names({b"d/b": NEW}, {7: {b"a": OLD, b"d/b": OLD}}) == [b"a", b"d/b"]


def test_current_or_shipped_names_trigger_nothing() -> None:
    """Convergence: once every name holds the shipped state, nothing is re-sent."""
    assert other_names({b"d/b": NEW}, {7: {b"a": NEW, b"d/b": OLD}}) == []
    assert other_names({b"a": NEW, b"d/b": NEW}, {7: {b"a": OLD, b"d/b": OLD}}) == []


def test_a_busy_name_never_makes_the_group_circle() -> None:
    """A name in the plan or failing (held back) has its own entry: the
    others are not re-sent on its account, so a failing name cannot loop."""
    assert other_names({b"a": NEW}, {7: {b"a": NEW, b"bad": OLD}}, busy=lambda p: p == b"bad") == []


def test_whole_groups_travel_even_when_current_up_to_a_size() -> None:
    assert other_names({b"a": NEW}, {7: {b"a": OLD, b"b": NEW}}, whole=True) == [b"a", b"b"]
    assert other_names({b"a": NEW}, {7: {b"a": OLD, b"b": NEW}}) == []
    big = {b"n%d" % i: NEW for i in range(WHOLE_MAX + 1)}
    assert other_names({b"a": NEW}, {7: big}, whole=True) == []
