"""SIGKILL of a writer at random moments: acknowledged batches survive intact,
and no batch is ever partly visible."""

from __future__ import annotations

import os
import random
import select
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from journal import Journal
from tests.helpers.pipes import line_of

from ._children import entry_for
from ._util import spawn, stop

KILLS = 6


def _kill_at_random(jdir: Path, rng: random.Random, batch0: int) -> list[tuple[int, int, int, int]]:
    """Run one writer, SIGKILL it after a random delay, return the ranges it acknowledged."""
    child = spawn("append_loop", str(jdir), str(rng.randrange(2**32)), str(batch0))
    try:
        assert line_of(child.stdout).startswith("ready")
        deadline = time.monotonic() + rng.uniform(0.0, 0.4)
        while time.monotonic() < deadline:  # random kill moment, reading acks meanwhile
            select.select([], [], [], 0.01)
        os.kill(child.pid, signal.SIGKILL)
        out, _err = child.communicate(timeout=60)
    finally:
        stop(child)
    assert child.returncode == -signal.SIGKILL
    acked = []
    for line in out.splitlines():
        word, *nums = line.split()
        assert word == "acked"
        acked.append(tuple(int(n) for n in nums))
    return acked


def test_sigkill_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    """Every acknowledged range is present with its exact content; batches are all-or-nothing."""
    seed = int(os.environ.get("JOURNAL_CRASH_SEED", random.randrange(2**32)))
    print(f"crash seed {seed} (set JOURNAL_CRASH_SEED to replay)")
    rng = random.Random(seed)
    jdir = tmp_path / "j"
    acked: list[tuple[int, int, int, int]] = []
    for run in range(KILLS):
        acked += _kill_at_random(jdir, rng, run * 1_000_000)
    assert acked, "no batch was acknowledged in any run"
    with Journal.open(jdir) as j:
        records = {r.seq: r.entry for r in j.since(seq=0)}
        assert list(records) == list(range(1, len(records) + 1))
        for first, last, batch, size in acked:
            assert last - first + 1 == size
            for seq in range(first, last + 1):
                assert records[seq] == entry_for(batch, seq, size), f"seed {seed}: seq {seq}"
        per_batch = Counter()
        for seq, entry in records.items():
            batch, size = (int(x[1:]) for x in entry.path.split(b"/")[:2])
            assert entry == entry_for(batch, seq, size), f"seed {seed}: seq {seq} damaged"
            per_batch[(batch, size)] += 1
        partial = {b: n for b, n in per_batch.items() if n != b[1]}
        assert not partial, f"seed {seed}: partial batches {partial}"
        assert j.stats().tracks["t"].pending == len(records)


@pytest.mark.soak
def test_sigkill_soak(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The same crash check over many more kills (only with ``-m soak``)."""
    if "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("soak run: select it with -m soak")
    for i in range(20):
        os.environ["JOURNAL_CRASH_SEED"] = str(i)
        try:
            test_sigkill_loses_no_acknowledged_batch(tmp_path / str(i))
        finally:
            del os.environ["JOURNAL_CRASH_SEED"]
