"""A killed parent's children are found and ended by pid, never another process."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.helpers.descendants import descendants, end_descendants

_PARENT = """
import subprocess, sys, time
kid = subprocess.Popen(["sleep", "600"], start_new_session=True)
print(kid.pid, flush=True)
time.sleep(600)
"""


def test_an_orphan_of_a_killed_parent_is_ended() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    kid = int(parent.stdout.readline())
    found = descendants(parent.pid)
    assert kid in [pid for pid, _ in found]
    parent.kill()
    parent.wait()
    assert _alive(kid), "the orphan outlives its parent, as a shipper outlives a killed agent"
    assert end_descendants(found) == 1
    deadline = time.monotonic() + 10
    while _alive(kid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(kid)
    assert end_descendants(found) == 0, "an ended process is not signalled again"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
