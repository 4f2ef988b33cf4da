"""Under supervisord's stopwaitsecs, an agent whose msync call is blocked on a
dead makuosan member (the double's 60 s stall) still stops by itself, exit 0,
instead of being SIGKILLed at the deadline."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.doubles.fixtures import make_double
from tests.helpers.wait import wait_until
from tests.ops.test_supervisord import AGENT, PROGRAM, SUPERVISORCTL, SUPERVISORD, program_section, pytestmark

__all__ = ["pytestmark"]


def _conf(tmp_path: Path, agent_config: Path) -> Path:
    section = program_section(tmp_path, tmp_path / "src", tmp_path / "journal", tmp_path / "unused")
    section["command"] = f"{AGENT} run --config {agent_config}"
    section["stopwaitsecs"] = "5"  # far below the stall: only a stop that does not wait passes
    program = "\n".join(f"{k}={v}" for k, v in section.items())
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"[unix_http_server]\nfile={tmp_path}/supervisor.sock\n"
        f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/supervisord.pid\n"
        f"childlogdir={tmp_path}\nnodaemon=true\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{tmp_path}/supervisor.sock\n"
        f"[{PROGRAM}]\n{program}\n"
    )
    return conf


def test_stop_within_stopwaitsecs_while_msync_is_blocked(tmp_path: Path) -> None:
    """``supervisorctl stop`` during a stalled msync call: exit status 0."""
    src = tmp_path / "src"
    src.mkdir()
    dbl = make_double(tmp_path / "dbl", base=src)
    dbl.update(time_scale=1.0)
    dbl.set_member("mk3", state="timeout")
    agent_config = tmp_path / "agent.toml"
    agent_config.write_text(
        f'root = "{src}"\njournal = "{tmp_path / "journal"}"\nsettle_ms = 50\n'
        '[[target]]\nname = "cluster"\nkind = "msync"\nmembers = ["mk2", "mk3"]\n'
        f'msync = "{dbl.bound_msync}"\nstall = 0\n'  # no stall detection: the call stays blocked
    )
    conf = _conf(tmp_path, agent_config)

    def ctl(*args: str) -> str:
        res = subprocess.run([str(SUPERVISORCTL), "-c", str(conf), *args], capture_output=True, timeout=60)
        return res.stdout.decode()

    proc = subprocess.Popen(
        [str(SUPERVISORD), "-n", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: "RUNNING" in ctl("status", "msync-agent"), timeout=60)
        (src / "f").write_bytes(b"data")
        wait_until(dbl.stalls, timeout=60, message="msync never blocked on mk3")
        assert "stopped" in ctl("stop", "msync-agent")
        log = (tmp_path / "supervisord.log").read_text()
        assert "stopped: msync-agent (exit status 0)" in log, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid, _, _ in dbl.stalls():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
