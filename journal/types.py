"""Value types stored in the journal.

Paths are ``bytes`` relative to the watched root (``os.fsencode``); they are
never decoded, so names that are not UTF-8 survive unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Op",
    "Entry",
    "Record",
    "FileKind",
    "FileState",
    "Checkpoint",
    "Seq",
    "IS_DIR",
    "SEED_FLAG",
    "SUBTREE",
]

Seq = int
"""A journal sequence number: strictly increasing, starting at 1."""

IS_DIR = 0x01
"""Entry flag: the path was a directory when the event was seen."""

SEED_FLAG = 0x80
"""Entry flag on a RESCAN: this track still needs the whole tree (a target
added to an existing journal is seeded by the next start)."""

SUBTREE = 0x02
"""Entry flag on a CHANGE of a directory: ship its whole subtree, so that the
mirror's copy holds exactly what the source's holds."""


class Op(enum.IntEnum):
    """What happened to a path."""

    CHANGE = 1  # created, written or closed: ship content and metadata
    ATTR = 2  # chmod, chown, utime: ship metadata
    DELETE = 3  # gone: delete on the mirror (recursively for a directory)
    MOVE = 4  # renamed from ``path`` to ``dest`` inside the root
    RESCAN = 5  # the event stream lost information: scan ``path`` (b"" = root)


@dataclass(frozen=True, slots=True)
class Entry:
    """One journaled event. ``dest`` is only set for MOVE."""

    op: Op
    path: bytes
    dest: bytes = b""
    time_ns: int = 0
    flags: int = 0

    @property
    def is_dir(self) -> bool:
        return bool(self.flags & IS_DIR)


@dataclass(frozen=True, slots=True)
class Record:
    """An entry together with the sequence number the journal gave it."""

    seq: Seq
    entry: Entry


class FileKind(enum.IntEnum):
    """File type as the mirror should hold it."""

    FILE = 1
    DIR = 2
    SYMLINK = 3
    OTHER = 4  # fifo, socket, device: not shipped, recorded so scans stay quiet


@dataclass(frozen=True, slots=True)
class FileState:
    """The last shipped state of a path: what the scanner compares the disk with.

    ``digest`` is the blake3 of the content (files) or of the link target
    (symlinks); empty when unknown or for directories. ``nlink`` is the
    number of names of a non-directory (always 1 for a directory): a file
    with several names is written through any of them.
    """

    kind: FileKind
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    digest: bytes = b""
    link: bytes = b""  # symlink target, verbatim
    nlink: int = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Every change completed before ``time_ns`` is durably in the journal
    (through entry ``seq``)."""

    time_ns: int
    seq: Seq
