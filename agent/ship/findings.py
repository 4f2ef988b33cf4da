"""What a mirror audit reports: findings, and the error of a mirror that
could not be audited. Shared by every backend's audit and by ``agent verify``."""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import AgentError

__all__ = ["AuditError", "Finding"]


@dataclass(frozen=True)
class Finding:
    path: bytes
    why: str
    track: str | None = None  # one msync member's track; None = every track of the target


class AuditError(AgentError):
    """A mirror could not be audited (unreachable, tool missing)."""
