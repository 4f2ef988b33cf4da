"""Metadata changed while the agent is stopped reaches the mirror, and a
clean restart still enqueues nothing, with the real agent and a local mirror.

mtime (of files, directories and symlinks), mode and owner are shipped
state. Directories are the hard part: their mtime moves whenever an entry
is added, removed or renamed, so the manifest must follow what the mirror's
directories got, or every restart would ship them again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.crash.agent_process import AGENT, AgentProcess, converge, log_events, log_size, wait_for_log
from tests.helpers.wait import wait_until

OLD_NS = 981_158_400 * 10**9  # touch -d 2001-02-03


@pytest.fixture
def setup(tmp_path: Path):
    src, mirror, journal = tmp_path / "src", tmp_path / "mirror", tmp_path / "journal"
    for d in (src, mirror):
        d.mkdir()
    args = ["--root", str(src), "--journal", str(journal), "--target", f"local:{mirror}"]
    agent = AgentProcess(args, tmp_path / "agent.log")
    yield src, mirror, agent, args
    agent.kill()


def startup_scan(agent: AgentProcess) -> dict:
    """Start the agent and return its startup scan's report."""
    mark = log_size(agent.log_path)
    agent.start()
    wait_for_log(agent.log_path, '"reason": "startup"', 60, mark)
    return log_events(agent.log_path, "scan.recovery", mark)[0]


def mtimes(top: Path, rels: list[str]) -> list[int]:
    return [os.lstat(top / rel).st_mtime_ns for rel in rels]


def same_mtimes(src: Path, mirror: Path, rels: list[str]) -> bool:
    try:
        return mtimes(src, rels) == mtimes(mirror, rels)
    except FileNotFoundError:
        return False


def build_while_running(src: Path, mirror: Path, agent: AgentProcess) -> None:
    """A tree whose directories get entries added, removed and renamed after
    they were shipped (each of those moves the directory's mtime)."""
    (src / "d" / "sub").mkdir(parents=True)
    (src / "e").mkdir()
    agent.start()
    converge(src, mirror)
    for i in range(5):
        (src / "d" / f"f{i}").write_bytes(b"%d" % i)
        (src / "d" / "sub" / f"g{i}").write_bytes(b"g")
    (src / "e" / "x").write_bytes(b"x")
    os.symlink("f0", src / "d" / "ln")
    converge(src, mirror)
    (src / "d" / "f4").unlink()
    os.rename(src / "d" / "f3", src / "d" / "sub" / "f3")
    os.rename(src / "e" / "x", src / "e" / "y")
    converge(src, mirror)
    rels = ["d", "d/sub", "e", "d/f0", "d/ln"]
    wait_until(lambda: same_mtimes(src, mirror, rels), timeout=60, message="directory mtimes differ")
    assert agent.terminate() == 0


@pytest.mark.parametrize("full", [False, True], ids=["checkpoint", "full"])
def test_touch_d_while_stopped_reaches_the_mirror(setup, full: bool) -> None:
    """``touch -d 2001-02-03`` on a file, directories and a symlink while the
    agent is stopped (content unchanged) reaches the mirror, mtime_ns equal,
    through the startup scan (from the checkpoint) or ``agent scan --full``;
    before and after, a clean restart enqueues nothing."""
    src, mirror, agent, args = setup
    build_while_running(src, mirror, agent)
    clean = startup_scan(agent)
    assert agent.terminate() == 0
    assert (clean["enqueued_changes"], clean["enqueued_deletes"]) == (0, 0)
    touched = ["d/f0", "d", "d/sub", "e", "d/ln"]
    for rel in touched:
        os.utime(src / rel, ns=(OLD_NS, OLD_NS), follow_symlinks=False)
    if full:
        subprocess.run([str(AGENT), "scan", "--full", *args], check=True, capture_output=True)
    report = startup_scan(agent)
    wait_until(lambda: same_mtimes(src, mirror, touched), timeout=60, message="touch -d did not arrive")
    converge(src, mirror)
    assert mtimes(mirror, touched) == [OLD_NS] * len(touched)
    assert agent.terminate() == 0
    if not full:
        assert report["enqueued_changes"] == len(touched)  # those, and nothing else
    again = startup_scan(agent)
    assert agent.terminate() == 0
    assert (again["enqueued_changes"], again["enqueued_deletes"]) == (0, 0)
