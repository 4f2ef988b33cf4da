"""The journal's disk fills up under a running agent: a clear error, nothing
acknowledged or lost, and the agent carries on by itself once space returns.

The journal lives on a 4 MiB tmpfs mounted in a private mount namespace of
the agent (``unshare -m``); the host's mounts never change. Space is taken
by a filler file and given back by removing it through ``nsenter``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.crash.agent_process import AGENT, converge, log_events, wait_for_log

LAUNCH = r"""
import os, subprocess, sys
space, size, filler_bytes, agent, *args = sys.argv[1:]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", space], check=True)
with open(os.path.join(space, "filler"), "wb") as f:
    f.write(b"\0" * int(filler_bytes))
os.execv(agent, [agent, *args])
"""


def _unshare_works() -> str | None:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare/nsenter not installed"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return None if probe.returncode == 0 else f"unshare -m refused: {probe.stderr.decode().strip()}"


def test_journal_disk_full_then_space_returns(tmp_path: Path) -> None:
    """Changes made while the journal's disk is full reach the mirror after
    space returns, without the agent restarting; the periodic scan, which
    finds what the waiting watcher has not journaled yet, waits too."""
    reason = _unshare_works()
    if reason:
        pytest.skip(reason)
    src, mirror, space = tmp_path / "src", tmp_path / "mirror", tmp_path / "space"
    for d in (src, mirror, space):
        d.mkdir()
    log = tmp_path / "agent.log"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'root = "{src}"\njournal = "{space / "journal"}"\nrescan_interval = "1s"\n'
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
        for d in range(40):  # far more entries than the remaining space holds
            sub = src / f"d{d:02d}"
            sub.mkdir()
            for i in range(250):
                (sub / f"file-with-a-long-name-{i:04d}").write_bytes(b"x")
            if log_events(log, "journal.full"):
                break
        wait_for_log(log, '"event": "journal.full"', 60)
        wait_for_log(log, '"event": "scan.journal_full"', 60)
        assert proc.poll() is None, "the agent must wait for space, not exit"
        (src / "made-while-full").write_bytes(b"still journaled later\n")
        freed = subprocess.run(["nsenter", "-t", str(proc.pid), "-m", "rm", "-f", str(space / "filler")])
        assert freed.returncode == 0
        converge(src, mirror, timeout=120)
        assert proc.poll() is None
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
