"""The running agent's live counters, published as ``<journal>/runtime.json``.

``agent status`` runs in another process and cannot see the daemon's memory;
the daemon rewrites this small file about once a second (atomic rename), and
status treats it as live only while it is fresh and its pid exists.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["RUNTIME_FILE", "write_runtime", "read_runtime", "is_live"]

RUNTIME_FILE = "runtime.json"
FRESH_S = 5.0


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


def is_live(data: dict[str, Any] | None, now_ns: int | None = None) -> bool:
    """True when ``data`` was written recently by a process that still exists."""
    if not data:
        return False
    now = time.time_ns() if now_ns is None else now_ns
    if now - int(data.get("updated_ns", 0)) > FRESH_S * 1e9:
        return False
    try:
        os.kill(int(data["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return False
    except PermissionError:
        return True
    return True
