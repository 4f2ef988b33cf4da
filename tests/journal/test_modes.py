"""The three modes on a journal whose intake holds batches the agent
acknowledged and never folded (it was SIGKILLed): a reader writes nothing
and reports them as unfolded, a client folds them before its own write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from journal import Entry, Journal, JournalError, Op

from .test_intake import console, send


def _crashed_agent(jdir: Path) -> list[tuple[int, int]]:
    """An agent that acknowledged four small batches (8 entries) from its
    intake and died before folding them."""
    agent = console(jdir)
    try:
        spans = [send(agent, f"append {tag} {n}") for tag, n in (("a", 2), ("b", 1), ("c", 3), ("d", 2))]
    finally:
        agent.kill()
        agent.wait()
    return spans


def _files(jdir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime, but LMDB's lock file: its reader table
    takes a reader's slot, whatever the mode (LMDB's own bookkeeping)."""
    out = {}
    for name in sorted(os.listdir(jdir)):
        if name != "lock.mdb":
            path = jdir / name
            out[name] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


def test_a_reader_never_folds_the_intake(tmp_path: Path) -> None:
    """Every read, every refused write and the close leave every file as it
    was; the unfolded batches are counted, not read, until a client folds them."""
    jdir = tmp_path / "j"
    with Journal.open(jdir, tracks=["t", "u"], fold_delay=3600) as j:
        j.append([Entry(Op.CHANGE, b"folded/%d" % i) for i in range(2)])
        j.last_seq()  # an agent's read folds
    spans = _crashed_agent(jdir)
    assert spans[-1][1] == 2 + 2 + 1 + 3 + 2
    before = _files(jdir)
    with Journal.open(jdir, mode="read") as reader:
        assert reader.unfolded() == 8
        assert reader.last_seq() == 2
        assert [r.entry.path for r in reader.since(seq=0)] == [b"folded/0", b"folded/1"]
        assert len(reader.pending("t")) == 2
        assert reader.stats().tracks["u"].pending == 2
        assert reader.intake_torn == ""
        with pytest.raises(JournalError, match="read-only"):
            reader.append([Entry(Op.CHANGE, b"x")])
        with pytest.raises(JournalError, match="read-only"):
            reader.mark_done("t", [1])
        with pytest.raises(JournalError, match="read-only"):
            reader.set_checkpoint(5)
        assert reader.unfolded() == 8
    assert _files(jdir) == before
    with Journal.open(jdir, mode="client") as client:
        assert client.unfolded() == 8
        assert client.append([Entry(Op.CHANGE, b"client")], tracks=["u"]) == (11, 11)
        assert client.unfolded() == 0
    with Journal.open(jdir, mode="read") as reader:
        assert reader.unfolded() == 0
        assert reader.last_seq() == 11
        assert [r.seq for r in reader.pending("t")] == list(range(1, 11))


def test_an_agent_folds_what_it_finds_and_what_it_acknowledges(tmp_path: Path) -> None:
    """The next agent folds a crash's batches on open; its own small batches
    wait in the intake until a read or its fold thread brings them in."""
    jdir = tmp_path / "j"
    _crashed_agent(jdir)
    with Journal.open(jdir, tracks=["t", "u"], fold_delay=3600) as j:
        assert j.unfolded() == 0
        assert j.append([Entry(Op.CHANGE, b"small")]) == (9, 9)
        assert j.unfolded() == 1
        assert j.last_seq() == 9
        assert j.unfolded() == 0
