"""Manifest writes inside a write transaction: the last shipped state per path,
and the index of the names of multiply-linked files kept with it (a state with
nlink > 1 has its (inode, path) in ``links``; every other state costs nothing).

Every state replaced or removed is decoded first: a damaged one (a failed
checksum) aborts the transaction, so damage is reported instead of being
overwritten by a fresh state and never seen. The old state comes back from
the same LMDB call that replaces it, and it tells which index entry to drop.
"""

from __future__ import annotations

import lmdb

from ._layout import Dbs, path_key
from .codec import STATE_VERSION_LINKED, decode_state, encode_seq, state_inode_links
from .errors import DamagedRecord
from .types import FileState

__all__ = ["put", "clear_below", "link_key", "checked_state"]

_LINKED = bytes([STATE_VERSION_LINKED])  # the version byte of a state with several names


def link_key(inode: int, pk: bytes) -> bytes:
    """Key of one name of an inode in ``links``: all names of an inode are one key range."""
    return encode_seq(inode) + pk


def put(txn: lmdb.Transaction, dbs: Dbs, path: bytes, raw: bytes | None) -> None:
    """Store the encoded state ``raw`` for ``path`` (None removes it); a long
    path is keyed by its hash and its full name kept in ``longpath``."""
    pk = path_key(path)
    if raw is None:
        _forget(txn, dbs, pk, path, txn.pop(pk, db=dbs["manifest"]))
        return
    _forget(txn, dbs, pk, path, txn.replace(pk, raw, db=dbs["manifest"]))
    if pk[:1] == b"\0":
        txn.put(pk, path, db=dbs["longpath"])
    if raw[:1] == _LINKED and "links" in dbs:
        inode, nlink = state_inode_links(raw)
        if nlink > 1:
            txn.put(link_key(inode, pk), path, db=dbs["links"])


def clear_below(txn: lmdb.Transaction, dbs: Dbs, trees: list[bytes]) -> None:
    """Delete the entries strictly below each tree: a key range for paths
    stored as keys, a look at every hashed long path (they sort first)."""
    manifest, longpath = dbs["manifest"], dbs["longpath"]
    cur = txn.cursor(db=manifest)
    for tree in trees:
        below = tree + b"/"
        if cur.set_range(below):
            while cur.key().startswith(below):
                _forget(txn, dbs, cur.key(), cur.key(), cur.value())
                if not cur.delete():
                    break
    unders = tuple(t + b"/" for t in trees)
    hashed = []
    if cur.first():
        for key in cur.iternext(values=False):
            if key[:1] != b"\0":
                break
            hashed.append(key)
    for key in hashed:
        full = txn.get(key, db=longpath)
        if full is not None and full.startswith(unders):
            _forget(txn, dbs, key, full, txn.get(key, db=manifest))
            txn.delete(key, db=manifest)


def _forget(txn: lmdb.Transaction, dbs: Dbs, pk: bytes, path: bytes, old: bytes | None) -> None:
    """Check the state ``old`` that ``path`` (key ``pk``) held, which this
    transaction replaces or removes, and drop its index entry. A damaged
    one raises, which aborts the transaction."""
    if old is None:
        return
    state = checked_state(old, path)
    if state.nlink > 1 and "links" in dbs:
        txn.delete(link_key(state.inode, pk), db=dbs["links"])


def checked_state(raw: bytes, path: bytes) -> FileState:
    """The stored state ``raw`` of ``path``; raises when it is damaged."""
    try:
        return decode_state(raw)
    except DamagedRecord as exc:
        raise DamagedRecord(f"manifest state of {bytes(path)!r}: {exc}") from exc
