"""ops/supervisord.conf, for real: a private supervisord runs ``agent run``;
the agent is SIGKILLed and restarted with nothing lost, then stopped
gracefully (exit status 0) by ``supervisorctl stop``."""

from __future__ import annotations

import configparser
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.trees import diff_trees
from tests.helpers.wait import wait_until

OPS = Path(__file__).parents[2] / "ops" / "supervisord.conf"
SUPERVISORD, SUPERVISORCTL = Path("/usr/bin/supervisord"), Path("/usr/bin/supervisorctl")
AGENT = Path(sys.executable).with_name("agent")
PROGRAM = "program:msync-agent"

pytestmark = pytest.mark.skipif(not SUPERVISORD.exists(), reason="supervisor is not installed")


@dataclass
class Supervised:
    conf: Path
    src: Path
    mirror: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def ctl(self, *args: str) -> str:
        res = subprocess.run(
            [str(SUPERVISORCTL), "-c", str(self.conf), *args], capture_output=True, timeout=60, check=False
        )
        return res.stdout.decode()

    def agent_pid(self) -> int | None:
        """The agent's pid once supervisord reports it RUNNING, else None."""
        if "RUNNING" not in self.ctl("status", "msync-agent"):
            return None
        out = self.ctl("pid", "msync-agent").strip()
        return int(out) if out.isdigit() and int(out) > 0 else None


def program_section(tmp: Path, src: Path, journal: Path, mirror: Path) -> dict[str, str]:
    """The shipped [program:msync-agent] section, pointed at temp dirs."""
    parser = configparser.RawConfigParser()
    parser.read(OPS)
    section = dict(parser[PROGRAM])
    assert section["stopsignal"] == "TERM" and section["autorestart"] == "true"
    assert section["command"].startswith("/opt/msync-agent/.venv/bin/agent run --config ")
    section.pop("user", None)  # the test runs as whoever runs pytest
    argv = [str(AGENT), "run", "--root", str(src), "--journal", str(journal), "--target", f"local:{mirror}"]
    section["command"] = " ".join(argv)
    section["directory"] = str(tmp)
    section["stdout_logfile"] = str(tmp / "agent.log")
    return section


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    src, mirror, journal = tmp_path / "src", tmp_path / "mirror", tmp_path / "journal"
    src.mkdir()
    mirror.mkdir()
    (src / "before-start.txt").write_bytes(b"0")
    conf = tmp_path / "supervisord.conf"
    program = "\n".join(f"{k}={v}" for k, v in program_section(tmp_path, src, journal, mirror).items())
    conf.write_text(
        f"[unix_http_server]\nfile={tmp_path}/supervisor.sock\n"
        f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/supervisord.pid\n"
        f"childlogdir={tmp_path}\nnodaemon=true\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{tmp_path}/supervisor.sock\n"
        f"[{PROGRAM}]\n{program}\n"
    )
    proc = subprocess.Popen(
        [str(SUPERVISORD), "-n", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield Supervised(conf, src, mirror, tmp_path / "supervisord.log", proc)
    finally:
        proc.send_signal(signal.SIGTERM)  # supervisord stops its child, then exits
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def mirrored(s: Supervised) -> bool:
    """Equal now; a tree changing under the compare counts as not yet."""
    try:
        return not diff_trees(s.src, s.mirror)
    except FileNotFoundError:
        return False


def write(root: Path, name: str, data: bytes) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_sigkill_restart_then_graceful_stop(supervised: Supervised) -> None:
    """SIGKILL: supervisord restarts the agent (new pid) and no change made
    before, during or after the outage is lost. stop: exit status 0."""
    s = supervised
    first = wait_until(s.agent_pid, timeout=60, message="agent never RUNNING under supervisord")
    write(s.src, "one/a.txt", b"a" * 1000)
    write(s.src, os.fsdecode(b"odd\nname\xff"), b"odd")
    wait_until(lambda: mirrored(s), timeout=60, message="first changes not mirrored")

    for i in range(50):
        write(s.src, f"burst/{i:03}.txt", b"%d" % i)  # some may be in flight at the kill
    os.kill(first, signal.SIGKILL)
    (s.src / "one" / "a.txt").unlink()
    write(s.src, "during-outage.txt", b"while down")
    second = wait_until(
        lambda: (pid := s.agent_pid()) and pid != first and pid, timeout=60, message="agent not restarted"
    )
    write(s.src, "after-restart/b.txt", b"b")
    os.rename(s.src / "burst", s.src / "burst-moved")
    wait_until(lambda: mirrored(s), timeout=90, message=f"mirror differs: {diff_trees(s.src, s.mirror)[:5]}")
    assert not (s.mirror / "one" / "a.txt").exists()
    assert (s.mirror / "burst-moved" / "049.txt").read_bytes() == b"49"

    out = s.ctl("stop", "msync-agent")
    assert "stopped" in out, out
    assert "STOPPED" in s.ctl("status", "msync-agent")
    log = s.log.read_text()
    assert re.search(r"exited: msync-agent \(terminated by SIGKILL.*\)", log), log
    assert "stopped: msync-agent (exit status 0)" in log, log
    assert second != first
