"""Compaction: removing old entries that every track has finished."""

from __future__ import annotations

import lmdb

from . import _pending
from ._layout import PAIR, Dbs, decode_tracks, index_paths, track_prefix
from .codec import decode_entry, decode_seq

__all__ = ["compact_chunk", "min_pending_seq"]


def compact_chunk(txn: lmdb.Transaction, dbs: Dbs, horizon: int, chunk: int) -> int:
    """Remove up to ``chunk`` of the oldest entries that are older than
    ``horizon`` and below every track's lowest pending seq; stop at the first
    entry that must stay. Records the newest removed (seq, time) in meta."""
    floor = min_pending_seq(txn, dbs)
    cur = txn.cursor(db=dbs["log"])
    latest = dbs["latest"]
    removed = 0
    last: tuple[int, int] | None = None
    while removed < chunk and cur.first():
        key = cur.key()
        seq = decode_seq(key)
        entry = decode_entry(cur.value())
        if (floor is not None and seq >= floor) or entry.time_ns >= horizon:
            break
        for pk in index_paths([entry])[0]:
            if txn.get(pk, db=latest) == key:
                txn.delete(pk, db=latest)
        cur.delete()
        removed += 1
        last = (seq, entry.time_ns)
    if last:
        txn.put(b"compacted", PAIR.pack(*last), db=dbs["meta"])
    return removed


def min_pending_seq(txn: lmdb.Transaction, dbs: Dbs) -> int | None:
    """Lowest seq still pending for any track (dead letters keep a copy of
    their entry, so they do not hold compaction back)."""
    tracks = decode_tracks(txn.get(b"tracks", db=dbs["meta"]))
    lows = [_pending.first_pending(txn, dbs["pend"], track_prefix(t)) for t in tracks]
    return min((low for low in lows if low is not None), default=None)
