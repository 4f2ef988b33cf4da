"""Shared helpers for journal tests: child processes and polling."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")


def child_argv(*args: str) -> list[str]:
    return [PYTHON, "-m", "tests.journal._children", *args]


def spawn(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, *child_argv(*args)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_child(
    *args: str, prefix: tuple[str, ...] = (), timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *child_argv(*args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def stop(proc: subprocess.Popen[str]) -> None:
    """End a child this test started, by pid, and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


__all__ = ["PYTHON", "ROOT", "child_argv", "run_child", "spawn", "stop", "wait_until"]
