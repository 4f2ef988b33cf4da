"""The shipper contract: every transport (local, rsync, msync) implements it.

A shipper brings mirror paths to the source's *current* state. Shipping is
at-least-once and idempotent: shipping the same action twice is harmless,
because the current state is sent, not a diff. A shipper never raises for a
single path: it reports every (track, path) of the plan with an outcome.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agent.ship.actions import Plan

__all__ = ["Outcome", "ShipResult", "Shipper"]


class Outcome(enum.Enum):
    OK = "ok"  # proven on the mirror: the entry may be marked done
    RETRY = "retry"  # transient (target down, file changing, timeout): try again later
    FAILED = "failed"  # permanent for this path (name cannot be carried, ...): dead-letter after N tries


@dataclass(frozen=True, slots=True)
class ShipResult:
    track: str
    path: bytes
    outcome: Outcome
    reason: str = ""


@runtime_checkable
class Shipper(Protocol):
    """One target. ``tracks`` are the progress tracks it reports on: the
    target name for local and rsync, ``target/member`` for each expected msync
    member. A shipper may also have ``restamps_parents``: the action kinds
    after which the mirror's parent directory of the path has the source's
    mtime (the replayer then records that mtime in the manifest)."""

    name: str
    tracks: tuple[str, ...]

    def ship(self, plan: Plan) -> Sequence[ShipResult]:
        """Ship every action of ``plan`` to the tracks it names; return one result
        per (track, path). Must not raise for per-path problems; may raise only
        for programming errors."""
        ...

    def close(self) -> None:
        """Release resources (connections, temp dirs). Idempotent."""
        ...
