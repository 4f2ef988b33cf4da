"""Match one directory listing with the manifest's encoded states, in bulk.

The scan's hot path: for a directory whose entries all equal their shipped
state, nothing here runs a Python statement per entry. Each stat field is
gathered by one ``map`` over the listing, the expected encoded-state prefix
of every entry built by one more (``codec.state_stat_prefix``), and compared
with the stored state by one ``bytes.startswith`` map; only the entries that
fail (or whose ctime or mtime is recent) are looked at one by one.
"""

from __future__ import annotations

import os
import stat
from itertools import compress, repeat
from operator import and_, attrgetter, mul, not_, or_

from journal import FileKind
from journal.codec import state_stat_prefix

__all__ = ["suspects"]

_MODE = attrgetter("st_mode")
_SIZE = attrgetter("st_size")
_UID = attrgetter("st_uid")
_GID = attrgetter("st_gid")
_MTIME = attrgetter("st_mtime_ns")
_CTIME = attrgetter("st_ctime_ns")
_INO = attrgetter("st_ino")
_KINDS = {
    stat.S_IFREG: int(FileKind.FILE),
    stat.S_IFDIR: int(FileKind.DIR),
    stat.S_IFLNK: int(FileKind.SYMLINK),
}


class _Kind(dict[int, int]):
    """st_mode -> the manifest's kind code (remembered: a tree has few modes)."""

    def __missing__(self, mode: int) -> int:
        kind = self[mode] = _KINDS.get(stat.S_IFMT(mode), int(FileKind.OTHER))
        return kind


class _Sized(dict[int, int]):
    """st_mode -> 1 when its size is stored, 0 for a directory (stored as 0)."""

    def __missing__(self, mode: int) -> int:
        sized = self[mode] = int(not stat.S_ISDIR(mode))
        return sized


_KIND = _Kind()
_SIZED = _Sized()


def suspects(stats: list[os.stat_result], raws: list[bytes], threshold: int) -> list[int]:
    """Indexes of the entries to examine: their stored state (``raws[i]``,
    ``b""`` when none) does not start with the prefix their stat data would
    encode to, or their ctime or mtime is at or after ``threshold``."""
    modes = list(map(_MODE, stats))
    mtimes = list(map(_MTIME, stats))
    ctimes = list(map(_CTIME, stats))
    prefixes = map(
        state_stat_prefix,
        map(_KIND.__getitem__, modes),
        map(mul, map(_SIZE, stats), map(_SIZED.__getitem__, modes)),
        map(and_, modes, repeat(0o7777)),
        map(_UID, stats),
        map(_GID, stats),
        mtimes,
        ctimes,
        map(_INO, stats),
    )
    same = list(map(bytes.startswith, raws, prefixes))
    if not stats or (all(same) and max(mtimes) < threshold and max(ctimes) < threshold):
        return []
    recent = map(threshold.__le__, map(max, mtimes, ctimes))
    return list(compress(range(len(stats)), map(or_, recent, map(not_, same))))
