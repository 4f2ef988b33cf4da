"""Adaptive settle (pure): which selected records ship now, and which wait
because their path is still changing (docs/design.md §7.1).

A fixed settle delay makes every change wait, even the one that is already
final. Here a change waits only for its path to be quiet: the selection takes
what is older than the quiet delay (``quiet_ms``, tens of milliseconds), and
of that, :func:`split` holds back a record only while its path, or something
below it when it is a directory, was touched by a record younger than the
quiet delay (``changing``). Coalescing therefore happens exactly where changes
are still arriving; a path that is quiet ships at once.

Waiting is bounded: once a path's oldest pending record is ``cap_ns`` old
(``settle_ms``), its records ship whatever keeps arriving, so a path that never
stops changing is shipped at least that often, in its state at the time; its
later records ship once it goes quiet, so the final state always reaches the
mirror.

A waiting record holds its own paths (a directory: everything below it too),
so no later record overtakes one it depends on (:class:`agent.ship.planner.Holds`),
and what ships stays a prefix of each path's history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field

from agent.ship.planner import Holds, lineage, record_paths
from journal import Op, Record

__all__ = ["Split", "changing_paths", "split"]


@dataclass(slots=True)
class Split:
    ship: list[Record] = field(default_factory=list)
    wait: list[Record] = field(default_factory=list)
    due_ns: int | None = None  # when the first waiting record ships even if its path keeps changing


def changing_paths(young: Iterable[Record]) -> set[bytes]:
    """Paths touched by ``young`` records, and the directories above them
    (the root aside: it is never shipped, and never waits)."""
    out: set[bytes] = set()
    for rec in young:
        for path in record_paths(rec):
            for p in lineage(path):
                if not p or p in out:
                    break
                out.add(p)
    return out


def split(records: Sequence[Record], changing: Set[bytes], now_ns: int, cap_ns: int) -> Split:
    """Divide ``records`` (one track's selection, in seq order) into those to
    ship now and those to wait; see the module docstring."""
    out = Split()
    holds = Holds()
    first: dict[bytes, int] = {}  # path -> time_ns of its oldest record here
    for rec in records:
        paths = record_paths(rec)
        for p in paths:
            first.setdefault(p, rec.entry.time_ns)
        if holds.blocked(rec):
            out.wait.append(rec)
            holds.hold(rec)
            continue
        busy = [first[p] + cap_ns for p in paths if p in changing and now_ns - first[p] < cap_ns]
        if not busy:
            out.ship.append(rec)
            continue
        out.wait.append(rec)
        holds.hold(rec)
        if rec.entry.is_dir and rec.entry.op in (Op.CHANGE, Op.ATTR):
            holds.add(rec.entry.path, True)  # its entries wait for the directory
        due = min(busy)
        out.due_ns = due if out.due_ns is None else min(out.due_ns, due)
    return out
