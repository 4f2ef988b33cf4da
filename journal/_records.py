"""Log records: the entries of one batch stored column by column. Pure functions.

Record v2: B version | I count | count x B op | count x B flags
           | count x Q time_ns | count x I len(path) | count x I len(dest)
           | every path | every dest | I crc32 of everything before it
Record v1: the same without the crc (read, never written).

Big-endian throughout. The crc makes a flipped bit in a stored record an
error instead of a different path or operation (LMDB checksums nothing).
Columns let the append hot path encode a batch with a handful of C-level
calls instead of several Python operations per entry (the journal's
throughput goal is set against a bare LMDB loop). Every length is explicit
and the total must match exactly, so a damaged record is rejected.
"""

from __future__ import annotations

import struct
from itertools import accumulate

from .codec import encode_entry, seal, unseal
from .errors import CodecError, DamagedRecord
from .types import Entry, Op

__all__ = ["RECORD_VERSION", "encode_record", "decode_record", "record_count", "record_entry"]

RECORD_VERSION = 2
_HEAD = struct.Struct(">BI")
_PER_ENTRY = 1 + 1 + 8 + 4 + 4  # op, flags, time_ns, len(path), len(dest)
_ONE = struct.Struct(">BIBBQII")  # the head and columns of a record of one entry
_OPS = {int(op): op for op in Op}


def encode_record(entries: list[Entry]) -> bytes:
    """One record holding ``entries`` in order."""
    if len(entries) == 1:  # the common small batch: one pack instead of seven calls
        e = entries[0]
        try:
            body = _ONE.pack(RECORD_VERSION, 1, e.op, e.flags, e.time_ns, len(e.path), len(e.dest))
            body += e.path + e.dest
        except (struct.error, ValueError, TypeError) as exc:
            raise CodecError(f"entry out of range: {exc}") from exc
        return seal(body)
    return encode_columns(entries)


def encode_columns(entries: list[Entry]) -> bytes:
    """:func:`encode_record` for any number of entries."""
    n = len(entries)
    paths = [e.path for e in entries]
    dests = [e.dest for e in entries]
    try:
        body = b"".join(
            [
                _HEAD.pack(RECORD_VERSION, n),
                bytes([e.op for e in entries]),
                bytes([e.flags for e in entries]),
                struct.pack(f">{n}Q", *[e.time_ns for e in entries]),
                struct.pack(f">{n}I", *map(len, paths)),
                struct.pack(f">{n}I", *map(len, dests)),
                *paths,
                *dests,
            ]
        )
    except (struct.error, ValueError, TypeError) as exc:
        raise CodecError(f"entry out of range: {exc}") from exc
    return seal(body)


def record_count(raw: bytes) -> int:
    """How many entries the record ``raw`` holds (reads the head only)."""
    try:
        version, count = _HEAD.unpack_from(raw)
    except struct.error as exc:
        raise DamagedRecord(f"truncated log record ({len(raw)} bytes)") from exc
    if version not in (1, RECORD_VERSION):
        raise DamagedRecord(f"unknown log record version {version}")
    return count


def decode_record(raw: bytes, skip: int = 0, limit: int | None = None) -> list[Entry]:
    """Entries ``skip`` .. ``skip + limit`` (or to the end) of a record; the
    whole record is checked, whichever entries are asked for."""
    raw = bytes(raw)
    n = record_count(raw)
    if raw[0] != 1:  # version 1 was written before records carried a checksum
        raw = unseal(raw, "log record")
    stop = n if limit is None else min(n, skip + limit)
    ops, flags, times, plens, dlens, path_at, dest_at = _columns(raw, n)
    if any(op not in _OPS for op in ops[skip:stop]):
        raise DamagedRecord("log record holds an unknown operation")
    return [
        Entry(
            _OPS[ops[i]],
            raw[path_at[i] : path_at[i] + plens[i]],
            raw[dest_at[i] : dest_at[i] + dlens[i]],
            times[i],
            flags[i],
        )
        for i in range(skip, stop)
    ]


def record_entry(raw: bytes, index: int) -> bytes:
    """Entry ``index`` of a record, encoded on its own (``codec.encode_entry``)."""
    n = record_count(raw)
    if not 0 <= index < n:
        raise DamagedRecord(f"log record of {n} entries has no entry {index}")
    return encode_entry(decode_record(raw, index, 1)[0])


def _columns(
    raw: bytes, n: int
) -> tuple[bytes, bytes, tuple[int, ...], tuple[int, ...], tuple[int, ...], list[int], list[int]]:
    """The columns of a record of ``n`` entries, and where each path and dest starts."""
    at = _HEAD.size
    if len(raw) < at + n * _PER_ENTRY:
        raise DamagedRecord(f"truncated log record ({len(raw)} bytes, {n} entries)")
    ops, flags = raw[at : at + n], raw[at + n : at + 2 * n]
    at += 2 * n
    times = struct.unpack_from(f">{n}Q", raw, at)
    plens = struct.unpack_from(f">{n}I", raw, at + 8 * n)
    dlens = struct.unpack_from(f">{n}I", raw, at + 12 * n)
    at += 16 * n
    path_at = list(accumulate(plens, initial=at))
    dest_at = list(accumulate(dlens, initial=path_at[-1]))
    if dest_at[-1] != len(raw):
        raise DamagedRecord(f"malformed log record ({len(raw)} bytes, {n} entries)")
    return ops, flags, times, plens, dlens, path_at, dest_at
