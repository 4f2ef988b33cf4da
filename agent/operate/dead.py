"""``agent dead``: list dead letters, retry them, or drop them after a fix by hand.

A dead letter is a path that failed for a permanent reason ``max_attempts``
times; it never blocks other paths, but its mirror copy stays stale until
the operator acts. ``retry`` requeues it (the current state of its path is
shipped again), ``drop`` forgets it (the operator repaired the mirror). Both
work beside a running agent: they append or delete under the journal's
client lock, and the agent ships what was requeued.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import structlog

from agent.operate.config import Config, ConfigError
from agent.operate.logs import safe_path
from journal import DeadLetter, Journal, JournalLocked, Op

__all__ = ["list_dead", "retry_dead", "drop_dead", "path_args", "group_letters"]

log = structlog.get_logger("agent.operate.dead")


def path_args(root: bytes | None, args: Sequence[str]) -> list[bytes]:
    """Journal paths (bytes relative to the root) from command-line words:
    a relative path as given, or an absolute path inside the root."""
    out = []
    for arg in args:
        raw = os.fsencode(arg)
        if raw.startswith(b"/"):
            if root is None or not (raw == root or raw.startswith(root.rstrip(b"/") + b"/")):
                raise ConfigError(
                    f"path {safe_path(raw)} is not inside the root",
                    hint="give paths relative to the root, as `agent dead` lists them",
                )
            raw = raw[len(root.rstrip(b"/")) + 1 :]
        out.append(raw.strip(b"/"))
    return out


@dataclass
class _Group:
    """The dead letters of one path on one track (one per failed entry)."""

    track: str
    path: bytes
    letters: list[DeadLetter] = field(default_factory=list)

    def as_json(self, now_ns: int) -> dict[str, Any]:
        newest = max(self.letters, key=lambda d: d.record.seq)
        first = min((d.record.entry.time_ns for d in self.letters if d.record.entry.time_ns), default=0)
        return {
            "track": self.track,
            "path": safe_path(self.path),
            "reason": _one_line(newest.reason),
            "entries": len(self.letters),
            "seqs": sorted(d.record.seq for d in self.letters),
            "since": first / 1e9 if first else None,
            "age_s": max(0.0, (now_ns - first) / 1e9) if first else None,
        }


def group_letters(letters: Sequence[DeadLetter]) -> list[_Group]:
    """One group per (track, path), in track and path order."""
    groups: dict[tuple[str, bytes], _Group] = {}
    for d in letters:
        path = d.record.entry.dest if d.record.entry.op == Op.MOVE else d.record.entry.path
        groups.setdefault((d.track, path), _Group(d.track, path)).letters.append(d)
    return [groups[k] for k in sorted(groups)]


def _one_line(text: str) -> str:
    """A reason may quote a path with control characters: keep it on one line."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def list_dead(config: Config, track: str | None, as_json: bool, out: IO[str]) -> int:
    """Print the dead letters, one line per path and track; exit 0 when there
    are none, 1 when there are."""
    now = time.time_ns()
    with Journal.open(config.journal, root=_root(config), mode="read") as journal:
        letters = journal.dead_letters(track)
    docs = [g.as_json(now) for g in group_letters(letters)]
    if as_json:
        out.write(json.dumps({"dead_letters": docs}, indent=2) + "\n")
    else:
        for d in docs:
            age = "" if d["age_s"] is None else f", {d['age_s'] / 3600:.1f}h"
            out.write(f"{d['track']}: {d['path']}: {d['reason']} ({d['entries']} entries{age})\n")
        out.write(f"{len(docs)} dead paths\n")
    return 1 if docs else 0


def retry_dead(config: Config, track: str | None, paths: Sequence[bytes] | None, out: IO[str]) -> int:
    """Requeue dead letters (all, or those naming ``paths``)."""
    with _writable(config) as journal:
        _check_known(journal, track, paths)
        count = journal.requeue_dead(track, paths=set(paths) if paths is not None else None)
    log.info("dead.retry", letters=count, track=track, paths=[safe_path(p) for p in paths or ()])
    out.write(f"requeued {count} dead letters; the agent ships them (see `agent status`)\n")
    return 0


def drop_dead(config: Config, track: str | None, paths: Sequence[bytes], out: IO[str]) -> int:
    """Forget the dead letters naming ``paths``; each is logged."""
    with _writable(config) as journal:
        _check_known(journal, track, paths)
        dropped = journal.drop_dead(track, set(paths))
    groups = group_letters(dropped)
    for group in groups:
        log.warning(
            "dead.dropped",
            track=group.track,
            path=safe_path(group.path),
            entries=len(group.letters),
            reason=group.letters[-1].reason,
            note="the operator fixed this path by hand",
        )
    out.write(f"dropped {len(groups)} dead paths ({len(dropped)} entries)\n")  # the listing's unit
    return 0


def _check_known(journal: Journal, track: str | None, paths: Sequence[bytes] | None) -> None:
    """Refuse (changing nothing) when a named path has no dead letter."""
    if paths is None:
        return
    named = set()
    for d in journal.dead_letters(track):
        named.add(d.record.entry.path)
        named.add(d.record.entry.dest)
    unknown = [p for p in paths if p not in named]
    if unknown:
        raise ConfigError(
            f"no dead letter for {safe_path(unknown[0])}" + (f" on {track}" if track else ""),
            hint="`agent dead` lists the dead letters and their paths",
        )


def _root(config: Config) -> str | None:
    return str(config.root) if config.root is not None else None


def _writable(config: Config) -> Journal:
    """The journal as the agent (none runs) or as a client beside it."""
    if not (config.journal / "data.mdb").exists():
        raise ConfigError(f"journal: no journal at {config.journal}", hint="start `agent run` first")
    try:
        return Journal.open(config.journal, root=_root(config), mode="agent")
    except JournalLocked:
        return Journal.open(config.journal, root=_root(config), mode="client")
