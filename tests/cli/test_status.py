"""``agent status``: the JSON document while another process holds the agent lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import AGENT, Site, agent
from tests.helpers.wait import wait_until

S = 10**9


def status(*flags: str) -> dict:
    res = agent("status", "--json", *flags)
    assert res.returncode == 0, res.stderr.decode()
    return json.loads(res.stdout)


def test_status_while_agent_holds_lock(
    site: Site, hold_lock: Callable[[Site], subprocess.Popen[bytes]]
) -> None:
    """Pending, oldest age, dead letters, checkpoint age and journal size are
    read while the journal is locked; the lock's holder is 'running', with
    the rates of a runtime.json it wrote."""
    site.journal_tree([b"index.html", b"docs", b"docs/a.txt"], time_ns=time.time_ns() - 30 * S)
    with site.open() as j:
        j.mark_dead("local", {j.pending("local")[0].seq: "permission denied on mirror"})
        j.set_checkpoint(time.time_ns() - 5 * S)
    holder = hold_lock(site)
    doc = status(*site.flags)
    track = doc["targets"]["local"]
    assert track["pending"] == 2 and track["dead_letters"] == 1
    assert 30 <= track["oldest_pending_s"] < 600
    assert track["dead"] == [{"path": "index.html", "reason": "permission denied on mirror"}]
    assert 5 <= doc["checkpoint_age_s"] < 600
    assert doc["journal"]["entries"] == 3 and doc["journal"]["bytes"] > 0
    assert doc["agent"] == {"running": True, "pid": holder.pid, "rates": {}, "counters": {}}

    runtime = {
        "pid": holder.pid,
        "started_ns": time.time_ns(),
        "updated_ns": time.time_ns(),
        "events_in": 7,
        "entries_journaled": 7,
        "targets": {"local": {"shipped_ok": 4, "retries": 1, "failures": 0}},
        "rates": {"in_per_s": 2.5, "out_per_s": 1.5},
    }
    (site.journal / "runtime.json").write_text(json.dumps(runtime))
    agent_doc = status(*site.flags)["agent"]
    assert agent_doc["running"] is True and agent_doc["pid"] == holder.pid
    assert agent_doc["rates"] == {"in_per_s": 2.5, "out_per_s": 1.5}

    res = agent("status", *site.flags)
    text = res.stdout.decode()
    assert res.returncode == 0 and "local" in text and f"running (pid {holder.pid})" in text
    assert "dead: index.html: permission denied on mirror" in text


def test_stale_runtime_means_not_running(site: Site) -> None:
    """A runtime.json that is old, or names a dead pid, is ignored; --journal
    alone (no root) suffices."""
    site.journal_tree([b"index.html"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = {"pid": dead.pid, "updated_ns": time.time_ns(), "rates": {"in_per_s": 1.0}}
    (site.journal / "runtime.json").write_text(json.dumps(stale))
    doc = status("--journal", str(site.journal))
    assert doc["agent"]["running"] is False
    assert doc["targets"]["local"]["pending"] == 1 and doc["checkpoint_age_s"] is None


def test_status_without_journal_is_exit_2(site: Site) -> None:
    """No journal yet: a clear error, exit 2."""
    res = agent("status", *site.flags)
    assert res.returncode == 2 and res.stderr.startswith(b"error: ") and b"hint: " in res.stderr


def test_second_agent_run_is_refused(
    site: Site, hold_lock: Callable[[Site], subprocess.Popen[bytes]]
) -> None:
    """`agent run` on a journal another agent holds exits 2 naming the holder."""
    holder = hold_lock(site)
    res = agent("run", *site.flags)
    assert res.returncode == 2
    assert f"locked by another agent (pid {holder.pid})".encode() in res.stderr and b"\nhint: " in res.stderr


def _wait_exit_unreaped(proc: subprocess.Popen[bytes]) -> None:
    """Wait for ``proc`` to exit but leave it a zombie, as a supervisor that
    has not yet reaped it would: its pid still exists."""
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_running_follows_the_writer_lock(site: Site, tmp_path: Path, sig: signal.Signals) -> None:
    """A real agent: status says running (with its pid) while it runs, and
    not running as soon as it has exited, after a clean stop or a SIGKILL,
    even while its pid and a fresh runtime.json remain."""
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([str(AGENT), "run", *site.flags], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (site.journal / "runtime.json").exists(), timeout=30)
        doc = wait_until(lambda: (d := status(*site.flags))["agent"]["running"] and d, timeout=30)
        assert doc["agent"]["pid"] == proc.pid
        proc.send_signal(sig)
        _wait_exit_unreaped(proc)
        assert (site.journal / "runtime.json").exists()
        agent_doc = status(*site.flags)["agent"]
        assert agent_doc == {"running": False, "pid": None, "rates": {}, "counters": {}}
        assert "agent: not running" in agent("status", *site.flags).stdout.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
