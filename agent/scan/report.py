"""What a scan reports: periodic progress and the final counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ScanProgress", "ScanReport"]


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """Periodic progress of a running scan (for a progress bar or log line)."""

    files_seen: int
    dirs_seen: int
    hashed: int
    bytes_hashed: int
    enqueued: int
    elapsed_s: float
    current: bytes  # the directory being scanned


@dataclass(slots=True)
class ScanReport:
    """What one scan saw and did. ``reenqueued_pending`` is None when the
    journal's backlog was too large to check."""

    files_seen: int = 0
    dirs_seen: int = 0
    suspects: int = 0
    hashed: int = 0
    bytes_hashed: int = 0
    enqueued_changes: int = 0
    enqueued_deletes: int = 0
    reenqueued_pending: int | None = 0
    skipped: int = 0
    errors: int = 0
    seconds: float = 0.0
    helpers: int = 0  # processes that shared the walk (agent.scan.team)

    def summary(self) -> dict[str, object]:
        return asdict(self)

    def add(self, counts: dict[str, int]) -> None:
        """Add a helper's counts (the integer fields it reports)."""
        for key, value in counts.items():
            setattr(self, key, getattr(self, key) + value)
