"""The agent on h1 keeps two rsync mirrors (h2, h3) converged across real faults.

Each test runs the real ``agent run`` inside h1's namespace with targets
``m2`` and ``m3`` (real ``rsync --daemon`` on h2 and h3) and compares the
mirrors with the source byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers.wait import wait_until
from tests.netns.agentproc import AgentHost
from tests.netns.cluster import Cluster
from tests.netns.mirrors import Mirror
from tests.netns.trees import tree_diff, trees_equal
from tests.netns.workload import churn, seed, steady_changes

pytestmark = pytest.mark.netns

CONVERGE_S = 90.0  # a deadline for polling, not a performance claim


def _wait_current(agent: AgentHost, mirror: Mirror, target: str, timeout: float = CONVERGE_S) -> None:
    """Wait until ``mirror`` equals the source and the agent owes it nothing."""

    def current() -> bool:
        assert agent.running(), f"agent exited ({agent.proc and agent.proc.returncode}):\n{agent.log_tail()}"
        return trees_equal(agent.root, mirror.path) and agent.pending(target) == 0

    try:
        wait_until(current, timeout, 0.25)
    except AssertionError as exc:
        try:
            diff = "\n".join(tree_diff(agent.root, mirror.path)[:30])
        except OSError as err:
            diff = f"(no diff: {err})"
        status = agent.cli("status", "--json").stdout.strip()
        raise AssertionError(
            f"{target} not current: {exc}\nstatus: {status}\ndiff:\n{diff}\nagent log:\n{agent.log_tail()}"
        ) from None


def _start_converged(agent: AgentHost, mirrors: dict[str, Mirror]) -> None:
    seed(agent.root)
    agent.start()
    for name, mirror in mirrors.items():
        _wait_current(agent, mirror, name)


def _verify(agent: AgentHost, target: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """``agent verify --target T --json``: exit status and the report."""
    res = agent.cli("verify", "--target", target, "--json", *extra)
    assert res.returncode in (0, 1), f"verify error ({res.returncode}): {res.stdout}\n{res.stderr}"
    return res.returncode, json.loads(res.stdout)


def _drifted(report: dict[str, Any], target: str) -> set[str]:
    return {finding["path"] for finding in report["targets"][target]["drift"]}


def test_steady_changes_reach_both_mirrors(agent: AgentHost, mirrors: dict[str, Mirror]) -> None:
    """Creates, edits, chmods, renames, deletes and a directory move land on both mirrors."""
    _start_converged(agent, mirrors)
    steady_changes(agent.root)
    for name, mirror in mirrors.items():
        _wait_current(agent, mirror, name)
    targets = agent.status()["targets"]
    assert {n: t["dead_letters"] for n, t in targets.items()} == {"m2": 0, "m3": 0}


def test_cut_link_lags_one_mirror_only_and_drains_after_restore(
    agent: AgentHost, mirrors: dict[str, Mirror], cluster: Cluster
) -> None:
    """1,000 changes while h3 is cut: m2 stays current, only m3 lags and fails
    its attempts; after the restore m3 drains by itself and m2 receives nothing more."""
    m2, m3 = mirrors["m2"], mirrors["m3"]
    _start_converged(agent, mirrors)
    cluster.cut("h3")
    assert churn(agent.root, 1000, "burst") == 1000
    _wait_current(agent, m2, "m2")
    wait_until(lambda: agent.retries("m3") > 0, CONVERGE_S, 0.5, "no failed attempt on the cut link")
    status = agent.status()  # m2 owes nothing: every change is journaled for m3 too
    targets = status["targets"]
    assert targets["m3"]["pending"] >= 500, "m3 should owe at least the 500 files created"
    assert targets["m3"]["oldest_pending_s"] is not None
    assert targets["m2"]["pending"] == 0 and targets["m2"]["oldest_pending_s"] is None
    assert not trees_equal(agent.root, m3.path), "m3 caught up through a cut link"
    assert _verify(agent, "m2")[0] == 0, "the healthy mirror does not verify while m3 is cut"
    m2_items, m2_sessions = m2.items(), m2.sessions()
    cluster.restore("h3")
    _wait_current(agent, m3, "m3")
    assert trees_equal(agent.root, m2.path)
    assert m2.items() == m2_items, "the healthy mirror was shipped to again"
    assert m2.sessions() == m2_sessions, "the agent connected to the healthy mirror again"
    targets = agent.status()["targets"]
    assert {n: (t["pending"], t["dead_letters"]) for n, t in targets.items()} == {"m2": (0, 0), "m3": (0, 0)}


def test_lost_mirror_data_is_found_by_verify_and_brought_back_by_replay(
    agent: AgentHost, mirrors: dict[str, Mirror]
) -> None:
    """A mirror wiped behind the agent's back: verify reports drift (exit 1),
    replay --since restores it, verify then exits 0; the other mirror is untouched."""
    m2, m3 = mirrors["m2"], mirrors["m3"]
    _start_converged(agent, mirrors)
    assert _verify(agent, "m2")[0] == 0
    m2.wipe()
    assert agent.pending("m2") == 0, "the agent should still believe m2 is current"
    rc, report = _verify(agent, "m2")
    assert rc == 1, f"verify missed the drift: {report}"
    assert {"index.html", "docs/a.txt", "app/static/img/logo.bin"} <= _drifted(report, "m2"), report
    assert _verify(agent, "m3")[0] == 0
    m3_items = m3.items()
    res = agent.cli("replay", "--since", "10m", "--target", "m2")
    assert res.returncode == 0, f"replay failed ({res.returncode}): {res.stdout}\n{res.stderr}"
    _wait_current(agent, m2, "m2")
    assert _verify(agent, "m2")[0] == 0
    assert m3.items() == m3_items, "replay for m2 shipped to m3"


def test_verify_repair_brings_a_wiped_mirror_back(agent: AgentHost, mirrors: dict[str, Mirror]) -> None:
    """verify --repair reports the drift (exit 1) and enqueues it; the agent ships it; verify exits 0."""
    m2 = mirrors["m2"]
    _start_converged(agent, mirrors)
    m2.wipe()
    rc, report = _verify(agent, "m2", "--repair")
    assert rc == 1 and "index.html" in _drifted(report, "m2"), f"verify --repair missed the drift: {report}"
    assert report.get("repaired"), f"verify --repair queued nothing: {report}"
    _wait_current(agent, m2, "m2")
    assert _verify(agent, "m2")[0] == 0


def test_sigkill_while_a_mirror_is_cut_then_restart_and_restore_converge(
    agent: AgentHost, mirrors: dict[str, Mirror], cluster: Cluster
) -> None:
    """SIGKILL while m3 is cut and retried, more changes while the agent is
    dead; after restart (m3 still cut) and restore both hold exactly the source."""
    m2, m3 = mirrors["m2"], mirrors["m3"]
    _start_converged(agent, mirrors)
    cluster.cut("h3")
    churn(agent.root, 300, "before-kill")
    _wait_current(agent, m2, "m2")
    wait_until(lambda: agent.retries("m3") > 0, CONVERGE_S, 0.5, "no failed attempt on the cut link")
    assert agent.pending("m3") > 0
    agent.kill()
    churn(agent.root, 200, "while-dead")
    steady_changes(agent.root)
    agent.start()
    _wait_current(agent, m2, "m2")
    wait_until(lambda: agent.retries("m3") > 0, CONVERGE_S, 0.5, "restarted agent did not try m3")
    assert agent.pending("m3") > 0 and not trees_equal(agent.root, m3.path)
    cluster.restore("h3")
    _wait_current(agent, m3, "m3")
    _wait_current(agent, m2, "m2")
    assert agent.status()["targets"]["m3"]["dead_letters"] == 0
