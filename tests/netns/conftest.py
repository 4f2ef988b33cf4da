"""Fixtures for the multi-host tests: a cluster, two mirror daemons, the agent.

Where namespaces cannot be built (not root, no iproute2) the tests skip with
the reason, except in CI (``CI`` set, or ``MSYNC_NETNS_REQUIRED=1``), where
they fail: CI runs as root and must run them.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.agentproc import AgentHost
from tests.netns.cluster import Cluster, cleanup_stale, netns_unavailable_reason, our_namespaces
from tests.netns.mirrors import Mirror, start_mirror


def _required() -> bool:
    """True in CI or when asked: an unavailable prerequisite is then a failure."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("MSYNC_NETNS_REQUIRED") == "1"


def _unavailable(reason: str) -> None:
    if _required():
        pytest.fail(f"netns tests must run here (CI / MSYNC_NETNS_REQUIRED=1), but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def netns_ready() -> None:
    """Probe once per session; also remove what killed earlier runs left behind."""
    reason = netns_unavailable_reason()
    if reason is None and shutil.which("rsync") is None:
        reason = "rsync is not installed (the mirrors are rsync daemons)"
    if reason:
        _unavailable(reason)
    cleanup_stale()


@pytest.fixture
def cluster(netns_ready: None, tmp_path: Path) -> Iterator[Cluster]:
    """Hosts h1 (agent), h2 and h3 (mirrors) on one switch; torn down after the test."""
    with Cluster(tmp_path) as c:
        yield c
    left = set(c.namespaces()) & set(our_namespaces())
    assert not left, f"teardown left namespaces behind: {sorted(left)}"


@pytest.fixture
def mirrors(cluster: Cluster, tmp_path: Path) -> Iterator[dict[str, Mirror]]:
    """``{"m2": daemon on h2, "m3": daemon on h3}``; stopped after the test."""
    started: dict[str, Mirror] = {}
    try:
        for name, host in (("m2", "h2"), ("m3", "h3")):
            started[name] = start_mirror(cluster, host, tmp_path / name)
        yield started
    finally:
        for mirror in started.values():
            mirror.stop()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    root.chmod(0o755)
    return root


@pytest.fixture
def agent(cluster: Cluster, mirrors: dict[str, Mirror], src: Path, tmp_path: Path) -> Iterator[AgentHost]:
    """The agent on h1 with targets m2 and m3 (not started: tests start it)."""
    try:
        importlib.import_module("agent.operate.cli")
        importlib.import_module("agent.daemon")
    except ImportError as exc:
        _unavailable(f"the agent cannot be started yet (agent.cli / agent.daemon: {exc})")
    host = AgentHost(cluster, "h1", tmp_path / "agent", src, {n: m.url for n, m in mirrors.items()})
    try:
        yield host
    finally:
        if host.running():
            host.stop()
