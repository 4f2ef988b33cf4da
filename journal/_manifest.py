"""Manifest writes inside a write transaction: the last shipped state per path.

Every state replaced or removed is decoded first: a damaged one (a failed
checksum) aborts the transaction, so damage is reported instead of being
overwritten by a fresh state and never seen.
"""

from __future__ import annotations

import lmdb

from ._layout import Dbs, path_key
from .codec import decode_state
from .errors import DamagedRecord

__all__ = ["put", "clear_below"]


def put(txn: lmdb.Transaction, dbs: Dbs, path: bytes, raw: bytes | None) -> None:
    """Store the encoded state ``raw`` for ``path`` (None removes it); a long
    path is keyed by its hash and its full name kept in ``longpath``."""
    pk = path_key(path)
    _check(txn.get(pk, db=dbs["manifest"]), path)
    if raw is None:
        txn.delete(pk, db=dbs["manifest"])
        return
    txn.put(pk, raw, db=dbs["manifest"])
    if pk[:1] == b"\0":
        txn.put(pk, path, db=dbs["longpath"])


def clear_below(txn: lmdb.Transaction, dbs: Dbs, trees: list[bytes]) -> None:
    """Delete the entries strictly below each tree: a key range for paths
    stored as keys, a look at every hashed long path (they sort first)."""
    manifest, longpath = dbs["manifest"], dbs["longpath"]
    cur = txn.cursor(db=manifest)
    for tree in trees:
        below = tree + b"/"
        if cur.set_range(below):
            while cur.key().startswith(below):
                _check(cur.value(), cur.key())
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
            _check(txn.get(key, db=manifest), full)
            txn.delete(key, db=manifest)


def _check(raw: bytes | None, path: bytes) -> None:
    """Raise when the stored state ``raw`` of ``path`` is damaged."""
    if raw is None:
        return
    try:
        decode_state(raw)
    except DamagedRecord as exc:
        raise DamagedRecord(f"manifest state of {bytes(path)!r}: {exc}") from exc
