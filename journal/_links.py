"""Reads of the hard-link index (``links``) inside a read transaction: the
names a multiply-linked file has in the manifest.

The index is written in the same transaction as the manifest states it
names, so an entry that disagrees with its key or with the state it names
is damage, and raises ``DamagedRecord``.
"""

from __future__ import annotations

import lmdb

from ._layout import Dbs, path_key
from ._manifest import checked_state
from .codec import STATE_HEAD_SIZE, encode_seq, state_inode_links
from .errors import DamagedRecord, JournalCorrupt
from .types import FileState

__all__ = ["linked_names", "manifest_with_inodes"]

_Names = dict[int, dict[bytes, FileState]]  # inode -> path -> its manifest state


def linked_names(txn: lmdb.Transaction, dbs: Dbs, inodes: list[int]) -> _Names:
    """For each inode, the names the index holds, with their states. A
    journal of an older schema, not upgraded yet, has no index: empty."""
    out: _Names = {i: {} for i in inodes}
    links = dbs.get("links")
    if links is None:
        return out
    cur = txn.cursor(db=links)
    for inode in inodes:
        prefix = encode_seq(inode)
        if not cur.set_range(prefix):
            continue
        for key, path in cur:
            if key[:8] != prefix:
                break
            out[inode][bytes(path)] = _indexed_state(txn, dbs, inode, bytes(key), bytes(path))
    return out


def _indexed_state(txn: lmdb.Transaction, dbs: Dbs, inode: int, key: bytes, path: bytes) -> FileState:
    """The manifest state an index entry names, checked against it."""
    if path_key(path) != key[8:]:
        raise DamagedRecord(f"damaged hard-link index entry {key.hex()}: it names {path!r}")
    raw = txn.get(key[8:], db=dbs["manifest"])
    state = checked_state(raw, path) if raw is not None else None
    if state is None or state.inode != inode or state.nlink < 2:
        raise DamagedRecord(f"hard-link index entry of {path!r} disagrees with its manifest state")
    return state


def manifest_with_inodes(txn: lmdb.Transaction, dbs: Dbs, inodes: set[int]) -> _Names:
    """Every manifest path whose state names one of ``inodes``, with its
    state: inodes are read from the encoded states and only the matching
    ones decoded. For names the index cannot know: a state recorded before
    the file got its other names, or before the journal had the index."""
    out: _Names = {i: {} for i in inodes}
    longpath = dbs["longpath"]
    for key, raw in txn.cursor(db=dbs["manifest"]):
        if len(raw) < STATE_HEAD_SIZE or state_inode_links(raw)[0] not in inodes:
            continue
        path = txn.get(key, db=longpath) if key[:1] == b"\0" else key
        if path is None:
            raise JournalCorrupt(f"manifest key {key.hex()} has no stored path")
        state = checked_state(raw, path)
        if path != b"/":
            out[state.inode][bytes(path)] = state
    return out
