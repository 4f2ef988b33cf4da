"""Versioned compact binary codec for journal records. Pure functions.

Entry v1:     B version | B op | B flags | Q time_ns | I len(path) | I len(dest) | path | dest
FileState v1: B version | B kind | Q size | I mode | I uid | I gid | q mtime_ns
              | q ctime_ns | Q inode | B len(digest) | I len(link) | digest | link
FileState v2: v1 with version 2, then I nlink: written only for a non-directory
              with several names, so every other state stays byte-identical to
              v1 (and matches ``state_stat_prefix``); v1 reads as nlink 1.
Big-endian throughout. Every length is explicit, so a truncated or padded record
is rejected instead of decoding to a shorter path. The version byte lets a later
schema read old records.
"""

from __future__ import annotations

import functools
import struct

from .errors import CodecError
from .types import Entry, FileKind, FileState, Op

__all__ = [
    "encode_entry",
    "encode_entries",
    "decode_entry",
    "encode_state",
    "decode_state",
    "state_stat_prefix",
    "state_inode_links",
    "encode_seq",
    "encode_seqs",
    "decode_seq",
]

ENTRY_VERSION = 1
STATE_VERSION = 1
STATE_VERSION_LINKED = 2

_ENTRY_HEAD = struct.Struct(">BBBQII")
_STATE_HEAD = struct.Struct(">BBQIIIqqQBI")
STATE_HEAD_SIZE = _STATE_HEAD.size  # no encoded state is shorter
_SEQ = struct.Struct(">Q")
_NLINK = struct.Struct(">I")
_INODE = struct.Struct(">Q")
_INODE_AT = 38  # offset of the inode in every state's head
_OPS = {int(op): op for op in Op}
_KINDS = {int(k): k for k in FileKind}


def encode_seq(seq: int) -> bytes:
    """Sequence numbers as 8-byte big-endian keys, so byte order is numeric order."""
    return _SEQ.pack(seq)


def decode_seq(raw: bytes) -> int:
    if len(raw) != _SEQ.size:
        raise CodecError(f"malformed sequence key ({len(raw)} bytes)")
    return _SEQ.unpack(raw)[0]


def encode_entry(entry: Entry) -> bytes:
    try:
        head = _ENTRY_HEAD.pack(
            ENTRY_VERSION, entry.op, entry.flags, entry.time_ns, len(entry.path), len(entry.dest)
        )
    except struct.error as exc:
        raise CodecError(f"entry out of range: {exc}") from exc
    return head + entry.path + entry.dest


def encode_entries(entries: list[Entry]) -> list[bytes]:
    """Batch form of :func:`encode_entry`: the append hot path, one comprehension
    instead of a Python call per entry."""
    pack = _ENTRY_HEAD.pack
    try:
        return [
            pack(ENTRY_VERSION, e.op, e.flags, e.time_ns, len(e.path), len(e.dest)) + e.path + e.dest
            for e in entries
        ]
    except struct.error as exc:
        raise CodecError(f"entry out of range: {exc}") from exc


def encode_seqs(first: int, count: int) -> list[bytes]:
    """Keys for ``count`` consecutive seqs starting at ``first``."""
    return list(map(_SEQ.pack, range(first, first + count)))


def decode_entry(raw: bytes) -> Entry:
    try:
        version, op, flags, time_ns, plen, dlen = _ENTRY_HEAD.unpack_from(raw)
    except struct.error as exc:
        raise CodecError(f"truncated journal entry ({len(raw)} bytes)") from exc
    if version != ENTRY_VERSION:
        raise CodecError(f"unknown journal entry version {version}")
    start = _ENTRY_HEAD.size
    if start + plen + dlen != len(raw) or op not in _OPS:
        raise CodecError(f"malformed journal entry ({len(raw)} bytes)")
    raw = bytes(raw)
    return Entry(_OPS[op], raw[start : start + plen], raw[start + plen :], time_ns, flags)


def encode_state(state: FileState) -> bytes:
    linked = state.nlink > 1
    try:
        head = _STATE_HEAD.pack(
            STATE_VERSION_LINKED if linked else STATE_VERSION,
            state.kind,
            state.size,
            state.mode,
            state.uid,
            state.gid,
            state.mtime_ns,
            state.ctime_ns,
            state.inode,
            len(state.digest),
            len(state.link),
        )
        tail = _NLINK.pack(state.nlink) if linked else b""
    except struct.error as exc:
        raise CodecError(f"manifest state out of range: {exc}") from exc
    return head + state.digest + state.link + tail


_STATE_STAT = struct.Struct(">BBQIIIqqQ")  # an encoded state's head, up to the inode

state_stat_prefix = functools.partial(_STATE_STAT.pack, STATE_VERSION)
"""``state_stat_prefix(kind, size, mode, uid, gid, mtime_ns, ctime_ns, inode)``:
the first bytes of every encoded state with exactly these stat fields, so a
scan compares a stat result with a stored state without decoding it (a C-level
call: it runs once per file of the tree)."""


def decode_state(raw: bytes) -> FileState:
    try:
        version, kind, size, mode, uid, gid, mtime, ctime, inode, dlen, llen = _STATE_HEAD.unpack_from(raw)
    except struct.error as exc:
        raise CodecError(f"truncated manifest state ({len(raw)} bytes)") from exc
    if version not in (STATE_VERSION, STATE_VERSION_LINKED) or kind not in _KINDS:
        raise CodecError(f"unknown manifest state version {version} or kind {kind}")
    start = _STATE_HEAD.size
    tail = _NLINK.size if version == STATE_VERSION_LINKED else 0
    if start + dlen + llen + tail != len(raw):
        raise CodecError(f"malformed manifest state ({len(raw)} bytes)")
    raw = bytes(raw)
    digest, link = raw[start : start + dlen], raw[start + dlen : start + dlen + llen]
    nlink = _NLINK.unpack_from(raw, len(raw) - tail)[0] if tail else 1
    return FileState(_KINDS[kind], size, mode, uid, gid, mtime, ctime, inode, digest, link, nlink)


def state_inode_links(raw: bytes) -> tuple[int, int]:
    """(inode, link count) of an encoded state, read without decoding it: the
    manifest's hard-link index is kept by these two alone."""
    if len(raw) < _STATE_HEAD.size:
        raise CodecError(f"truncated manifest state ({len(raw)} bytes)")
    inode = _INODE.unpack_from(raw, _INODE_AT)[0]
    if raw[0] != STATE_VERSION_LINKED:
        return inode, 1
    return inode, _NLINK.unpack_from(raw, len(raw) - _NLINK.size)[0]
