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


def test_a_grandchild_waiting_to_open_a_fifo_ends_the_group(tmp_path: Path) -> None:
    """``fifo_wait_limit``: a process of the group blocked opening a fifo for
    reading (no writer will come: a source file replaced by a fifo) ends the
    call as ``fifo_blocked`` long before its timeout, with the output so far;
    stdin is still delivered whole."""
    fifo = tmp_path / "was-a-file"
    os.mkfifo(fifo)
    script = f"cat; echo opening >&2; sh -c 'cat < \"$1\"' sh {fifo}; echo never"
    res = _exec.run(["/bin/sh", "-c", script, "sh"], timeout=600, stdin=b"names\n", fifo_wait_limit=0.5)
    assert res.fifo_blocked and res.returncode < 0 and not res.timed_out
    assert (res.stdout, res.stderr) == (b"names\n", b"opening\n")
    assert res.seconds < 300  # not the timeout: nothing else could have ended it


def test_a_busy_child_with_a_fifo_limit_runs_to_its_end() -> None:
    """Ordinary children are not touched, however long they run; input and output whole."""
    data = bytes(range(256)) * 4096  # more than a pipe buffer both ways
    res = _exec.run(["/bin/sh", "-c", "sleep 1.5; cat"], timeout=600, stdin=data, fifo_wait_limit=0.5)
    assert not res.fifo_blocked and res.returncode == 0 and res.stdout == data


def test_a_child_that_closes_its_pipes_still_meets_its_timeout() -> None:
    """Watching the pipes ends when they close; the wait for the child after
    that still stops at the timeout (a child may close them and hang on)."""
    res = _exec.run(["/bin/sh", "-c", "exec >&- 2>&-; sleep 600"], timeout=1.0, fifo_wait_limit=5.0)
    assert res.timed_out and res.returncode < 0
