"""The last ``agent verify`` result, kept in the journal directory.

Cron runs ``verify``; the running agent exports its last result as metrics
and ``status`` shows it, so an alert can fire on drift, on errors, or on a
verify that stopped running. Written atomically, mode 0600, like the other
files of the journal directory; a missing or unreadable file means "never".
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TRACE_FILE", "TargetTrace", "VerifyTrace", "trace_from_report", "write_trace", "read_trace"]

TRACE_FILE = "last-verify.json"


@dataclass(frozen=True)
class TargetTrace:
    drift: int = 0
    lag: int = 0
    error: str | None = None


@dataclass(frozen=True)
class VerifyTrace:
    time_ns: int
    result: str  # "clean", "drift" or "error"
    local: int = 0  # changes the journal missed
    targets: dict[str, TargetTrace] = field(default_factory=dict)

    def age_s(self, now_ns: int | None = None) -> float:
        return max(0.0, ((time.time_ns() if now_ns is None else now_ns) - self.time_ns) / 1e9)


def trace_from_report(doc: dict[str, Any], now_ns: int | None = None) -> VerifyTrace:
    """The summary of a verify report (the ``--json`` document)."""
    targets = {
        name: TargetTrace(len(t.get("drift", [])), len(t.get("lag", [])), t.get("error"))
        for name, t in doc.get("targets", {}).items()
    }
    error = any(t.error for t in targets.values())
    result = "clean" if doc.get("clean") else "error" if error else "drift"
    return VerifyTrace(
        time.time_ns() if now_ns is None else now_ns, result, len(doc.get("local", [])), targets
    )


def write_trace(journal_dir: Path, trace: VerifyTrace) -> None:
    """Replace the trace atomically; the file is created 0600."""
    path = journal_dir / TRACE_FILE
    tmp = path.with_name(f".{TRACE_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(asdict(trace), sort_keys=True).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_trace(journal_dir: Path) -> VerifyTrace | None:
    try:
        raw = json.loads((journal_dir / TRACE_FILE).read_text())
        targets = {name: TargetTrace(**t) for name, t in raw.get("targets", {}).items()}
        return VerifyTrace(int(raw["time_ns"]), str(raw["result"]), int(raw.get("local", 0)), targets)
    except (OSError, ValueError, KeyError, TypeError):
        return None
