"""Which captured states the manifest may take (pure).

The manifest is the one record of what was shipped, shared by every track,
and a scan finds lost changes only as differences from it. A ship captures
the path as it is *now*, which may already include a change whose event the
journal does not hold: still on its way, or lost to an overflow or a kill.
If the manifest took that state, the scan that follows the loss would see
no difference, and a track that shipped the path earlier would keep the old
state for ever (a path moved away stays on that mirror). So the manifest
takes a captured state only when the journal explains it: a path found gone
needs a removal among the entries shipped (a DELETE or a move away of it or
of a directory above it); a file or link found present must not have changed
(ctime) after the newest of those entries at it or above it. A directory's
ctime moves with every entry made or removed inside it, each journaled on its
own, so a directory found present is always taken. Otherwise the
manifest keeps what it had, and the replayer journals the path again for
every track (a duplicate if the event was only on its way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from journal import FileKind, FileState, Op, Record

__all__ = ["unexplained"]


def _ancestors(path: bytes) -> Iterable[bytes]:
    while b"/" in path:
        path = path.rpartition(b"/")[0]
        yield path
    if path:
        yield b""


def unexplained(
    records: Iterable[Record], states: Mapping[bytes, FileState | None], now_ns: int
) -> set[bytes]:
    """Paths of ``states`` whose captured state the shipped ``records`` do
    not explain. A ctime in the future (a clock stepped back) counts as
    explained: no later entry could ever explain it; so do entries without a
    time (only hand-made ones)."""
    exact: dict[bytes, int] = {}  # newest entry time at a path
    below: dict[bytes, int] = {}  # newest entry time at a path or anywhere below it
    removed: set[bytes] = set()  # paths a DELETE or a move took away
    for record in records:
        e = record.entry
        if e.op == Op.RESCAN:
            continue  # a marker that a scan follows, not a statement about any path
        for path in (e.path, e.dest) if e.op == Op.MOVE else (e.path,):
            exact[path] = max(exact.get(path, 0), e.time_ns)
            for at in (path, *_ancestors(path)):
                below[at] = max(below.get(at, 0), e.time_ns)
        if e.op in (Op.DELETE, Op.MOVE):
            removed.add(e.path)
    out = set()
    for path, state in states.items():
        above = list(_ancestors(path))
        if state is None:
            if path not in removed and not removed.intersection(above):
                out.add(path)
            continue
        if state.kind == FileKind.DIR:
            continue  # its ctime moves with every entry made or removed inside, journaled on their own
        newest = max([below.get(path, 0), *(exact.get(a, 0) for a in above)])
        if 0 < newest < state.ctime_ns <= now_ns:  # 0: entries without a time say nothing
            out.add(path)
    return out
