"""An append's ``recheck`` runs under every lock an append takes: whatever
another thread or process appends while the recheck looks is numbered after
the rechecked batch, on every path a batch can take (intake, LMDB, client)."""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from journal import Entry, Journal, Op
from journal._intake import MAX_BODY
from journal._log import encode_batch

from ._util import spawn, stop

BLOCKED_S = 0.5  # how long a recheck gives the other append to overtake it (it must not)


def entries(tag: bytes, count: int) -> list[Entry]:
    return [Entry(Op.DELETE, b"%s/%04d/%s" % (tag, i, b"x" * 20)) for i in range(count)]


def revive(batch: list[Entry]) -> list[Entry]:
    """A recheck: every DELETE becomes a CHANGE, the last entry is dropped."""
    return [Entry(Op.CHANGE, e.path, time_ns=e.time_ns) for e in batch[:-1]]


def appended_while_rechecking(
    journal: Journal, batch: list[Entry], other: Callable[[], None]
) -> tuple[int, int]:
    """Append ``batch`` with a recheck that starts ``other`` (another append)
    and gives it ``BLOCKED_S`` to get in first."""
    started: list[threading.Thread] = []

    def recheck(got: list[Entry]) -> list[Entry]:
        if not started:
            thread = threading.Thread(target=other, daemon=True)
            thread.start()
            started.append(thread)
            thread.join(BLOCKED_S)  # it waits for the locks this recheck runs under
        return revive(got)

    span = journal.append(batch, recheck=recheck)
    assert span is not None and started
    started[0].join(30)
    assert not started[0].is_alive()
    return span


@pytest.mark.parametrize("count", [3, 2000], ids=["intake", "lmdb"])
def test_another_thread_is_numbered_after_the_rechecked_batch(tmp_path: Path, count: int) -> None:
    batch = entries(b"scan", count)
    assert (len(encode_batch(batch)[0][1]) > MAX_BODY) is (count > 100)
    with Journal.open(tmp_path / "j", tracks=["t"]) as journal:
        other: list[tuple[int, int] | None] = []
        span = appended_while_rechecking(
            journal, batch, lambda: other.append(journal.append([Entry(Op.CHANGE, b"watcher")]))
        )
        assert span == (1, count - 1)
        assert other == [(count, count)]
        got = [r.entry for r in journal.since(seq=1)]
    assert got[: count - 1] == revive(batch)
    assert got[-1].path == b"watcher"


@pytest.mark.parametrize("count", [1, 2000], ids=["intake", "lmdb"])
def test_an_agent_process_is_numbered_after_a_clients_rechecked_batch(tmp_path: Path, count: int) -> None:
    """A client's recheck holds the agent's appends off, whether the agent
    writes its intake or LMDB."""
    jdir = tmp_path / "j"
    agent = spawn("agent_console", str(jdir), "3600")
    try:
        assert agent.stdout is not None and agent.stdin is not None
        assert agent.stdout.readline().strip() == "ready"

        def agent_appends() -> None:
            agent.stdin.write(f"append w {count}\n")
            agent.stdin.flush()
            select.select([agent.stdout], [], [], BLOCKED_S)  # no answer while the client holds the locks

        with Journal.open(jdir, mode="client") as client:
            span = appended_while_rechecking(client, entries(b"c", 5), agent_appends)
        word, first, _last = agent.stdout.readline().split()
        assert word == "acked" and int(first) == span[1] + 1
    finally:
        stop(agent)


def test_a_recheck_that_keeps_nothing_appends_nothing(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j", tracks=["t"]) as journal:
        assert journal.append(entries(b"x", 1), recheck=lambda b: [], checkpoint_ns=7) is None
        assert journal.last_seq() == 0
        assert journal.checkpoint().time_ns == 7
