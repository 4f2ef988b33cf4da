"""Start and stop a real ``agent run`` process for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.helpers.descendants import remember

AGENT = Path(sys.executable).with_name("agent")


class AgentProcess:
    """``agent run`` as a child process; logs go to ``log_path`` (appended);
    ``env`` is added to the environment it inherits."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = [str(AGENT), "run", *args]
        self.log_path = log_path
        self.env = {**os.environ, **env} if env else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
        return self

    def kill(self) -> None:
        """SIGKILL the agent alone: its shipper processes run on, as they
        would after a real kill (the suite ends them after the test)."""
        if self.proc and self.proc.poll() is None:
            remember(self.proc.pid)
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def status(journal: Path, *extra: str) -> dict:
    out = subprocess.run(
        [str(AGENT), "status", "--json", "--journal", str(journal), *extra],
        capture_output=True,
        check=True,
    )
    return json.loads(out.stdout)


def wait_for_log(log_path: Path, event: str, timeout: float, start_at: int = 0) -> None:
    """Wait until the agent log (JSON lines) holds ``event`` after byte ``start_at``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event.encode() in log_path.read_bytes()[start_at:]:
            return
        time.sleep(0.05)
    raise AssertionError(f"{event} not logged within {timeout}s; log tail:\n{log_path.read_text()[-3000:]}")


def log_size(log_path: Path) -> int:
    return os.path.getsize(log_path) if log_path.exists() else 0


def converge(src: Path, mirror: Path, timeout: float = 120) -> None:
    """Wait until ``mirror`` equals ``src`` (content, type, mode, link targets);
    on timeout fail with the differences."""
    from tests.helpers.trees import assert_trees_equal, diff_trees

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not diff_trees(src, mirror):
                return
        except OSError:
            pass  # the mirror is changing under the comparison: look again
        time.sleep(0.2)
    assert_trees_equal(src, mirror)


def log_events(log_path: Path, name: str, start_at: int = 0) -> list[dict]:
    """The agent's JSON log records named ``name``, after byte ``start_at``."""
    out = []
    for line in log_path.read_bytes()[start_at:].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == name:
            out.append(rec)
    return out
