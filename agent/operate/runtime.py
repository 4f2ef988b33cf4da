"""The running agent's live counters, published as ``<journal>/runtime.json``.

``agent status`` runs in another process and cannot see the daemon's memory;
the daemon rewrites this small file about once a second (atomic rename).
Whether an agent runs is not read from here (the file outlives its writer):
status asks the journal's writer lock, and uses these counters only when
they name the lock's holder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "RUNTIME_FILE",
    "FAILING_LISTED",
    "write_runtime",
    "read_runtime",
    "encode_failing",
    "decode_failing",
]

RUNTIME_FILE = "runtime.json"
FAILING_LISTED = 1000  # failing paths published per track; more are only counted


def write_runtime(journal_dir: Path, data: dict[str, Any]) -> None:
    """Private like every journal file (0600 whatever the umask); a link left
    at the temporary name is replaced, never written through."""
    path = journal_dir / RUNTIME_FILE
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        f.write(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def read_runtime(journal_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((journal_dir / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None


def encode_failing(table: Mapping[tuple[str, bytes], tuple[str, int]]) -> dict[str, Any]:
    """The failing paths of the replayers, for ``agent verify``: per track,
    up to ``FAILING_LISTED`` ``[path, last error, unsuccessful tries]`` and
    how many more there are. Paths travel as surrogate-escaped text, which
    JSON carries as ``\\udcXX`` and :func:`decode_failing` turns back into
    the same bytes."""
    out: dict[str, Any] = {}
    for (track, path), (reason, tries) in sorted(table.items()):
        doc = out.setdefault(track, {"paths": [], "more": 0})
        if len(doc["paths"]) < FAILING_LISTED:
            doc["paths"].append([os.fsdecode(path), reason, tries])
        else:
            doc["more"] += 1
    return out


def decode_failing(data: Mapping[str, Any] | None) -> dict[str, tuple[dict[bytes, str], int]]:
    """Per track: {path: last error} and the count of failing paths not listed."""
    out: dict[str, tuple[dict[bytes, str], int]] = {}
    for track, doc in ((data or {}).get("failing") or {}).items():
        try:
            paths = {os.fsencode(p): str(reason) for p, reason, *_ in doc["paths"]}
            out[track] = (paths, int(doc.get("more", 0)))
        except (KeyError, TypeError, ValueError):
            continue  # written by another version: nothing usable
    return out
