"""Versioned compact binary codec for journal records. Pure functions.

Entry v1:     B version | B op | B flags | Q time_ns | I len(path) | path | dest
FileState v1: B version | B kind | Q size | I mode | I uid | I gid | q mtime_ns
              | q ctime_ns | Q inode | B len(digest) | digest | link
Big-endian throughout. The version byte lets a later schema read old records.
"""

from __future__ import annotations

import struct

from .errors import CodecError
from .types import Entry, FileKind, FileState, Op

__all__ = [
    "encode_entry",
    "decode_entry",
    "encode_state",
    "decode_state",
    "encode_seq",
    "decode_seq",
]

ENTRY_VERSION = 1
STATE_VERSION = 1

_ENTRY_HEAD = struct.Struct(">BBBQI")
_STATE_HEAD = struct.Struct(">BBQIIIqqQB")
_SEQ = struct.Struct(">Q")
_OPS = {int(op): op for op in Op}
_KINDS = {int(k): k for k in FileKind}


def encode_seq(seq: int) -> bytes:
    """Sequence numbers as 8-byte big-endian keys, so byte order is numeric order."""
    return _SEQ.pack(seq)


def decode_seq(raw: bytes) -> int:
    return _SEQ.unpack(raw)[0]


def encode_entry(entry: Entry) -> bytes:
    head = _ENTRY_HEAD.pack(ENTRY_VERSION, entry.op, entry.flags, entry.time_ns, len(entry.path))
    return head + entry.path + entry.dest


def decode_entry(raw: bytes) -> Entry:
    try:
        version, op, flags, time_ns, plen = _ENTRY_HEAD.unpack_from(raw)
    except struct.error as exc:
        raise CodecError(f"truncated journal entry ({len(raw)} bytes)") from exc
    if version != ENTRY_VERSION:
        raise CodecError(f"unknown journal entry version {version}")
    start = _ENTRY_HEAD.size
    if start + plen > len(raw) or op not in _OPS:
        raise CodecError("malformed journal entry")
    raw = bytes(raw)
    return Entry(_OPS[op], raw[start : start + plen], raw[start + plen :], time_ns, flags)


def encode_state(state: FileState) -> bytes:
    head = _STATE_HEAD.pack(
        STATE_VERSION,
        state.kind,
        state.size,
        state.mode,
        state.uid,
        state.gid,
        state.mtime_ns,
        state.ctime_ns,
        state.inode,
        len(state.digest),
    )
    return head + state.digest + state.link


def decode_state(raw: bytes) -> FileState:
    try:
        version, kind, size, mode, uid, gid, mtime, ctime, inode, dlen = _STATE_HEAD.unpack_from(raw)
    except struct.error as exc:
        raise CodecError(f"truncated manifest state ({len(raw)} bytes)") from exc
    if version != STATE_VERSION or kind not in _KINDS:
        raise CodecError(f"unknown manifest state version {version} or kind {kind}")
    start = _STATE_HEAD.size
    raw = bytes(raw)
    digest = raw[start : start + dlen]
    return FileState(_KINDS[kind], size, mode, uid, gid, mtime, ctime, inode, digest, raw[start + dlen :])
