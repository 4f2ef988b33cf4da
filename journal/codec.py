"""Versioned compact binary codec for journal records. Pure functions.

Entry v2:     B version | B op | B flags | Q time_ns | I len(path) | I len(dest) | path | dest
              | I crc32 of everything before it (a dead letter's copy of its entry)
Entry v1:     the same without the crc (read, never written).
FileState v2: B version | B kind | Q size | I mode | I uid | I gid | q mtime_ns
              | q ctime_ns | Q inode | B len(digest) | I len(link) | digest | link
              | I crc32 of everything before it
FileState v3: v2 with version 3 and I nlink before the crc: written only for a
              non-directory with several names, so every other state stays a
              v2 record (and matches ``state_stat_prefix``).
FileState v1: v2 without the crc (read, never written). v1 and v2 read as nlink 1.
Big-endian throughout. Every length is explicit, so a truncated or padded record
is rejected instead of decoding to a shorter path. The crc exists because LMDB
checksums nothing: a flipped bit in a stored state must be reported, never
taken for a changed file. The version byte lets a later schema read old
records. Decoding failures raise ``DamagedRecord``.
"""

from __future__ import annotations

import functools
import struct
import zlib

from .errors import CodecError, DamagedRecord
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
    "seal",
    "unseal",
]

ENTRY_VERSION = 2
STATE_VERSION = 2
STATE_VERSION_LINKED = 3
_CRC = struct.Struct(">I")

_ENTRY_HEAD = struct.Struct(">BBBQII")
_STATE_HEAD = struct.Struct(">BBQIIIqqQBI")
STATE_HEAD_SIZE = _STATE_HEAD.size  # no encoded state is shorter
_SEQ = struct.Struct(">Q")
_NLINK = struct.Struct(">I")
_INODE = struct.Struct(">Q")
_INODE_AT = 38  # offset of the inode in every state's head
_STATE_VERSIONS = (1, STATE_VERSION, STATE_VERSION_LINKED)
_OPS = {int(op): op for op in Op}
_KINDS = {int(k): k for k in FileKind}


def seal(raw: bytes) -> bytes:
    """``raw`` followed by its crc32."""
    return raw + _CRC.pack(zlib.crc32(raw))


def unseal(raw: bytes, what: str) -> bytes:
    """``raw`` without its crc32, which must match."""
    if len(raw) < _CRC.size:
        raise DamagedRecord(f"damaged {what}: {len(raw)} bytes, too short for its checksum")
    body = raw[: -_CRC.size]
    if _CRC.unpack_from(raw, len(body))[0] != zlib.crc32(body):
        raise DamagedRecord(f"damaged {what}: checksum mismatch ({len(raw)} bytes)")
    return body


def encode_seq(seq: int) -> bytes:
    """Sequence numbers as 8-byte big-endian keys, so byte order is numeric order."""
    return _SEQ.pack(seq)


def decode_seq(raw: bytes) -> int:
    if len(raw) != _SEQ.size:
        raise DamagedRecord(f"malformed sequence key ({len(raw)} bytes)")
    return _SEQ.unpack(raw)[0]


def encode_entry(entry: Entry) -> bytes:
    try:
        head = _ENTRY_HEAD.pack(
            ENTRY_VERSION, entry.op, entry.flags, entry.time_ns, len(entry.path), len(entry.dest)
        )
    except struct.error as exc:
        raise CodecError(f"entry out of range: {exc}") from exc
    return seal(head + entry.path + entry.dest)


def encode_entries(entries: list[Entry]) -> list[bytes]:
    """Batch form of :func:`encode_entry`: the append hot path, one comprehension
    instead of a Python call per entry."""
    pack = _ENTRY_HEAD.pack
    try:
        return [
            seal(pack(ENTRY_VERSION, e.op, e.flags, e.time_ns, len(e.path), len(e.dest)) + e.path + e.dest)
            for e in entries
        ]
    except struct.error as exc:
        raise CodecError(f"entry out of range: {exc}") from exc


