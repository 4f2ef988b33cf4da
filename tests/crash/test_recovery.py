"""Recovery without the watcher's help: changes made while the agent was
stopped, a clean restart that costs nothing, and inotify queue overflow."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.crash.agent_process import AgentProcess, converge, log_events, log_size, wait_for_log


@pytest.fixture
def setup(tmp_path: Path):
    src, mirror, journal = tmp_path / "src", tmp_path / "mirror", tmp_path / "journal"
    for d in (src, mirror):
        d.mkdir()
    agent = AgentProcess(
        ["--root", str(src), "--journal", str(journal), "--target", f"local:{mirror}"], tmp_path / "agent.log"
    )
    yield src, mirror, agent
    agent.kill()


def test_changes_while_stopped_are_replicated(setup) -> None:
    """Deletes, new files and a same-size rewrite with the old mtime restored,
    all made while the agent is down, reach the mirror after restart."""
    src, mirror, agent = setup
    (src / "keep.txt").write_bytes(b"AAAA\n")
    (src / "gone.txt").write_bytes(b"bye\n")
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "tree" / "sub" / "f").write_bytes(b"deep\n")
    agent.start()
    converge(src, mirror)
    assert agent.terminate() == 0

    st = os.stat(src / "keep.txt")
    (src / "keep.txt").write_bytes(b"BBBB\n")  # same size
    os.utime(src / "keep.txt", ns=(st.st_atime_ns, st.st_mtime_ns))  # old mtime restored
    (src / "gone.txt").unlink()
    for p in sorted((src / "tree").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (src / "tree").rmdir()
    (src / "new.txt").write_bytes(b"new\n")
    mark = log_size(agent.log_path)
    agent.start()
    converge(src, mirror)
    assert (mirror / "keep.txt").read_bytes() == b"BBBB\n"
    assert not (mirror / "tree").exists()
    assert agent.terminate() == 0
    startup = log_events(agent.log_path, "scan.recovery", mark)[0]
    assert startup["enqueued_changes"] >= 2 and startup["enqueued_deletes"] >= 1


def test_directory_recreated_while_stopped_after_a_move(setup) -> None:
    """A directory moved away (shipped: the mirror dropped its old place) and
    re-created at the old place while the agent is down, with a child of the
    old name and mode, reaches the mirror: what the manifest knew below the
    old place left with it (a crash loop once found it missing)."""
    src, mirror, agent = setup
    (src / "d6" / "sub").mkdir(parents=True)
    (src / "d6" / "sub" / "f").write_bytes(b"old\n")
    agent.start()
    converge(src, mirror)
    os.rename(src / "d6", src / "d19")
    converge(src, mirror)
    assert agent.terminate() == 0
    (src / "d6" / "sub").mkdir(parents=True)
    agent.start()
    converge(src, mirror)
    assert (mirror / "d6" / "sub").is_dir() and (mirror / "d19" / "sub" / "f").exists()
    assert agent.terminate() == 0


def test_clean_restart_enqueues_and_hashes_nothing(setup) -> None:
    """After a clean stop with nothing changed, the startup scan reads no file."""
    src, mirror, agent = setup
    for i in range(50):
        (src / f"f{i}").write_bytes(os.urandom(100))
    agent.start()
    converge(src, mirror)
    time.sleep(2.5)  # let every file's ctime fall behind the checkpoint slack
    assert agent.terminate() == 0
    mark = log_size(agent.log_path)
    agent.start()
    wait_for_log(agent.log_path, '"reason": "startup"', 30, mark)
    assert agent.terminate() == 0
    last = log_events(agent.log_path, "scan.recovery")[-1]
    assert last["reason"] == "startup"
    assert last["hashed"] == 0
    assert last["enqueued_changes"] == 0 and last["enqueued_deletes"] == 0


def test_overflow_triggers_rescan_and_converges(setup) -> None:
    """SIGSTOP the agent, overflow its inotify queue, SIGCONT: a RESCAN runs
    and the mirror converges (the sysctl is read, never changed)."""
    src, mirror, agent = setup
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 200_000:
        pytest.skip(f"max_queued_events is {limit}: overflowing it would take too long here")
    burst = src / "burst"
    burst.mkdir()  # watched before the agent is frozen, so every create queues events
    agent.start()
    wait_for_log(agent.log_path, '"reason": "startup"', 30)
    converge(src, mirror)
    assert agent.proc is not None
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        for i in range(limit + 1000):  # each create queues at least one event
            (burst / f"f{i}").write_bytes(b"x")
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    wait_for_log(agent.log_path, '"event": "overflow"', 60)
    wait_for_log(agent.log_path, '"reason": "overflow"', 120)
    converge(src, mirror, timeout=180)
    assert agent.terminate() == 0
