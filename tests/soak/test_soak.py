"""The standing differential soak: nothing lost, and verify tells the truth.

Each seed drives a random writer against a real agent (local and rsync
mirrors) with SIGKILLs and an inotify overflow, then compares every mirror
with the tree independently and checks that ``agent verify`` agrees.

Odd seeds also keep a member of the msync double, with names kept within
what msync can carry (``SOAK_MSYNC=0`` or ``1`` forces it off or on).

Replay one seed: ``SOAK_SEED=N [SOAK_OPS=N] [SOAK_MSYNC=1] pytest tests/soak/test_soak.py``
(the report prints the exact line). Long run: ``pytest -m soak tests/soak``
with ``SOAK_SEEDS`` (how many seeds), ``SOAK_OPS`` (operations per seed),
``SOAK_KILLS`` (SIGKILLs per seed), ``SOAK_KEEP=1`` (keep a failing run's tree,
mirrors, journal and agent log) and ``SOAK_CONVERGE_S`` (the deadline for
the agent to finish its work at the end).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.soak.run import run_soak

SHORT_SEEDS = (1, 2, 4)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _seeds(default: tuple[int, ...]) -> list[int]:
    if "SOAK_SEED" in os.environ:
        return [int(os.environ["SOAK_SEED"])]
    count = _env_int("SOAK_SEEDS", len(default))
    if count <= len(default):
        return list(default[:count])
    return [*default, *random.Random(count).sample(range(1000, 1 << 30), count - len(default))]


def _msync(seed: int) -> bool:
    return bool(int(os.environ.get("SOAK_MSYNC", seed % 2)))


def _run(seed: int, ops: int, kills: int) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"soak-{seed}-"))
    keep = False
    try:
        res = run_soak(work, seed, ops, kills, msync=_msync(seed))
        print(res.report(limit=40))
        keep = bool(res.problems()) and os.environ.get("SOAK_KEEP") == "1"
        assert not res.problems(), res.report() + (f"\nkept for inspection: {work}" if keep else "")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("seed", _seeds(SHORT_SEEDS))
def test_soak_short(seed: int) -> None:
    """A few seeds of a few hundred operations, three SIGKILLs and one overflow each."""
    _run(seed, _env_int("SOAK_OPS", 250), _env_int("SOAK_KILLS", 3))


@pytest.mark.soak
@pytest.mark.parametrize("seed", _seeds(tuple(range(100, 120))))
def test_soak_long(seed: int) -> None:
    """Twenty seeds (``SOAK_SEEDS``) of 1,500 operations and ten SIGKILLs each."""
    _run(seed, _env_int("SOAK_OPS", 1500), _env_int("SOAK_KILLS", 10))
