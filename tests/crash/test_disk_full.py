"""The journal's disk fills up under a running agent: a clear error, nothing
acknowledged or lost, and the agent carries on by itself once space returns.

The journal lives on a 4 MiB tmpfs mounted in a private mount namespace of
the agent (``unshare -m``); the host's mounts never change. Once the agent
runs, the test takes every block left there (a second filler written until
ENOSPC, through ``nsenter``), so the disk is full before the first change is
made, whatever the agent's timing. Letting the agent's own journal fill the
disk instead leaves it to timing which thread meets the wall: an agent that
lags behind the writer journals a whole new directory in one densely packed
batch, the tree may then fit, and the disk fills later from the replayer and
the scanner alone, with nothing left for the watcher to append.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.crash.agent_process import AGENT, converge, log_events, wait_for_log
from tests.helpers.metrics import free_port, scrape
from tests.helpers.wait import wait_until

LAUNCH = r"""
import os, subprocess, sys
space, size, filler_bytes, agent, *args = sys.argv[1:]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", space], check=True)
with open(os.path.join(space, "filler"), "wb") as f:
    f.write(b"\0" * int(filler_bytes))
os.execv(agent, [agent, *args])
"""

TAKE_THE_REST = r"""
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
try:
    while True:
        os.write(fd, bytes(4096))
except OSError as exc:
    if exc.errno != errno.ENOSPC:
        raise
finally:
    os.close(fd)
"""


def _unshare_works() -> str | None:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare/nsenter not installed"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return None if probe.returncode == 0 else f"unshare -m refused: {probe.stderr.decode().strip()}"


def _in_agent_mounts(pid: int, *argv: str) -> None:
    subprocess.run(["nsenter", "-t", str(pid), "-m", *argv], check=True)


@pytest.mark.parametrize("agent_lags", [False, True], ids=["live", "agent_lags"])
def test_journal_disk_full_then_space_returns(tmp_path: Path, agent_lags: bool) -> None:
    """Changes made while the journal's disk is full reach the mirror after
    space returns, without the agent restarting. The watcher is refused and
    waits (``journal.full``), whether it journals event by event or, lagging
    behind the writer (stopped while the tree is made), a whole tree in one
    batch; the periodic scan, which finds what the waiting watcher has not
    journaled yet, waits too. Once space returns the watcher journals the
    batch it was refused (``journal.resumed``)."""
    reason = _unshare_works()
    if reason:
        pytest.skip(reason)
    src, mirror, space = tmp_path / "src", tmp_path / "mirror", tmp_path / "space"
    for d in (src, mirror, space):
        d.mkdir()
    log = tmp_path / "agent.log"
    config = tmp_path / "agent.toml"
    port = free_port()
    config.write_text(
        f'root = "{src}"\njournal = "{space / "journal"}"\nrescan_interval = "1s"\nmetrics_port = {port}\n'
        f'[[target]]\nname = "copy"\nkind = "local"\npath = "{mirror}"\n'
    )
    argv = [
        "unshare", "-m", "--propagation", "private", sys.executable, "-c", LAUNCH,
        str(space), "4m", str(3 * 1024 * 1024), str(AGENT), "run", "--config", str(config),
    ]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_log(log, '"event": "replay.start"', 60)
        _in_agent_mounts(proc.pid, sys.executable, "-c", TAKE_THE_REST, str(space / "rest"))
        if agent_lags:
            os.kill(proc.pid, signal.SIGSTOP)
        try:
            for d in range(16):  # far more entries than the intake and LMDB's free pages hold
                sub = src / f"d{d:02d}"
                sub.mkdir()
                for i in range(250):
                    (sub / f"file-with-a-long-name-{i:04d}").write_bytes(b"x")
        finally:
            if agent_lags:
                os.kill(proc.pid, signal.SIGCONT)
        wait_for_log(log, '"event": "journal.full"', 60)
        wait_for_log(log, '"event": "scan.journal_full"', 60)
        assert proc.poll() is None, "the agent must wait for space, not exit"
        gauge = "msync_agent_journal_full"
        wait_until(
            lambda: scrape(port)[gauge] == 1, timeout=30, message="the full disk never reached the gauge"
        )
        (src / "made-while-full").write_bytes(b"still journaled later\n")
        _in_agent_mounts(proc.pid, "rm", "-f", str(space / "filler"), str(space / "rest"))
        converge(src, mirror, timeout=120)
        # the very batch refused first is journaled once space returns: none of
        # its entries was acknowledged and dropped (the periodic scan, which
        # would ship the files anyway, cannot stand in for it here)
        wait_for_log(log, '"event": "journal.resumed"', 60)
        refused = log_events(log, "journal.full")[0]["entries"]
        assert log_events(log, "journal.resumed")[0]["entries"] == refused
        wait_until(
            lambda: scrape(port)[gauge] == 0, timeout=90, message="the gauge stayed at 1 with space back"
        )
        assert proc.poll() is None
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
