"""Stopping never waits on makuosan: a real ``agent run`` whose msync call is
blocked on a dead member (the double's 60 s stall) stops at SIGTERM/SIGINT,
ends the call's process group, exits 0 and keeps the entries pending."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.crash.agent_process import AgentProcess, status
from tests.doubles.fixtures import MsyncDouble, make_double
from tests.helpers.wait import wait_until

STOP_DEADLINE_S = 10.0  # the stop must not wait for the 60 s stall (nor the old 20 s grace)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def msync_agent(tmp_path: Path) -> tuple[AgentProcess, MsyncDouble, Path, Path]:
    """An agent shipping to the double, whose member mk3 stopped answering:
    a send to it stalls 60 s (scale 1)."""
    src, journal = tmp_path / "src", tmp_path / "journal"
    src.mkdir()
    dbl = make_double(tmp_path / "dbl", base=src, members=("mk2", "mk3"))
    dbl.update(time_scale=1.0)
    dbl.set_member("mk3", state="timeout")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'root = "{src}"\njournal = "{journal}"\nsettle_ms = 50\n'
        '[[target]]\nname = "cluster"\nkind = "msync"\nmembers = ["mk2", "mk3"]\n'
        f'msync = "{dbl.bound_msync}"\n'
    )
    return AgentProcess(["--config", str(config)], tmp_path / "agent.log"), dbl, src, journal


def _pending(journal: Path, track: str) -> int:
    return status(journal)["targets"][track]["pending"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_ends_a_blocked_msync_and_keeps_its_entries_pending(tmp_path: Path, sig: int) -> None:
    """The signal ends the stalled msync's group; exit 0; the change stays pending."""
    agent, dbl, src, journal = msync_agent(tmp_path)
    try:
        agent.start()
        (src / "f").write_bytes(b"data")
        stalls = wait_until(dbl.stalls, timeout=60, message="msync never blocked on mk3")
        agent.proc.send_signal(sig)
        wait_until(lambda: agent.proc.poll() is not None, timeout=STOP_DEADLINE_S, message="still running")
        assert agent.proc.poll() == 0, (tmp_path / "agent.log").read_text()[-3000:]
        pid = stalls[0][0]
        wait_until(lambda: not _alive(pid), timeout=5, message=f"msync {pid} outlived the agent")
        assert _pending(journal, "cluster/mk3") >= 1
    finally:
        agent.kill()
        for pid, _, _ in dbl.stalls():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
