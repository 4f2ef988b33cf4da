"""What the manifest takes from a ship (pure decisions, no I/O).

After a ship, each track's OK results become manifest updates: the states
captured for its puts, removals for its deletes, each with the journal entry
it comes from, since the manifest is shared by tracks that finish at their
own pace (journal/_manifest.py). A captured state the shipped entries do not
explain is not taken; its path is journaled again instead (agent/ship/absorb.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from agent.ship.absorb import unexplained
from agent.ship.planner import CompletionMap
from journal import Entry, FileState, Op, Record

__all__ = [
    "Key",
    "absorbable",
    "again_entries",
    "track_updates",
    "cleared_trees",
    "removed_at",
    "last_seq",
    "at_or_below",
]

Key = tuple[str, bytes]


def absorbable(
    states: Mapping[bytes, Mapping[bytes, FileState | None]],
    records: Sequence[Record],
    now_ns: int,
    shipped: Callable[[bytes], FileState | None],
) -> tuple[dict[bytes, dict[bytes, FileState | None]], set[bytes]]:
    """The captured states without those the shipped entries do not explain
    (see :mod:`agent.ship.absorb`), and those paths: the manifest keeps its old
    state for them, and they are journaled again for every track, so a track
    that shipped them before gets the change whose event may be lost. The
    renewed mtimes of parent directories are the shippers' own doing and
    always kept."""
    own = {rel: s for top, got in states.items() for rel, s in got.items() if at_or_below(rel, top)}
    # only a state some track was given can be held by a mirror that missed the change
    drop = {p for p in unexplained(records, own, now_ns) if shipped(p) is not None}
    kept = {top: {rel: s for rel, s in got.items() if rel not in drop} for top, got in states.items()}
    return kept, drop


def again_entries(
    paths: set[bytes], states: Mapping[bytes, Mapping[bytes, FileState | None]], now_ns: int
) -> list[Entry]:
    """Entries that explain what was found: a DELETE for a path found gone
    (a CHANGE would find it gone again and explain nothing), a CHANGE for a
    path found changed."""
    found = {rel: s for got in states.values() for rel, s in got.items() if rel in paths}
    return [
        Entry(Op.CHANGE if found.get(p) is not None else Op.DELETE, p, time_ns=now_ns) for p in sorted(paths)
    ]


def track_updates(
    track: str,
    ok_paths: Sequence[bytes],
    completions: CompletionMap,
    puts: set[Key],
    states: Mapping[bytes, Mapping[bytes, FileState | None]],
) -> tuple[dict[bytes, FileState | None], dict[bytes, int]]:
    """Manifest updates for one track: None for what OK deletes removed
    (the path and the touched paths below it), then the captured states of
    OK puts, which win for a path that was re-created. With each, the entry
    it comes from: a removal the entry that removed the path, a state the
    newest entry of its path."""
    out: dict[bytes, FileState | None] = {}
    origin: dict[bytes, int] = {}
    for path in ok_paths:
        rule = completions.get((track, path))
        removed, last = removed_at(completions, track, path), last_seq(completions, track, path)
        gone = rule.gone if rule else ()
        out.update(dict.fromkeys(gone, None))
        origin.update(dict.fromkeys(gone, removed))
        if (track, path) not in puts:
            out[path], origin[path] = None, removed
            for p, s in states.get(path, {}).items():
                if not at_or_below(p, path):
                    out[p], origin[p] = s, last
    for path in ok_paths:
        if (track, path) in puts:
            got = states.get(path, {})
            out.update(got)
            origin.update(dict.fromkeys(got, last_seq(completions, track, path)))
    return out, origin


def removed_at(completions: CompletionMap, track: str, path: bytes) -> int:
    rule = completions.get((track, path))
    return rule.removed_at if rule else 0


def last_seq(completions: CompletionMap, track: str, path: bytes) -> int:
    rule = completions.get((track, path))
    return max(rule.seqs) if rule and rule.seqs else 0


def at_or_below(path: bytes, top: bytes) -> bool:
    return path == top or path.startswith(top + b"/")


def cleared_trees(track: str, deletes: Sequence[Key], completions: CompletionMap) -> dict[bytes, int]:
    """The trees a track's OK deletes removed on its mirror, each with the
    entry that removed it: the manifest forgets what is below them that was
    recorded before."""
    return {p: removed_at(completions, track, p) for t, p in sorted(deletes) if t == track}
