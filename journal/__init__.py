"""The msync-agent journal: a durable LMDB log of file events.

Knows nothing of inotify, msync or the watched tree; it stores entries,
per-track progress, the manifest of shipped states and checkpoints.
"""

from ._env import lock_holder
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
from .store import SCHEMA_VERSION, DeadLetter, Journal, JournalStats, TrackStats
from .types import IS_DIR, SEED_FLAG, SUBTREE, Checkpoint, Entry, FileKind, FileState, Op, Record, Seq

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
