"""How the journal lays its data out in LMDB: database names, key shapes,
meta records. Pure helpers plus the one-time creation and validation of the
databases.

| db       | key                     | value                              |
|----------|-------------------------|------------------------------------|
| log      | seq of its first entry  | log record: a batch's entries      |
| longpath | ``\\0`` + blake3(path)  | the full path of a manifest key    |
| manifest | path key                | encoded FileState                  |
| links    | Q inode + path key      | the path (only names of a manifest |
|          |                         | state with nlink > 1; schema 4)    |
| recorded | path key                | Q seq of the newest entry a state  |
|          |                         | was recorded from (schema 6)       |
| pend     | track ``\\0`` first seq | last seq of a pending range        |
| dead     | track ``\\0`` seq       | I len(reason), reason, entry       |
| meta     | name                    | schema, root, tracks, counters ... |
"""

from __future__ import annotations

import struct

import blake3
import lmdb

from .errors import JournalCorrupt, NotAJournal, SchemaMismatch

__all__ = [
    "SCHEMA_VERSION",
    "UPGRADABLE",
    "DB_NAMES",
    "ADDED_IN",
    "DROPPED_IN",
    "MAX_DIRECT_KEY",
    "PAIR",
    "COUNT",
    "path_key",
    "track_prefix",
    "count_key",
    "decode_tracks",
    "encode_tracks",
    "open_dbs",
]

SCHEMA_VERSION = 6  # 6: the ``recorded`` index (which entry each manifest state came from)
# 5: no ``latest`` index (appends wrote it, nothing read it);
# 4: the ``links`` index, states of files with several names (codec v3); 3: crc32 on
# records and states; 2: no checksums. Each is read as it is, then upgraded by the agent.
UPGRADABLE = (2, 3, 4, 5)
DB_NAMES = ("log", "longpath", "manifest", "pend", "dead", "meta", "links", "recorded")
ADDED_IN = {
    "links": 4,
    "recorded": 6,
}  # databases a journal of an older schema lacks until the agent upgrades it
DROPPED_IN = {"latest": 5}  # databases an older schema kept, left alone until the agent drops them
MAX_DIRECT_KEY = 480  # LMDB keys are limited to 511 bytes; longer paths are hashed
MAX_TRACK = 255
PAIR = struct.Struct(">QQ")
COUNT = struct.Struct(">q")

Dbs = dict[str, "lmdb._Database"]


def path_key(path: bytes) -> bytes:
    """Direct key for short paths; ``\\0`` + blake3 for long ones (no real path holds NUL).

    The root itself (``b""``) is stored as ``b"/"``, which no relative path can be.
    """
    if len(path) <= MAX_DIRECT_KEY:
        return path or b"/"
    return b"\0" + blake3.blake3(path).digest()


def track_prefix(track: str) -> bytes:
    raw = track.encode() if isinstance(track, str) else b""
    if not raw or len(raw) > MAX_TRACK or b"\0" in raw or b"\n" in raw:
        raise ValueError(f"invalid track name {track!r}")
    return raw + b"\0"


def count_key(track: str) -> bytes:
    return b"pcount:" + track.encode()


def decode_tracks(raw: bytes | None) -> list[str]:
    return [t for t in bytes(raw).decode().split("\n") if t] if raw else []


def encode_tracks(tracks: list[str]) -> bytes:
    return "\n".join(tracks).encode()


def open_dbs(env: lmdb.Environment, writable: bool, where: str) -> tuple[Dbs, int]:
    """Open the named databases; returns them and the journal's schema.

    An environment whose main database holds other names is someone else's
    LMDB: refuse it before anything is written. A new journal gets every
    database and its schema record in one transaction.
    """
    with env.begin() as txn:
        names = {bytes(k) for k in txn.cursor().iternext(values=False)}
    if names:
        return _open_existing(env, names, where)
    if not writable:
        raise NotAJournal(f"{where} holds no journal yet", path=where)
    with env.begin(write=True) as txn:
        dbs = {n: env.open_db(n.encode(), txn=txn, create=True) for n in DB_NAMES}
        txn.put(b"schema", str(SCHEMA_VERSION).encode(), db=dbs["meta"])
    return dbs, SCHEMA_VERSION


def _open_existing(env: lmdb.Environment, names: set[bytes], where: str) -> tuple[Dbs, int]:
    """Handles are opened without a caller's transaction: LMDB keeps a handle
    opened in a read transaction only if that transaction commits. A
    database added by a later schema is left out of a journal of an older
    one (readers treat it as empty; the agent's upgrade creates it), so an
    open changes nothing before it is accepted."""
    if b"meta" not in names:
        raise NotAJournal(f"{where} holds an LMDB database that is not a journal", path=where)
    try:
        meta = env.open_db(b"meta", create=False)
    except lmdb.IncompatibleError as exc:
        raise NotAJournal(f"{where} holds an LMDB database that is not a journal", path=where) from exc
    with env.begin() as txn:
        schema = _check_schema(txn.get(b"schema", db=meta), where)
    missing = [n for n in DB_NAMES if n.encode() not in names]
    if [n for n in missing if ADDED_IN.get(n, 0) <= schema]:
        raise JournalCorrupt(f"journal {where} lacks databases {missing}", path=where)
    return {n: env.open_db(n.encode(), create=False) for n in DB_NAMES if n not in missing}, schema


def _check_schema(raw: bytes | None, where: str) -> int:
    if raw is None:
        raise JournalCorrupt(f"journal {where} has no schema record", path=where)
    try:
        schema = int(bytes(raw))
    except ValueError:
        raise JournalCorrupt(f"journal {where} has a malformed schema record {bytes(raw)!r}") from None
    if schema != SCHEMA_VERSION and schema not in UPGRADABLE:
        raise SchemaMismatch(
            f"journal {where} has schema {schema}, this agent reads {SCHEMA_VERSION}", path=where
        )
    return schema
