"""``_exec.abort_all``: a stopping agent ends blocked programs at once."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.ship import process as _exec
from agent.ship.process import ExecResult
from tests.helpers.wait import wait_until


@pytest.fixture(autouse=True)
def _resumed() -> Iterator[None]:
    yield
    _exec.resume()


def test_abort_ends_the_whole_group_and_refuses_new_programs(tmp_path: Path) -> None:
    """A running child and its own child are killed; later calls start nothing."""
    pids = tmp_path / "pids"
    script = f"sleep 600 & echo $! > {pids}; echo $$ >> {pids}; wait"
    got: list[ExecResult] = []
    worker = threading.Thread(target=lambda: got.append(_exec.run(["/bin/sh", "-c", script], timeout=600)))
    worker.start()
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, timeout=30)
    assert _exec.abort_all() == 1
    worker.join(30)
    assert not worker.is_alive() and got[0].aborted and got[0].returncode < 0
    for pid in map(int, pids.read_text().split()):
        wait_until(lambda pid=pid: not _alive(pid), timeout=10, message=f"{pid} survived")
    later = _exec.run(["/bin/sh", "-c", f"echo ran > {tmp_path / 'ran'}"], timeout=30)
    assert later.aborted and not (tmp_path / "ran").exists()
    _exec.resume()
    assert _exec.run(["/bin/true"], timeout=30).returncode == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
    return True


def test_a_quiet_child_is_killed_as_stalled_and_its_output_kept() -> None:
    """``idle_timeout``: output so far is returned; silence ends the group."""
    res = _exec.run(["/bin/sh", "-c", "echo one; echo two >&2; sleep 600"], timeout=600, idle_timeout=0.5)
    assert res.stalled and res.returncode < 0
    assert (res.stdout, res.stderr) == (b"one\n", b"two\n")


def test_a_child_that_keeps_talking_is_not_stalled() -> None:
    """Steady output, slower overall than the idle limit, runs to its end."""
    script = "for i in 1 2 3 4 5 6; do echo $i; sleep 0.5; done"
    res = _exec.run(["/bin/sh", "-c", script], timeout=600, idle_timeout=2.0)
    assert not res.stalled and res.returncode == 0 and res.stdout.split() == [b"%d" % i for i in range(1, 7)]
