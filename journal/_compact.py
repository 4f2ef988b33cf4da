"""Compaction: removing old entries that every track has finished."""

from __future__ import annotations

import lmdb

from . import _log, _pending
from ._layout import PAIR, Dbs, decode_tracks, track_prefix
from .types import Entry

__all__ = ["compact_chunk", "min_pending_seq"]


def compact_chunk(txn: lmdb.Transaction, dbs: Dbs, horizon: int, chunk: int) -> int:
    """Remove up to ``chunk`` of the oldest entries that are older than
    ``horizon`` and below every track's lowest pending seq; stop at the first
    entry that must stay. Records the newest removed (seq, time) in meta."""
    floor = min_pending_seq(txn, dbs)

    def keep(seq: int, entry: Entry) -> bool:
        return (floor is not None and seq >= floor) or entry.time_ns >= horizon

    cuts = _log.take_head(txn, dbs["log"], keep, chunk)
    if cuts:
        last = cuts[-1]
        seq = last.first + len(last.removed) - 1
        txn.put(b"compacted", PAIR.pack(seq, last.removed[-1].time_ns), db=dbs["meta"])
    return sum(len(cut.removed) for cut in cuts)


def min_pending_seq(txn: lmdb.Transaction, dbs: Dbs) -> int | None:
    """Lowest seq still pending for any track (dead letters keep a copy of
    their entry, so they do not hold compaction back)."""
    tracks = decode_tracks(txn.get(b"tracks", db=dbs["meta"]))
    lows = [_pending.first_pending(txn, dbs["pend"], track_prefix(t)) for t in tracks]
    return min((low for low in lows if low is not None), default=None)
