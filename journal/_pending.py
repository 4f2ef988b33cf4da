"""Per-track pending sets stored as seq ranges.

The ``pend`` database maps ``track \\0 start`` to ``end`` (both u64 big-endian):
every seq in ``start..end`` is pending for the track. An append costs one
record per track whatever the batch size (and usually extends the last range
in place); marking seqs done splits or trims the ranges they fall in.
Ranges of one track never overlap and are kept in key (= seq) order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import lmdb

from .codec import decode_seq, encode_seq

__all__ = ["add_range", "remove_seqs", "ranges_from", "first_pending", "runs"]


def _at(cur: lmdb.Cursor, prefix: bytes) -> tuple[int, int] | None:
    """The cursor's range, if it belongs to ``prefix``."""
    key = cur.key()
    if not key.startswith(prefix) or len(key) != len(prefix) + 8:
        return None
    return decode_seq(key[len(prefix) :]), decode_seq(cur.value())


def _covering(cur: lmdb.Cursor, prefix: bytes, seq: int) -> tuple[int, int] | None:
    """The range of ``prefix`` with the greatest start <= ``seq``, if any."""
    found = cur.set_range(prefix + encode_seq(seq))
    if found:
        here = _at(cur, prefix)
        if here is not None and here[0] == seq:
            return here
        if not cur.prev():
            return None
    elif not cur.last():
        return None
    return _at(cur, prefix)


def add_range(txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes, first: int, last: int) -> None:
    """Make ``first..last`` pending; they must be newer than every pending seq."""
    cur = txn.cursor(db=db)
    prev = _covering(cur, prefix, first)
    if prev is not None and prev[1] == first - 1:
        cur.put(prefix + encode_seq(prev[0]), encode_seq(last))
    else:
        cur.put(prefix + encode_seq(first), encode_seq(last))


def runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted distinct seqs as inclusive runs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] == s - 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def remove_seqs(txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes, seqs: Iterable[int]) -> list[int]:
    """Remove ``seqs`` from the pending set; return those that were pending, sorted."""
    cur = txn.cursor(db=db)
    removed: list[int] = []
    for a, b in runs(seqs):
        for s, e in _overlapping(cur, prefix, a, b):
            lo, hi = max(s, a), min(e, b)
            removed.extend(range(lo, hi + 1))
            txn.delete(prefix + encode_seq(s), db=db)
            if s < lo:
                txn.put(prefix + encode_seq(s), encode_seq(lo - 1), db=db)
            if e > hi:
                txn.put(prefix + encode_seq(hi + 1), encode_seq(e), db=db)
    return removed


def _overlapping(cur: lmdb.Cursor, prefix: bytes, a: int, b: int) -> list[tuple[int, int]]:
    """Ranges of ``prefix`` that share a seq with ``a..b``, collected before any change."""
    out = []
    for s, e in _ranges_after(cur, prefix, a):
        if s > b:
            break
        out.append((s, e))
    return out


def _ranges_after(cur: lmdb.Cursor, prefix: bytes, seq: int) -> Iterator[tuple[int, int]]:
    """Ranges of ``prefix`` ending at or after ``seq``, in order, unclipped."""
    covering = _covering(cur, prefix, seq)
    if not cur.set_range(prefix + encode_seq(covering[0] if covering else seq)):
        return
    while (here := _at(cur, prefix)) is not None:
        if here[1] >= seq:
            yield here
        if not cur.next():
            return


def ranges_from(
    txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes, seq: int
) -> Iterator[tuple[int, int]]:
    """Pending ranges of the track clipped to seqs >= ``seq``, in order."""
    for s, e in _ranges_after(txn.cursor(db=db), prefix, seq):
        yield max(s, seq), e


def first_pending(txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes) -> int | None:
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return None
    here = _at(cur, prefix)
    return here[0] if here else None
