"""The console relay's socket directory never accumulates: a real ``agent
run`` shipping over a TCP console is SIGKILLed, and its next start removes
the directory the dead relay left, and nothing else."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.ship.msync.relay import relay_tag
from tests.crash.agent_process import AgentProcess
from tests.doubles.fixtures import make_double
from tests.doubles.greeter import Greeter
from tests.helpers.wait import wait_until


@pytest.fixture
def greeter() -> Iterator[Greeter]:
    g = Greeter()
    yield g
    g.close()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """The agent's TMPDIR: short, as an AF_UNIX socket path must be (108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mrk-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def relay_dirs(tmp: Path) -> set[Path]:
    return {p for p in tmp.iterdir() if p.name.startswith("msync-relay-")}


def test_a_killed_agents_relay_directory_is_removed_at_the_next_start(
    tmp_path: Path, greeter: Greeter, short_tmp: Path
) -> None:
    """SIGKILL leaves the relay's directory; the next start removes it. A
    directory of another root or target, and one whose relay is alive (its
    lock held), stay."""
    src, tmp = tmp_path / "src", short_tmp
    src.mkdir()
    dbl = make_double(tmp_path / "dbl", base=src)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'root = "{src}"\njournal = "{tmp_path / "journal"}"\nsettle_ms = 50\n'
        '[[target]]\nname = "cluster"\nkind = "msync"\nmembers = ["mk2", "mk3"]\n'
        f'console = "tcp:127.0.0.1:{greeter.port}"\nmsync = "{dbl.bound_msync}"\n'
    )
    tag = relay_tag(os.fsencode(os.path.realpath(src)), "cluster")
    other = tmp / "msync-relay-0123456789ab-other"  # another root or target
    alive = tmp / f"msync-relay-{tag}-alive"  # a relay still running: its directory is locked
    for d in (other, alive):
        d.mkdir(mode=0o700)
        (d / "console.sock").touch()
    held = os.open(alive, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)
    agent = AgentProcess(["--config", str(config)], tmp_path / "agent.log", env={"TMPDIR": str(tmp)})
    try:
        agent.start()
        (src / "f").write_bytes(b"data")
        made = wait_until(
            lambda: {d for d in relay_dirs(tmp) - {other, alive} if (d / "console.sock").exists()},
            timeout=60,
            message="no console relay was made",
        )
        agent.kill()  # SIGKILL: nothing of the agent runs any more
        assert all(d.exists() for d in made)
        agent.start()
        wait_until(
            lambda: not any(d.exists() for d in made), timeout=60, message="the dead relay's directory stayed"
        )
        assert other.exists() and alive.exists()
        assert agent.terminate() == 0
        assert relay_dirs(tmp) == {other, alive}  # a clean stop removes its own
    finally:
        agent.kill()
        os.close(held)
