"""The agent under test, run as a real process inside a cluster host.

The agent gets a TOML config with one named rsync target per mirror, short
retry caps (so a restored link drains promptly) and rsync connect/IO timeouts
(so a cut link is noticed rather than waited on). Its own commands (status,
verify, replay) run inside the same host, as an operator on that machine would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.netns.cluster import Cluster, stop_process

__all__ = ["AGENT", "AgentHost"]

AGENT = Path(sys.executable).parent / "agent"


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class AgentHost:
    """One agent (config, journal, process) on ``host``; targets name -> rsync URL."""

    def __init__(self, cluster: Cluster, host: str, workdir: Path, root: Path, targets: dict[str, str]):
        self.cluster, self.host, self.workdir, self.root = cluster, host, workdir, root
        self.journal = workdir / "journal"
        self.config = workdir / "agent.toml"
        self.logfile = workdir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"root = {_toml_str(str(root))}",
            f"journal = {_toml_str(str(self.journal))}",
            "settle_ms = 100",
            'retry_max = "2s"',
            'log_level = "info"',
        ]
        for name, url in targets.items():
            lines += [
                "",
                "[[target]]",
                f"name = {_toml_str(name)}",
                'kind = "rsync"',
                f"dest = {_toml_str(url)}",
                'options = ["--contimeout=5", "--timeout=15"]',
                'timeout = "60s"',
            ]
        self.config.write_text("\n".join(lines) + "\n")

    # -- the daemon --------------------------------------------------------
    def start(self) -> subprocess.Popen[bytes]:
        """Start ``agent run`` in the host; output appended to ``agent.log``."""
        with open(self.logfile, "ab") as log:
            self.proc = self.cluster.spawn(
                self.host,
                [AGENT, "run", "--config", self.config],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.proc

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, as an operator would; returns the exit status."""
        if self.proc is None:
            return None
        stop_process(self.proc, signal.SIGTERM, grace=30.0)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the agent itself (its rsync children are left to fend for themselves)."""
        assert self.proc is not None and self.proc.poll() is None, "agent is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no agent log)"

    # -- operator commands -------------------------------------------------
    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``agent ARGS --config CFG`` inside the host; never raises on exit status."""
        return self.cluster.run(self.host, [AGENT, *args, "--config", str(self.config)], timeout=timeout)

    def status(self) -> dict[str, Any]:
        res = self.cli("status", "--json")
        assert res.returncode == 0, f"agent status failed ({res.returncode}): {res.stderr}"
        return json.loads(res.stdout)

    def pending(self, target: str) -> int:
        return int(self.status()["targets"][target]["pending"])

    def retries(self, target: str) -> int:
        """Failed ship attempts of the running agent for ``target`` (0 if not running)."""
        counters = self.status()["agent"]["counters"].get(target, {})
        return int(counters.get("retries", 0))
