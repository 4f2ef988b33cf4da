"""Manifest writes inside a write transaction: the last shipped state per path,
and the index of the names of multiply-linked files kept with it (a state with
nlink > 1 has its (inode, path) in ``links``; every other state costs nothing).

The manifest is shared by every track, and tracks finish at their own pace:
``recorded`` keeps, per state, the newest journal entry it was recorded from.
A removal from an older entry (a slow track's delete of a directory
that was made again since) drops only what was recorded before it, so it
never makes the manifest forget a name a faster track's mirror holds.

Every state replaced or removed is decoded first: a damaged one (a failed
checksum) aborts the transaction, so damage is reported instead of being
overwritten by a fresh state and never seen. The old state comes back from
the same LMDB call that replaces it, and it tells which index entry to drop.
"""

from __future__ import annotations

from collections.abc import Mapping

import lmdb

from ._layout import Dbs, path_key
from .codec import STATE_VERSION_LINKED, decode_seq, decode_state, encode_seq, state_inode_links
from .errors import DamagedRecord
from .types import FileState

__all__ = ["put", "clear_below", "link_key", "checked_state", "recorded_seq"]

_LINKED = bytes([STATE_VERSION_LINKED])  # the version byte of a state with several names


def link_key(inode: int, pk: bytes) -> bytes:
    """Key of one name of an inode in ``links``: all names of an inode are one key range."""
    return encode_seq(inode) + pk


def put(txn: lmdb.Transaction, dbs: Dbs, path: bytes, raw: bytes | None, seq: int | None = None) -> None:
    """Store the encoded state ``raw`` for ``path``, known from entry ``seq``
    on (a path keeps the newest it was ever recorded from); a long path is
    keyed by its hash and its full name kept in ``longpath``. ``raw`` None
    removes the state, unless it was recorded from entry ``seq`` or a newer
    one (``seq`` None or 0: always)."""
    pk = path_key(path)
    if raw is None:
        if not seq or recorded_seq(txn, dbs, pk) < seq:
            _forget(txn, dbs, pk, path, txn.pop(pk, db=dbs["manifest"]))
        return
    old = txn.replace(pk, raw, db=dbs["manifest"])
    newer = seq is not None and seq > 0 and (old is None or recorded_seq(txn, dbs, pk) < seq)
    _forget(txn, dbs, pk, path, old, keep_recorded=not newer)
    if newer and "recorded" in dbs:
        txn.put(pk, encode_seq(seq), db=dbs["recorded"])
    if pk[:1] == b"\0":
        txn.put(pk, path, db=dbs["longpath"])
    if raw[:1] == _LINKED and "links" in dbs:
        inode, nlink = state_inode_links(raw)
        if nlink > 1:
            txn.put(link_key(inode, pk), path, db=dbs["links"])


def recorded_seq(txn: lmdb.Transaction, dbs: Dbs, pk: bytes) -> int:
    """The newest entry the state at key ``pk`` was recorded from (0: none
    known, as for states of an older schema or written by a baseline)."""
    raw = txn.get(pk, db=dbs["recorded"]) if "recorded" in dbs else None
    return decode_seq(raw) if raw is not None else 0


def clear_below(txn: lmdb.Transaction, dbs: Dbs, trees: Mapping[bytes, int | None]) -> None:
    """Delete the entries strictly below each tree recorded from entries older
    than the tree's removal (its value; None or 0: all of them): a key range for
    paths stored as keys, a look at every hashed long path (they sort first)."""
    manifest, longpath = dbs["manifest"], dbs["longpath"]
    cur = txn.cursor(db=manifest)
    for tree, before in trees.items():
        below = tree + b"/"
        found = cur.set_range(below)
        while found and cur.key().startswith(below):
            key = bytes(cur.key())
            if before and recorded_seq(txn, dbs, key) >= before:
                found = cur.next()
                continue
            _forget(txn, dbs, key, key, cur.value())
            found = cur.delete()
    hashed = []
    if cur.first():
        for key in cur.iternext(values=False):
            if key[:1] != b"\0":
                break
            hashed.append(bytes(key))
    for key in hashed:
        full = txn.get(key, db=longpath)
        if full is None:
            continue
        full, seq = bytes(full), recorded_seq(txn, dbs, key)
        if any(full.startswith(t + b"/") and (not before or seq < before) for t, before in trees.items()):
            _forget(txn, dbs, key, full, txn.get(key, db=manifest))
            txn.delete(key, db=manifest)


def _forget(
    txn: lmdb.Transaction, dbs: Dbs, pk: bytes, path: bytes, old: bytes | None, keep_recorded: bool = False
) -> None:
    """Check the state ``old`` that ``path`` (key ``pk``) held, which this
    transaction replaces or removes, and drop its index entries (its
    ``recorded`` entry too, unless ``keep_recorded``). A damaged one raises,
    which aborts the transaction."""
    if old is None:
        return
    state = checked_state(old, path)
    if state.nlink > 1 and "links" in dbs:
        txn.delete(link_key(state.inode, pk), db=dbs["links"])
    if not keep_recorded and "recorded" in dbs:
        txn.delete(pk, db=dbs["recorded"])


def checked_state(raw: bytes, path: bytes) -> FileState:
    """The stored state ``raw`` of ``path``; raises when it is damaged."""
    try:
        return decode_state(raw)
    except DamagedRecord as exc:
        raise DamagedRecord(f"manifest state of {bytes(path)!r}: {exc}") from exc
