"""The log database: entries stored as batch records.

A record is keyed by the seq of its first entry and holds up to
``MAX_RECORD_ENTRIES`` consecutive entries (``_records``). Storing a
batch as one record makes an append one B-tree insert instead of one per entry;
the cap keeps a record small enough that readers, which copy a record out of
its transaction, never copy megabytes to read a few entries.

The log is contiguous: seqs run without gaps from the first record's key to the
last entry of the last record. Appends add records at the end; compaction
removes entries from the head only (rewriting a record it cuts through).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lmdb

from ._records import decode_record, encode_record, record_count, record_entry
from .codec import decode_seq, encode_seq
from .errors import JournalCorrupt
from .types import Entry, Record

__all__ = [
    "MAX_RECORD_ENTRIES",
    "encode_batch",
    "put_batch",
    "Cut",
    "first_seq",
    "last_seq",
    "read",
    "entry_raw",
    "take_head",
]

MAX_RECORD_ENTRIES = 4096


def encode_batch(entries: list[Entry]) -> list[tuple[int, bytes]]:
    """The records for a batch: (index of its first entry in the batch, record)."""
    step = MAX_RECORD_ENTRIES
    return [(i, encode_record(entries[i : i + step])) for i in range(0, len(entries), step)]


def put_batch(
    txn: lmdb.Transaction, db: lmdb._Database, first: int, records: list[tuple[int, bytes]]
) -> None:
    """Store a batch's records at the end of the log, its first entry as seq ``first``."""
    for offset, raw in records:
        if not txn.put(encode_seq(first + offset), raw, db=db, append=True):
            raise JournalCorrupt(f"log already holds seq {first + offset}")


def first_seq(txn: lmdb.Transaction, db: lmdb._Database) -> int | None:
    cur = txn.cursor(db=db)
    return decode_seq(cur.key()) if cur.first() else None


def last_seq(txn: lmdb.Transaction, db: lmdb._Database) -> int | None:
    cur = txn.cursor(db=db)
    if not cur.last():
        return None
    return decode_seq(cur.key()) + record_count(cur.value()) - 1


def _seek(cur: lmdb.Cursor, seq: int) -> bool:
    """Put ``cur`` on the record holding ``seq``, else on the first record after
    it; False when there is none."""
    if cur.set_range(encode_seq(seq)):
        if decode_seq(cur.key()) == seq:
            return True
        if not cur.prev():
            return cur.first()
    elif not cur.last():
        return False
    if decode_seq(cur.key()) + record_count(cur.value()) > seq:
        return True
    return cur.next()


def read(txn: lmdb.Transaction, db: lmdb._Database, seq: int, limit: int) -> list[Record]:
    """Up to ``limit`` consecutive records from ``seq`` on (or from the first
    entry after it, when ``seq`` is not in the log), in seq order."""
    cur = txn.cursor(db=db)
    out: list[Record] = []
    if limit <= 0 or not _seek(cur, seq):
        return out
    while len(out) < limit:
        first = decode_seq(cur.key())
        skip = max(0, seq - first)
        if out and first != out[-1].seq + 1:
            raise JournalCorrupt(f"log has a gap after seq {out[-1].seq}")
        entries = decode_record(cur.value(), skip, limit - len(out))
        out.extend(Record(first + skip + i, e) for i, e in enumerate(entries))
        if not cur.next():
            break
    return out


def entry_raw(txn: lmdb.Transaction, db: lmdb._Database, seq: int) -> bytes | None:
    """The encoded entry ``seq``, or None when the log does not hold it."""
    cur = txn.cursor(db=db)
    if not _seek(cur, seq):
        return None
    first = decode_seq(cur.key())
    if first > seq:
        return None
    return record_entry(cur.value(), seq - first)


@dataclass(frozen=True, slots=True)
class Cut:
    """What compaction took from one record: its head ``removed``; the tail
    ``kept`` (if any) now sits in a record keyed ``first + len(removed)``."""

    first: int
    removed: list[Entry]
    kept: list[Entry]


def take_head(
    txn: lmdb.Transaction, db: lmdb._Database, keep: Callable[[int, Entry], bool], limit: int
) -> list[Cut]:
    """Remove entries from the head of the log, oldest first, until ``keep``
    says one must stay or ``limit`` are removed.

    A record cut through is rewritten, keyed by its first remaining seq.
    """
    cur = txn.cursor(db=db)
    cuts: list[Cut] = []
    taken = 0
    while taken < limit and cur.first():
        first = decode_seq(cur.key())
        entries = decode_record(cur.value())
        n = 0
        while n < len(entries) and taken + n < limit and not keep(first + n, entries[n]):
            n += 1
        if n == 0:
            break
        cuts.append(Cut(first, entries[:n], entries[n:]))
        taken += n
        cur.delete()
        if n < len(entries):
            txn.put(encode_seq(first + n), encode_record(entries[n:]), db=db)
            break
    return cuts
