"""The unit of work handed from the replayer to a shipper.

A plan is what the planner decided from coalesced journal entries: for each
path, put its *current* state on the mirror, or delete it there. Shippers
never see journal ops, moves or history.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ActionKind", "Action", "Plan", "tracks_for"]


class ActionKind(enum.Enum):
    PUT = "put"  # send the current state of the path (missing at ship time: delete)
    DELETE = "delete"  # remove the path on the mirror, recursively for a directory


@dataclass(frozen=True, slots=True)
class Action:
    """One path to bring up to date.

    ``recursive`` (PUT of a directory) also sends the whole subtree, used when
    a directory arrived by a move. ``tracks`` names the progress tracks (a
    target, or target/member for msync) that still need this action; the
    shipper reports a result for each of them. ``seqs`` are the journal
    entries this action marks done, carried for the replayer's bookkeeping.
    """

    kind: ActionKind
    path: bytes
    recursive: bool = False
    tracks: frozenset[str] = frozenset()
    seqs: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    """Actions in shipping order: parents before children on PUT, children
    before parents on DELETE, and a delete of a path before a PUT that
    replaces it."""

    actions: tuple[Action, ...]

    def __len__(self) -> int:
        return len(self.actions)

    def __bool__(self) -> bool:
        return bool(self.actions)


def tracks_for(action: Action, tracks: Sequence[str]) -> tuple[str, ...]:
    """The shipper's tracks this action asks for (all of them when it names none)."""
    return tuple(t for t in tracks if not action.tracks or t in action.tracks)