def encode_seqs(first: int, count: int) -> list[bytes]:
    """Keys for ``count`` consecutive seqs starting at ``first``."""
    return list(map(_SEQ.pack, range(first, first + count)))


def decode_entry(raw: bytes) -> Entry:
    raw = bytes(raw)
    if raw[:1] == b"\x01":  # version 1: written before entries carried a checksum
        return _decode_entry_body(raw, 1)
    return _decode_entry_body(unseal(raw, "journal entry"), ENTRY_VERSION)


def _decode_entry_body(raw: bytes, expected: int) -> Entry:
    try:
        version, op, flags, time_ns, plen, dlen = _ENTRY_HEAD.unpack_from(raw)
    except struct.error as exc:
        raise DamagedRecord(f"truncated journal entry ({len(raw)} bytes)") from exc
    if version != expected:
        raise DamagedRecord(f"unknown journal entry version {version}")
    start = _ENTRY_HEAD.size
    if start + plen + dlen != len(raw) or op not in _OPS:
        raise DamagedRecord(f"malformed journal entry ({len(raw)} bytes)")
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
    return seal(head + state.digest + state.link + tail)


_STATE_STAT = struct.Struct(">BBQIIIqqQ")  # an encoded state's head, up to the inode

state_stat_prefix = functools.partial(_STATE_STAT.pack, STATE_VERSION)
"""``state_stat_prefix(kind, size, mode, uid, gid, mtime_ns, ctime_ns, inode)``:
the first bytes of every encoded state with one name and exactly these stat
fields, so a scan compares a stat result with a stored state without decoding
it (a C-level call: it runs once per file of the tree). A state with several
names never matches: the scan decodes and judges it."""


def decode_state(raw: bytes) -> FileState:
    raw = bytes(raw)
    if raw[:1] == b"\x01":  # version 1: written before states carried a checksum
        return _decode_state_body(raw, 1)
    return _decode_state_body(unseal(raw, "manifest state"), raw[0])


def _decode_state_body(raw: bytes, expected: int) -> FileState:
    try:
        version, kind, size, mode, uid, gid, mtime, ctime, inode, dlen, llen = _STATE_HEAD.unpack_from(raw)
    except struct.error as exc:
        raise DamagedRecord(f"truncated manifest state ({len(raw)} bytes)") from exc
    if version != expected or version not in _STATE_VERSIONS or kind not in _KINDS:
        raise DamagedRecord(f"unknown manifest state version {version} or kind {kind}")
    start = _STATE_HEAD.size
    tail = _NLINK.size if version == STATE_VERSION_LINKED else 0
    if start + dlen + llen + tail != len(raw):
        raise DamagedRecord(f"malformed manifest state ({len(raw)} bytes)")
    digest, link = raw[start : start + dlen], raw[start + dlen : start + dlen + llen]
    nlink = _NLINK.unpack_from(raw, start + dlen + llen)[0] if tail else 1
    if tail and nlink < 2:
        raise DamagedRecord(f"malformed manifest state (link count {nlink})")
    return FileState(_KINDS[kind], size, mode, uid, gid, mtime, ctime, inode, digest, link, nlink)


def state_inode_links(raw: bytes) -> tuple[int, int]:
    """(inode, link count) of an encoded state, read without checking it (the
    whole state is decoded where it matters): the manifest pass that looks
    for the names of an inode reads only these two."""
    if len(raw) < _STATE_HEAD.size:
        raise DamagedRecord(f"truncated manifest state ({len(raw)} bytes)")
    inode = _INODE.unpack_from(raw, _INODE_AT)[0]
    if raw[0] != STATE_VERSION_LINKED or len(raw) < _STATE_HEAD.size + _NLINK.size + _CRC.size:
        return inode, 1
    return inode, _NLINK.unpack_from(raw, len(raw) - _NLINK.size - _CRC.size)[0]
