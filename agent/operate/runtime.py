"""The running agent's live counters, published as ``<journal>/runtime.json``.

``agent status`` runs in another process and cannot see the daemon's memory;
the daemon rewrites this small file about once a second (atomic rename).
Whether an agent runs is not read from here (the file outlives its writer):
status asks the journal's writer lock, and uses these counters only when
they name the lock's holder.

The file is one :class:`Runtime`: :meth:`Runtime.to_json` is its only
writer, :meth:`Runtime.from_json` its only reader, which takes a file of an
older (or newer) version: a field it lacks gets its default, a part of the
wrong shape is dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "RUNTIME_FILE",
    "FAILING_LISTED",
    "TargetCounters",
    "Rates",
    "FailingPaths",
    "Runtime",
    "failing_paths",
    "failing_reasons",
    "write_runtime",
    "read_runtime",
]

RUNTIME_FILE = "runtime.json"
FAILING_LISTED = 1000  # failing paths published per track; more are only counted

_T = TypeVar("_T")


@dataclass(frozen=True)
class TargetCounters:
    """Ship results of one target's replayer since the agent started."""

    shipped_ok: int = 0
    retries: int = 0
    failures: int = 0


@dataclass(frozen=True)
class Rates:
    """Entries journaled and paths shipped OK per second, over the last second."""

    in_per_s: float = 0.0
    out_per_s: float = 0.0


@dataclass(frozen=True)
class FailingPaths:
    """One track's failing paths: path -> (last error, unsuccessful tries),
    at most :data:`FAILING_LISTED` of them, and how many more there are."""

    paths: dict[bytes, tuple[str, int]] = field(default_factory=dict)
    more: int = 0


@dataclass(frozen=True)
class Runtime:
    """What a running agent publishes. ``rates`` is None until known."""

    pid: int | None = None
    started_ns: int = 0
    updated_ns: int = 0
    events_in: int = 0
    entries_journaled: int = 0
    overflows: int = 0
    targets: dict[str, TargetCounters] = field(default_factory=dict)
    rates: Rates | None = None
    failing: dict[str, FailingPaths] = field(default_factory=dict)

    def to_json(self) -> str:
        """The file's text. Paths travel as surrogate-escaped text, which
        JSON carries as ``\\udcXX`` and :meth:`from_json` turns back into the
        same bytes."""
        doc: dict[str, Any] = {
            "started_ns": self.started_ns,
            "updated_ns": self.updated_ns,
            "events_in": self.events_in,
            "entries_journaled": self.entries_journaled,
            "overflows": self.overflows,
            "targets": {name: asdict(c) for name, c in self.targets.items()},
            "failing": {
                track: {"paths": [[os.fsdecode(p), r, n] for p, (r, n) in f.paths.items()], "more": f.more}
                for track, f in self.failing.items()
            },
        }
        if self.pid is not None:
            doc["pid"] = self.pid
        if self.rates is not None:
            doc["rates"] = asdict(self.rates)
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Runtime:
        """A runtime from the file's text; ValueError when it is not a JSON object."""
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("runtime.json does not hold an object")
        rates = doc.get("rates")
        return cls(
            pid=_int(doc.get("pid"), None),
            started_ns=_int(doc.get("started_ns"), 0),
            updated_ns=_int(doc.get("updated_ns"), 0),
            events_in=_int(doc.get("events_in"), 0),
            entries_journaled=_int(doc.get("entries_journaled"), 0),
            overflows=_int(doc.get("overflows"), 0),
            targets=_each(doc.get("targets"), _counters),
            rates=_rates(rates) if isinstance(rates, dict) else None,
            failing=_each(doc.get("failing"), _failing),
        )


def failing_paths(table: Mapping[tuple[str, bytes], tuple[str, int]]) -> dict[str, FailingPaths]:
    """The replayers' failing paths ((track, path) -> (last error, tries)),
    per track, up to :data:`FAILING_LISTED` listed and the rest counted."""
    listed: dict[str, dict[bytes, tuple[str, int]]] = {}
    more: dict[str, int] = {}
    for (track, path), why in sorted(table.items()):
        paths = listed.setdefault(track, {})
        if len(paths) < FAILING_LISTED:
            paths[path] = why
        else:
            more[track] = more.get(track, 0) + 1
    return {track: FailingPaths(paths, more.get(track, 0)) for track, paths in listed.items()}


def failing_reasons(runtime: Runtime | None) -> dict[str, tuple[dict[bytes, str], int]]:
    """For ``agent verify``, per track: {path: last error} and the count of
    failing paths not listed."""
    if runtime is None:
        return {}
    return {
        track: ({p: reason for p, (reason, _) in f.paths.items()}, f.more)
        for track, f in runtime.failing.items()
    }


def write_runtime(journal_dir: Path, runtime: Runtime) -> None:
    """Private like every journal file (0600 whatever the umask); a link left
    at the temporary name is replaced, never written through."""
    path = journal_dir / RUNTIME_FILE
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        f.write(runtime.to_json())
    os.replace(tmp, path)


def read_runtime(journal_dir: Path) -> Runtime | None:
    """The published runtime, or None when there is none or it is unreadable."""
    try:
        return Runtime.from_json((journal_dir / RUNTIME_FILE).read_bytes())
    except (OSError, ValueError):
        return None


def _int(value: object, default: _T) -> int | _T:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _each(value: object, parse: Callable[[Any], _T]) -> dict[str, _T]:
    """``parse`` of every entry of a JSON object; an entry it refuses is dropped."""
    out: dict[str, _T] = {}
    for key, item in (value if isinstance(value, dict) else {}).items():
        try:
            out[str(key)] = parse(item)
        except (KeyError, TypeError, ValueError):
            continue  # written by another version: nothing usable
    return out


def _counters(doc: Any) -> TargetCounters:
    if not isinstance(doc, dict):
        raise TypeError("not an object")
    return TargetCounters(*(_int(doc.get(k), 0) for k in ("shipped_ok", "retries", "failures")))


def _rates(doc: dict[str, Any]) -> Rates:
    return Rates(_float(doc.get("in_per_s")), _float(doc.get("out_per_s")))


def _failing(doc: Any) -> FailingPaths:
    paths = {os.fsencode(p): (str(reason), int(rest[0]) if rest else 0) for p, reason, *rest in doc["paths"]}
    return FailingPaths(paths, int(doc.get("more", 0)))
