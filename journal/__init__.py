"""The msync-agent journal: a durable LMDB log of file events.

Knows nothing of inotify, msync or the watched tree; it stores entries,
per-track progress, the manifest of shipped states and checkpoints.
"""

from typing import TYPE_CHECKING

from .errors import (
    CodecError,
    DamagedRecord,
    JournalCorrupt,
    JournalError,
    JournalFull,
    JournalLocked,
    NotAJournal,
    SchemaMismatch,
    UnsafeJournal,
    WrongRoot,
)
from .types import IS_DIR, SEED_FLAG, SUBTREE, Checkpoint, Entry, FileKind, FileState, Op, Record, Seq

if TYPE_CHECKING:
    from ._env import lock_holder
    from .store import SCHEMA_VERSION, DeadLetter, Journal, JournalStats, TrackStats

_STORE = {"SCHEMA_VERSION", "DeadLetter", "Journal", "JournalStats", "TrackStats"}


def __getattr__(name: str) -> object:
    """The store (and LMDB with it) is loaded on first use, so a pure module
    (the planner) can import the value types without it."""
    if name in _STORE:
        from . import store

        return getattr(store, name)
    if name == "lock_holder":
        from ._env import lock_holder

        return lock_holder
    raise AttributeError(f"module 'journal' has no attribute {name!r}")


__all__ = [
    "Journal",
    "lock_holder",
    "JournalStats",
    "TrackStats",
    "DeadLetter",
    "SCHEMA_VERSION",
    "Entry",
    "Record",
    "Op",
    "FileKind",
    "FileState",
    "Checkpoint",
    "Seq",
    "IS_DIR",
    "SEED_FLAG",
    "SUBTREE",
    "JournalError",
    "JournalLocked",
    "JournalCorrupt",
    "NotAJournal",
    "SchemaMismatch",
    "UnsafeJournal",
    "WrongRoot",
    "JournalFull",
    "CodecError",
    "DamagedRecord",
]
