"""Crash loop: random changes while the agent is SIGKILLed and restarted;
the mirror must end byte-for-byte equal to the source (issue: nothing lost)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.crash.agent_process import AgentProcess, converge, log_size, wait_for_log

WRITER = Path(__file__).with_name("writer.py")


def _kills() -> int:
    return int(os.environ.get("CRASH_KILLS", "4"))


def run_crash_loop(tmp_path: Path, seed: int, kills: int) -> None:
    rng = random.Random(seed)
    src, mirror, journal = tmp_path / "src", tmp_path / "mirror", tmp_path / "journal"
    src.mkdir()
    mirror.mkdir()
    (src / "f1").write_bytes(b"seed file\n")
    log = tmp_path / "agent.log"
    args = ["--root", str(src), "--journal", str(journal), "--target", f"local:{mirror}"]
    stop_file = tmp_path / "writer.stop"
    writer = subprocess.Popen([sys.executable, str(WRITER), str(src), str(seed), str(stop_file)])
    agent = AgentProcess(args, log)
    try:
        for _ in range(kills):
            mark = log_size(log)
            agent.start()
            wait_for_log(log, "agent.start", 30, mark)
            time.sleep(rng.uniform(0.2, 1.5))
            agent.kill()
            time.sleep(rng.uniform(0.0, 0.5))  # changes made while the agent is down
        stop_file.touch()
        writer.wait(30)
        agent.start()
        converge(src, mirror, timeout=120)
        assert agent.terminate() == 0
    finally:
        stop_file.touch()
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        agent.kill()


def test_crash_loop_short(tmp_path: Path) -> None:
    """A few SIGKILLs during random changes; the mirror converges to the source."""
    seed = int(os.environ.get("CRASH_SEED", random.SystemRandom().randrange(1 << 30)))
    print(f"crash loop seed={seed} (rerun with CRASH_SEED={seed})")
    try:
        run_crash_loop(tmp_path, seed, _kills())
    except AssertionError as exc:
        raise AssertionError(f"crash loop failed with CRASH_SEED={seed}: {exc}") from exc


@pytest.mark.soak
def test_crash_loop_soak(tmp_path: Path) -> None:
    """At least 50 SIGKILLs (CRASH_KILLS to change), seeded like the short loop."""
    seed = int(os.environ.get("CRASH_SEED", random.SystemRandom().randrange(1 << 30)))
    print(f"crash soak seed={seed}")
    run_crash_loop(tmp_path, seed, max(50, _kills()))
