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
from pathlib import Path
from typing import Any

__all__ = ["RUNTIME_FILE", "write_runtime", "read_runtime"]

RUNTIME_FILE = "runtime.json"


def write_runtime(journal_dir: Path, data: dict[str, Any]) -> None:
    path = journal_dir / RUNTIME_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def read_runtime(journal_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((journal_dir / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None
