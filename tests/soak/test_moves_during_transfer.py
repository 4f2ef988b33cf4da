"""Directories renamed (and some then deleted) while the agent is shipping
them: every mirror must end equal to the tree. A focused soak for what the
random soak found on rsync mirrors: a directory moved away during a transfer
stayed on the mirror, and parent directories kept the transfer's mtime.

Replay: ``SOAK_SEED=N pytest -m soak tests/soak/test_moves_during_transfer.py``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.crash.agent_process import AGENT, AgentProcess
from tests.helpers.wait import wait_until
from tests.soak.compare import compare, scan
from tests.soak.mirrors import start_mirrors

MOVES = 40


def _pending(flags: list[str]) -> int:
    out = subprocess.run([str(AGENT), "status", "--json", *flags], capture_output=True, check=True)
    return sum(t["pending"] for t in json.loads(out.stdout)["targets"].values())


def _churn(src: Path, rng: random.Random) -> None:
    """Make a small tree, let the agent start on it, move it elsewhere."""
    for i in range(MOVES):
        d = src / f"d{i}"
        for j in range(rng.randrange(1, 6)):
            (d / f"s{j}").mkdir(parents=True, exist_ok=True)
            for k in range(rng.randrange(1, 8)):
                (d / f"s{j}" / f"f{k}").write_bytes(rng.randbytes(rng.randrange(1, 200_000)))
        time.sleep(rng.uniform(0, 0.4))
        target = src / f"e{rng.randrange(5)}" / f"m{i}"
        target.parent.mkdir(exist_ok=True)
        os.rename(d, target)
        if rng.random() < 0.3:
            shutil.rmtree(target)


def _quiet(flags: list[str], polls: list[int]) -> bool:
    polls.append(_pending(flags))
    return len(polls) >= 3 and not any(polls[-3:])


@pytest.mark.soak
@pytest.mark.parametrize(
    "seed", [int(os.environ.get("SOAK_SEED", 0))] if "SOAK_SEED" in os.environ else range(5)
)
def test_directories_moved_during_transfers(seed: int) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"soak-moves-{seed}-"))
    src = work / "src"
    src.mkdir()
    mirrors = start_mirrors(work, src, work / "journal", msync=False)
    agent = AgentProcess(mirrors.flags, work / "agent.log")
    try:
        agent.start()
        _churn(src, random.Random(seed))
        polls: list[int] = []
        wait_until(lambda: _quiet(mirrors.flags, polls), timeout=120, interval=0.5)
        tree = scan(src)
        found = {n: compare(tree, scan(p), seconds=s) for n, (p, s) in mirrors.dirs.items()}
        shown = "\n  ".join(f"{n}: {d}" for n, diffs in found.items() for d in diffs[:10])
        assert not any(found.values()), f"seed {seed} (SOAK_SEED={seed}):\n  {shown}"
    finally:
        agent.kill()
        mirrors.stop()
        shutil.rmtree(work, ignore_errors=True)
