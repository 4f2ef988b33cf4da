"""The write side of the journal (its read side is ``_reads``), inside an LMDB
write transaction: a batch's log records, pending ranges and counters, the
checkpoint, requeued dead letters; and folding acknowledged intake batches
into LMDB. Functions of a transaction, no state of their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence

import lmdb

from . import _log, _manifest, _pending
from ._intake import Batch
from ._layout import COUNT, PAIR, Dbs, count_key, decode_tracks, encode_tracks, track_prefix
from ._reads import DeadLetter
from ._records import record_count
from .codec import encode_seq
from .errors import JournalCorrupt
from .types import Entry, Op

__all__ = [
    "register",
    "resolve_tracks",
    "pick_tracks",
    "put_batch",
    "add_count",
    "set_checkpoint",
    "fold",
    "mark_done",
    "mark_dead",
    "requeue",
    "drop_dead",
]


def register(txn: lmdb.Transaction, dbs: Dbs, root: bytes | None, tracks: Iterable[str]) -> None:
    """A journal's identity, its root (when not set yet), and ``tracks`` added
    to the registered ones."""
    meta = dbs["meta"]
    if txn.get(b"agent_id", db=meta) is None:
        txn.put(b"agent_id", uuid.uuid4().hex.encode(), db=meta)
    if txn.get(b"root", db=meta) is None and root is not None:
        txn.put(b"root", root, db=meta)
    current = decode_tracks(txn.get(b"tracks", db=meta))
    txn.put(b"tracks", encode_tracks(current + [t for t in tracks if t not in current]), db=meta)


def resolve_tracks(txn: lmdb.Transaction, dbs: Dbs, requested: Iterable[str] | None) -> tuple[str, ...]:
    """The tracks a batch becomes pending for: every registered one by default;
    naming an unregistered track raises ValueError."""
    return pick_tracks(decode_tracks(txn.get(b"tracks", db=dbs["meta"])), requested)


def pick_tracks(known: Sequence[str], requested: Iterable[str] | None) -> tuple[str, ...]:
    """:func:`resolve_tracks` given the registered tracks ``known``."""
    if requested is None:
        return tuple(known)
    wanted = tuple(dict.fromkeys(requested))
    for t in wanted:
        track_prefix(t)  # raises ValueError on a malformed name
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"append for unregistered tracks {unknown}")
    return wanted


def put_batch(
    txn: lmdb.Transaction,
    dbs: Dbs,
    first: int,
    count: int,
    records: list[tuple[int, bytes]],
    tracks: Sequence[str],
) -> None:
    """Store a batch of ``count`` entries (encoded as ``records``) as seqs
    ``first``.. and make them pending for ``tracks``."""
    _log.put_batch(txn, dbs["log"], first, records)
    add_pending(txn, dbs, tracks, first, first + count - 1)


def add_pending(txn: lmdb.Transaction, dbs: Dbs, tracks: Iterable[str], first: int, last: int) -> None:
    """Make seqs ``first..last`` pending for ``tracks`` (newer than any pending
    seq): one range write and one counter update per track."""
    for track in tracks:
        _pending.add_range(txn, dbs["pend"], track_prefix(track), first, last)
        add_count(txn, dbs, track, last - first + 1)


def add_count(txn: lmdb.Transaction, dbs: Dbs, track: str, delta: int) -> None:
    key = count_key(track)
    raw = txn.get(key, db=dbs["meta"])
    txn.put(key, COUNT.pack((COUNT.unpack(raw)[0] if raw else 0) + delta), db=dbs["meta"])


def set_checkpoint(txn: lmdb.Transaction, dbs: Dbs, time_ns: int, seq: int) -> None:
    txn.put(b"checkpoint", PAIR.pack(time_ns, seq), db=dbs["meta"])


def fold(txn: lmdb.Transaction, dbs: Dbs, last: int, batches: Iterable[Batch]) -> int:
    """Write the intake batches newer than seq ``last`` (the log's end); returns
    the new end. Batches already in LMDB are skipped, so folding twice, or by
    two processes, is harmless.

    Consecutive batches pending for the same tracks become one pending range
    and one counter update per track, whatever their number: a fold of many
    small batches costs one record per batch plus one write per track, not
    one per batch and track (an msync target keeps a track per member). A
    record is not decoded here: the intake's digest vouched for it, and every
    reader checks its crc32 when decoding it."""
    run: tuple[tuple[str, ...], int] | None = None  # (tracks, first seq) of the batches not yet pending
    checkpoint: tuple[int, int] | None = None
    for batch in batches:
        if batch.last <= last:
            continue
        if batch.first != last + 1:
            raise JournalCorrupt(f"intake batch {batch.first}..{batch.last} does not follow seq {last}")
        if record_count(batch.record) != batch.count:
            raise JournalCorrupt(f"intake batch {batch.first} does not hold {batch.count} entries")
        _log.put_batch(txn, dbs["log"], batch.first, [(0, batch.record)])
        if run is None or run[0] != batch.tracks:
            if run is not None:
                add_pending(txn, dbs, run[0], run[1], last)
            run = (batch.tracks, batch.first)
        if batch.checkpoint_ns is not None:
            checkpoint = (batch.checkpoint_ns, batch.last)
        last = batch.last
    if run is not None:
        add_pending(txn, dbs, run[0], run[1], last)
    if checkpoint is not None:
        set_checkpoint(txn, dbs, *checkpoint)
    return last


def mark_done(
    txn: lmdb.Transaction,
    dbs: Dbs,
    track: str,
    seqs: Iterable[int],
    states: Iterable[tuple[bytes, bytes | None]],
    cleared: Mapping[bytes, int | None],
    origin: Mapping[bytes, int],
) -> int:
    """``seqs`` done for ``track``; the manifest forgets what is below each of
    ``cleared`` (recorded before the removal's entry, the value), then takes
    the encoded ``states``, each known from entry ``origin[path]``. Returns
    how many were pending."""
    removed = len(_pending.remove_seqs(txn, dbs["pend"], track_prefix(track), seqs))
    if removed:
        add_count(txn, dbs, track, -removed)
    if cleared:
        _manifest.clear_below(txn, dbs, cleared)
    for path, raw in states:
        _manifest.put(txn, dbs, path, raw, origin.get(path))
    return removed


def mark_dead(txn: lmdb.Transaction, dbs: Dbs, track: str, reasons: dict[int, bytes]) -> int:
    """Move the pending seqs of ``reasons`` to ``track``'s dead letters, each
    with a copy of its entry; returns how many moved."""
    prefix = track_prefix(track)
    moved = 0
    for seq in _pending.remove_seqs(txn, dbs["pend"], prefix, reasons):
        reason = reasons[seq]
        raw = _log.entry_raw(txn, dbs["log"], seq)
        if raw is None:
            raise JournalCorrupt(f"pending entry {seq} missing from log")
        txn.put(prefix + encode_seq(seq), len(reason).to_bytes(4, "big") + reason + raw, db=dbs["dead"])
        moved += 1
    if moved:
        add_count(txn, dbs, track, -moved)
    return moved


def drop_dead(txn: lmdb.Transaction, dbs: Dbs, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """Remove ``letters``; returns those that were still there."""
    return [
        d for d in letters if txn.delete(track_prefix(d.track) + encode_seq(d.record.seq), db=dbs["dead"])
    ]


def requeue(txn: lmdb.Transaction, dbs: Dbs, last: int, letters: Iterable[DeadLetter]) -> tuple[int, int]:
    """Append each dead letter again as CHANGE of the paths it named, pending
    for its own track only; returns (letters requeued, new last seq)."""
    count = 0
    for letter in letters:
        if not txn.delete(track_prefix(letter.track) + encode_seq(letter.record.seq), db=dbs["dead"]):
            continue  # requeued meanwhile by another process
        for entry in _as_changes(letter.record.entry):
            last += 1
            put_batch(txn, dbs, last, 1, _log.encode_batch([entry]), [letter.track])
        count += 1
    return count, last


def _as_changes(entry: Entry) -> list[Entry]:
    """The CHANGE entries that re-ship whatever ``entry`` touched, as it is now."""
    if entry.op == Op.RESCAN:
        return [entry]
    paths = [entry.path, entry.dest] if entry.op == Op.MOVE else [entry.path]
    return [Entry(Op.CHANGE, p, time_ns=entry.time_ns, flags=entry.flags) for p in paths]
