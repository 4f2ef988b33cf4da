"""Daemon lifecycle: SIGTERM in the middle of a large ship, and the optional
periodic safety scan."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from journal import SEED_FLAG, Entry, FileKind, FileState, Journal, Op
from tests.crash.agent_process import AgentProcess, converge, log_events, log_size, wait_for_log
from tests.helpers.metrics import free_port, scrape
from tests.helpers.wait import wait_until


def test_sigterm_during_a_large_ship_exits_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM while thousands of files are being shipped: exit 0 within the
    grace period; what was not marked done is shipped after restart."""
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    src.mkdir()
    mirror.mkdir()
    for d in range(20):
        (src / f"d{d}").mkdir()
        for i in range(200):
            (src / f"d{d}" / f"f{i}").write_bytes(os.urandom(32768))
    agent = AgentProcess(
        ["--root", str(src), "--journal", str(tmp_path / "journal"), "--target", f"local:{mirror}"],
        tmp_path / "agent.log",
    )
    try:
        agent.start()
        wait_for_log(agent.log_path, '"event": "replay.start"', 60)  # the first ship is under way
        started = time.monotonic()
        code = agent.terminate(timeout=60)
        assert code == 0
        assert time.monotonic() - started < 60
        assert log_events(agent.log_path, "agent.exit")[-1]["code"] == 0
        shipped = sum(len(files) for _, _, files in os.walk(mirror))
        print(f"files on the mirror at exit: {shipped} of 4000")
        (src / "d0" / "late").write_bytes(b"written while the agent was stopped\n")
        agent.start()
        converge(src, mirror)
    finally:
        agent.kill()


def _write_config(tmp_path: Path, extra: str) -> tuple[Path, Path, Path]:
    """A config with one local target; returns (config, src, mirror)."""
    src, mirror, journal = tmp_path / "src", tmp_path / "mirror", tmp_path / "journal"
    src.mkdir()
    mirror.mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'root = "{src}"\njournal = "{journal}"\n{extra}\n'
        f'[[target]]\nname = "copy"\nkind = "local"\npath = "{mirror}"\n'
    )
    return config, src, mirror


def test_periodic_safety_scan_ships_what_the_journal_missed(tmp_path: Path) -> None:
    """With rescan_interval set, full scans repeat while the agent runs and
    ship a path whose shipped state (manifest) no longer matches the tree:
    the situation of a write inotify could not see."""
    config, src, mirror = _write_config(tmp_path, 'rescan_interval = "1s"')
    (src / "a").write_bytes(b"source\n")
    agent = AgentProcess(["--config", str(config)], tmp_path / "agent.log")
    try:
        mark = log_size(agent.log_path)
        agent.start()
        converge(src, mirror)
        # the ship is marked done (with its manifest state) just after the mirror matches
        wait_until(lambda: _pending(tmp_path / "journal") == 0, timeout=30)
        (mirror / "a").write_bytes(b"stale!\n")  # the mirror holds an old version...
        with Journal.open(tmp_path / "journal", mode="client") as journal:  # ...and so does the manifest
            journal.manifest_put({b"a": FileState(FileKind.FILE, size=7, mode=0o644)})
        converge(src, mirror, timeout=60)
        scans = [e for e in log_events(agent.log_path, "scan.recovery", mark) if e["reason"] == "periodic"]
        assert scans and any(e["enqueued_changes"] >= 1 for e in scans)
        assert agent.terminate() == 0
    finally:
        agent.kill()


def test_runtime_file_failure_does_not_stop_the_agent(tmp_path: Path) -> None:
    """runtime.json (for ``status``) is best effort: when it cannot be written
    (a full disk; here a directory in the way) the agent logs it once and
    keeps shipping."""
    config, src, mirror = _write_config(tmp_path, "")
    agent = AgentProcess(["--config", str(config)], tmp_path / "agent.log")
    try:
        agent.start()
        wait_for_log(agent.log_path, '"event": "replay.start"', 60)
        assert agent.terminate() == 0
        (tmp_path / "journal" / "runtime.tmp").mkdir()  # where the file is written first
        mark = log_size(agent.log_path)
        agent.start()
        wait_for_log(agent.log_path, '"event": "runtime.write_failed"', 30, mark)
        (src / "after").write_bytes(b"still shipped\n")
        converge(src, mirror)
        assert agent.alive()
        assert len(log_events(agent.log_path, "runtime.write_failed", mark)) == 1
        assert agent.terminate() == 0
    finally:
        agent.kill()


def _pending(journal: Path) -> int:
    with Journal.open(journal, mode="read") as j:
        return sum(t.pending for t in j.stats().tracks.values())


def test_metrics_endpoint_of_a_running_agent_moves(tmp_path: Path) -> None:
    """`metrics_port` serves Prometheus text over real HTTP; journaled and
    shipped counters grow when files change."""
    port = free_port()
    config, src, mirror = _write_config(tmp_path, f"metrics_port = {port}")
    agent = AgentProcess(["--config", str(config)], tmp_path / "agent.log")
    try:
        agent.start()
        wait_for_log(agent.log_path, '"event": "replay.start"', 60)
        before = scrape(port)
        for i in range(5):
            (src / f"f{i}").write_bytes(b"x")
        converge(src, mirror)
        deadline = time.monotonic() + 30
        key = 'msync_agent_ship_outcomes_total{outcome="ok",track="copy"}'
        while time.monotonic() < deadline and scrape(port).get(key, 0) < 5:
            time.sleep(0.3)
        after = scrape(port)
        assert after["msync_agent_events_journaled_total"] >= before["msync_agent_events_journaled_total"] + 5
        assert after[key] >= before.get(key, 0) + 5
        assert after['msync_agent_pending{track="copy"}'] == 0
        assert agent.terminate() == 0
    finally:
        agent.kill()


@pytest.mark.parametrize("died_before_seeding", [False, True])
def test_target_added_later_receives_the_whole_tree(tmp_path: Path, died_before_seeding: bool) -> None:
    """A mirror added to an existing journal gets every path, also when the
    agent died after registering it but before queueing the tree for it."""
    src, first, second = tmp_path / "src", tmp_path / "first", tmp_path / "second"
    for d in (src, first, second):
        d.mkdir()
    (src / "sub").mkdir()
    for i in range(20):
        (src / "sub" / f"f{i}").write_bytes(b"%d\n" % i)
    journal = tmp_path / "journal"
    base = ["--root", str(src), "--journal", str(journal)]
    agent = AgentProcess([*base, "--target", f"local:{first}"], tmp_path / "agent.log")
    try:
        agent.start()
        converge(src, first)
        assert agent.terminate() == 0
        if died_before_seeding:  # the crash window: registered and marked, the tree not yet queued
            with Journal.open(journal, root=str(src), tracks=["local", "local-2"]) as j:
                assert j.new_tracks == ("local-2",)
                j.append([Entry(Op.RESCAN, b"", flags=SEED_FLAG)], tracks=["local-2"])
        both = AgentProcess(
            [*base, "--target", f"local:{first}", "--target", f"local:{second}"], tmp_path / "agent.log"
        )
        agent = both
        agent.start()
        converge(src, second)
        converge(src, first)
        assert agent.terminate() == 0
        assert log_events(agent.log_path, "tracks.seeded")[-1]["tracks"] == ["local-2"]
    finally:
        agent.kill()
