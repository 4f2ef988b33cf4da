"""A running ``agent run`` on a config file, for the operator commands that
work beside it (wait, dead): local, rsync and msync (double) targets."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash.agent_process import AgentProcess, status
from tests.doubles.fixtures import MsyncDouble, make_double
from tests.helpers.wait import wait_until

__all__ = ["Site", "sites", "msync_site"]


class Site:
    """A config file with one target, and the agent started on it."""

    def __init__(self, tmp_path: Path, target_toml: str, extra: str = "") -> None:
        self.src, self.journal = tmp_path / "src", tmp_path / "journal"
        self.src.mkdir(exist_ok=True)
        self.config = tmp_path / "agent.toml"
        self.config.write_text(
            f'root = "{self.src}"\njournal = "{self.journal}"\nsettle_ms = 50\n'
            f'max_attempts = 1\nretry_max = "1s"\n{extra}\n{target_toml}'
        )
        self.agent = AgentProcess(["--config", str(self.config)], tmp_path / "agent.log")

    def start(self) -> None:
        self.agent.start()
        wait_until(self.running, timeout=60, message="agent not running")

    def running(self) -> bool:
        try:
            return bool(status(self.journal)["agent"]["running"])
        except subprocess.CalledProcessError:
            return False  # no journal yet

    def json_command(self, *args: str) -> tuple[int, dict, str]:
        """``agent ARGS --json``: (exit status, document, stderr)."""
        from tests.cli.conftest import agent  # conftest imports this module

        res = agent(*args, "--json", "--config", str(self.config))
        err = res.stderr.decode(errors="replace")
        assert res.returncode in (0, 1), err
        return res.returncode, json.loads(res.stdout), err

    def wait(self, *args: str) -> tuple[int, dict, str]:
        """``agent wait --json ARGS``: (exit status, document, stderr)."""
        return self.json_command("wait", *args)


@pytest.fixture
def sites() -> Iterator[list[Site]]:
    made: list[Site] = []
    yield made
    for site in made:
        site.agent.kill()


def msync_site(tmp_path: Path, sites: list[Site]) -> tuple[Site, MsyncDouble]:
    src = tmp_path / "src"
    dbl = make_double(tmp_path / "dbl", base=src, members=("mk2", "mk3"))
    site = Site(
        tmp_path,
        '[[target]]\nname = "cluster"\nkind = "msync"\nmembers = ["mk2", "mk3"]\n'
        f'msync = "{dbl.bound_msync}"\n',
    )
    sites.append(site)
    return site, dbl
