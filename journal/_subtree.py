"""Key-ordered reads of parts of the manifest for a walk of the tree: one
directory's entries without its subdirectories' subtrees, and a gone subtree
children first. Pure cursor functions; :mod:`journal._reads` runs them in
read transactions."""

from __future__ import annotations

from itertools import takewhile

import lmdb

from ._layout import Dbs
from .errors import JournalCorrupt

__all__ = ["Children", "below", "children", "long_paths"]

CHUNK = 1000
Children = tuple[list[bytes], list[bytes], list[bytes]]  # keys, encoded states, deep names


def children(cur: lmdb.Cursor, parent: bytes, subdirs: list[bytes]) -> Children:
    """See :meth:`JournalReads.manifest_children`. The range of ``parent/`` is
    read in segments that end where a subdirectory's subtree begins (key
    ``parent/sub/``) and resume after it (``parent/sub0``: ``0`` follows
    ``/``). A segment holding deeper keys (a child that was a directory and is
    not one now) is read again key by key, skipping each such subtree."""
    below = parent + b"/" if parent else b""
    depth = below.count(b"/")
    # the root's own key is b"/": a boundary like a subdirectory named b"";
    # ends sort as keys do ("a!b/" before "a/"), not as names
    ends: list[bytes | None] = sorted(below + s + b"/" for s in ([b"", *subdirs] if not parent else subdirs))
    ends.append(parent + b"0" if parent else None)
    keys: list[bytes] = []
    raws: list[bytes] = []
    deep: list[bytes] = []
    start = below if parent else b"\x01"  # hashed keys (NUL first) are not paths
    for end in ends:
        if cur.set_range(start):
            limit = (end,)
            run = list(takewhile(limit.__gt__, cur.iternext())) if end is not None else list(cur.iternext())
            if run:
                got_keys, got_raws = map(list, zip(*run))
                if b"".join(got_keys).count(b"/") == depth * len(got_keys):
                    keys += got_keys
                    raws += got_raws
                else:
                    _children_slowly(cur, below, start, end, keys, raws, deep)
        if end is not None:
            start = end[:-1] + b"0"
    return keys, raws, deep


def _children_slowly(
    cur: lmdb.Cursor,
    below: bytes,
    start: bytes,
    end: bytes | None,
    keys: list[bytes],
    raws: list[bytes],
    deep: list[bytes],
) -> None:
    """One segment key by key: direct children kept, deeper keys skipped by
    subtree (their child's name noted in ``deep``)."""
    n = len(below)
    found = cur.set_range(start)
    while found:
        key = cur.key()
        if end is not None and key >= end:
            return
        slash = key.find(b"/", n)
        if slash < 0:
            keys.append(key)
            raws.append(cur.value())
            found = cur.next()
        else:
            deep.append(key[n:slash])
            found = cur.set_range(key[:slash] + b"0")


def below(cur: lmdb.Cursor, path: bytes, before: bytes | None) -> list[tuple[bytes, bytes]]:
    """See :meth:`JournalReads.manifest_below`."""
    lo = path + b"/"
    hi = before if before is not None else path + b"0"
    if cur.set_range(hi):
        if not cur.prev():
            return []
    elif not cur.last():
        return []
    out = []
    for key, raw in cur.iterprev():
        if not key.startswith(lo):
            break
        out.append((key, raw))
        if len(out) >= CHUNK:
            break
    return out


def long_paths(txn: lmdb.Transaction, dbs: Dbs, under: bytes) -> dict[bytes, bytes]:
    """path -> encoded state of the long (hashed-key) paths at or below
    ``under`` (everywhere for ``b""``)."""
    cur, out = txn.cursor(db=dbs["manifest"]), {}
    if cur.first():  # hashed keys start with NUL: they sort first
        for key, raw in cur:
            if key[:1] != b"\0":
                break
            path = txn.get(key, db=dbs["longpath"])
            if path is None:
                raise JournalCorrupt(f"manifest key {key.hex()} has no stored path")
            if not under or path == under or path.startswith(under + b"/"):
                out[bytes(path)] = raw
    return out
