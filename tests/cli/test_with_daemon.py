"""The operator commands against a real running ``agent run``: status,
verify, replay hand-off and verify --repair healing a damaged mirror, scan
while stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import AGENT, Site, agent
from tests.helpers.trees import diff_trees
from tests.helpers.wait import WaitTimeout, wait_until


@pytest.fixture
def running(site: Site, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([str(AGENT), "run", *site.flags], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def status(site: Site) -> dict:
    res = agent("status", "--json", *site.flags)
    assert res.returncode == 0, res.stderr.decode()
    return json.loads(res.stdout)


def in_sync(site: Site) -> bool:
    """Equal now; a tree changing under the compare counts as not yet."""
    try:
        return not diff_trees(site.root, site.mirror)
    except FileNotFoundError:
        return False


def why(site: Site) -> str:
    """What still differs, and what status says (for failure messages)."""
    try:
        problems = diff_trees(site.root, site.mirror)[:5]
    except FileNotFoundError as exc:
        problems = [str(exc)]
    return f"{problems} status={status(site)}"


def heal(site: Site, what: str) -> None:
    try:
        wait_until(lambda: in_sync(site), timeout=60)
    except WaitTimeout:
        raise AssertionError(f"{what} did not heal the mirror: {why(site)}") from None


def test_operator_commands_against_running_agent(site: Site, running: subprocess.Popen[bytes]) -> None:
    """status shows the running agent; verify is clean once shipped; a damaged
    mirror is found by verify and healed by replay (handed to the agent) and
    by verify --repair; SIGTERM exits 0."""
    (site.root / "docs" / "b.txt").write_bytes(b"bravo\n")
    (site.root / os.fsdecode(b"odd\n\xffname")).write_bytes(b"odd")
    wait_until(
        lambda: in_sync(site) and status(site)["targets"]["local"]["pending"] == 0,
        timeout=60,
        message="first changes not shipped",
    )
    doc = wait_until(lambda: (d := status(site))["agent"]["running"] and d, timeout=30)
    assert doc["agent"]["pid"] == running.pid
    res = agent("verify", "--json", *site.flags)
    assert res.returncode == 0, res.stdout.decode()

    (site.mirror / "docs" / "b.txt").unlink()
    (site.mirror / "index.html").write_bytes(b"HELLO\n")
    res = agent("verify", *site.flags)
    assert res.returncode == 1 and b"docs/b.txt: missing on the mirror" in res.stdout
    res = agent("replay", "--since", "10m", *site.flags)
    assert res.returncode == 0 and f"running agent (pid {running.pid})".encode() in res.stdout
    heal(site, "replay")

    (site.mirror / "stray.txt").write_bytes(b"s")
    os.chmod(site.mirror / "docs" / "a.txt", 0o600)
    res = agent("verify", "--repair", *site.flags)
    assert res.returncode == 1 and b"repair: queued 2 entries" in res.stdout
    heal(site, "repair")
    wait_until(lambda: agent("verify", *site.flags).returncode == 0, timeout=30)

    running.send_signal(signal.SIGTERM)
    assert running.wait(timeout=60) == 0


def test_scan_while_stopped(site: Site, running: subprocess.Popen[bytes]) -> None:
    """Changes made while no agent runs are found by `agent scan` and queued."""
    wait_until(lambda: in_sync(site), timeout=60)
    running.send_signal(signal.SIGTERM)
    assert running.wait(timeout=60) == 0
    (site.root / "while-down.txt").write_bytes(b"down")
    res = agent("scan", *site.flags)
    assert res.returncode == 0 and b"1 entries journaled" in res.stdout, res.stdout + res.stderr
    assert status(site)["targets"]["local"]["pending"] == 1
    res = agent("verify", "--json", *site.flags)
    doc = json.loads(res.stdout)
    assert res.returncode == 0, doc  # missing on the mirror, but pending: lag, not drift
    assert doc["targets"]["local"]["pending_skipped"] == 1
