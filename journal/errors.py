"""Journal errors: one class per failure kind, each with a hint for the operator."""

from __future__ import annotations

__all__ = [
    "JournalError",
    "JournalLocked",
    "JournalCorrupt",
    "NotAJournal",
    "UnsafeJournal",
    "SchemaMismatch",
    "WrongRoot",
    "JournalFull",
    "CodecError",
    "DamagedRecord",
    "RECOVERY_HINT",
]

RECOVERY_HINT = (
    "move the journal directory aside (keep it for inspection) and start the agent again: "
    "the startup scan rebuilds the journal from the tree; then run 'agent verify --repair' "
    "to re-ship whatever the mirrors lack"
)


class JournalError(Exception):
    """Base class. ``hint`` tells the operator what to do; ``recoverable`` says
    whether retrying later may succeed without human action."""

    hint = ""
    recoverable = False

    def __init__(self, message: str, *, path: str = "", hint: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:  # message plus hint, as the CLI prints it
        base = super().__str__()
        return f"{base} (hint: {self.hint})" if self.hint else base


class JournalLocked(JournalError):
    """Another agent already writes this journal."""

    hint = "another 'agent run' holds this journal; stop it or use a different --journal"

    def __init__(self, message: str, *, path: str = "", holder_pid: int | None = None) -> None:
        super().__init__(message, path=path)
        self.holder_pid = holder_pid


class JournalCorrupt(JournalError):
    """The journal's files cannot be read or fail validation. Nothing damaged
    is ever rewritten: the journal cannot be trusted, so it is set aside."""

    hint = RECOVERY_HINT


class NotAJournal(JournalError):
    """The directory holds files that are not a journal; nothing is overwritten."""

    hint = "point --journal at an empty directory or an existing msync-agent journal"


class UnsafeJournal(JournalError):
    """The directory is writable by someone other than its user: whoever can
    write there can swap the journal's files for links and make the agent
    write wherever they point. Nothing is opened; the hint names the fix."""

    hint = "make the journal directory owned by the agent's user and writable by it alone"


class SchemaMismatch(JournalError):
    """The journal was written by a different schema version."""

    hint = "use the msync-agent version that wrote this journal, or start a new journal"


class WrongRoot(JournalError):
    """The journal belongs to another watched root."""

    hint = "each root needs its own journal directory; check --root and --journal"


class JournalFull(JournalError):
    """The filesystem holding the journal is out of space. The journal is intact."""

    hint = "free space on the journal's filesystem; the agent resumes where it stopped"
    recoverable = True


class CodecError(JournalError):
    """A record cannot be encoded (a value out of range) or decoded."""

    hint = RECOVERY_HINT


class DamagedRecord(JournalCorrupt, CodecError):
    """A stored value fails its checksum or does not decode: the bytes were
    damaged on disk (LMDB keeps no checksums of its own)."""
