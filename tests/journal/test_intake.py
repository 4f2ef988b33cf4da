"""The intake: small batches made durable with one write and one fdatasync,
folded into LMDB later. Its chain survives rewinds and torn writes, a crash
before the fold loses nothing, and clients beside the agent never reuse a seq."""

from __future__ import annotations

import subprocess
from pathlib import Path

from journal import Entry, Journal, Op
from journal._intake import NAME, Batch, chain, encode
from journal._records import encode_record

from ._util import spawn, stop


def batch(first: int, count: int, tag: bytes = b"x", cp: int | None = None) -> Batch:
    entries = [Entry(Op.CHANGE, b"%s/%d" % (tag, i)) for i in range(count)]
    return Batch(first, count, ("t",), cp, encode_record(entries))


def test_chain_reads_records_in_order() -> None:
    """Records written one after another come back whole, tracks and checkpoint included."""
    items = [batch(1, 3, cp=5), batch(4, 1), batch(5, 2, b"y")]
    raw = b"".join(map(encode, items)) + bytes(100)
    assert chain(raw) == items


def test_chain_ends_at_older_records_left_behind_by_a_rewind() -> None:
    """After a rewind, a new record of exactly the old first record's size is
    followed by intact old records: their lower seqs end the chain."""
    old = [batch(1, 3), batch(4, 3), batch(7, 3)]
    raw = bytearray(b"".join(map(encode, old)))
    new = encode(batch(10, 3, b"z"))
    assert len(new) == len(encode(old[0]))
    raw[: len(new)] = new
    assert chain(bytes(raw)) == [batch(10, 3, b"z")]


def test_chain_ends_at_a_torn_or_damaged_record() -> None:
    """A record cut short (a crash while writing it) or with a flipped bit is
    not read, nor anything after it."""
    items = [batch(1, 2), batch(3, 2), batch(5, 2)]
    raw = b"".join(map(encode, items))
    second_end = len(encode(items[0])) + len(encode(items[1]))
    assert chain(raw[: second_end + 20] + bytes(200)) == items[:2]
    damaged = bytearray(raw)
    damaged[len(encode(items[0])) + 40] ^= 1
    assert chain(bytes(damaged)) == items[:1]
    assert chain(bytes(1000)) == []


def console(jdir: Path, fold_delay: str = "3600") -> subprocess.Popen[str]:
    proc = spawn("agent_console", str(jdir), fold_delay)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def send(proc: subprocess.Popen[str], line: str) -> tuple[int, int]:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    word, first, last = proc.stdout.readline().split()
    assert word == "acked"
    return int(first), int(last)


def test_sigkill_before_fold_loses_nothing(tmp_path: Path) -> None:
    """Batches acknowledged from the intake, never folded (the agent is
    SIGKILLed first), are all in LMDB after the next open, once each."""
    jdir = tmp_path / "j"
    agent = console(jdir)
    try:
        spans = [send(agent, f"append a{n} {n + 1} {1000 + n}") for n in range(20)]
        with Journal.open(jdir, mode="read") as reader:
            assert reader.last_seq() == 0, "the batches should still be only in the intake"
        assert (jdir / NAME).stat().st_size > 0
    finally:
        agent.kill()
        agent.wait()
    assert spans[0] == (1, 1) and spans[-1][1] == sum(range(1, 21))
    for _ in range(2):  # the second open finds the intake folded: nothing twice
        with Journal.open(jdir, tracks=["t", "u"]) as j:
            records = list(j.since(seq=0))
            assert [r.seq for r in records] == list(range(1, spans[-1][1] + 1))
            for n, (first, last) in enumerate(spans):
                assert [r.entry.path for r in records[first - 1 : last]] == [
                    b"a%d/%d" % (n, i) for i in range(n + 1)
                ]
            assert len(j.pending("u")) == len(records)
            assert j.checkpoint().time_ns == 1019 and j.checkpoint().seq == spans[-1][1]


def test_client_folds_the_agents_intake_before_appending(tmp_path: Path) -> None:
    """A client appending beside an agent whose batches sit unfolded in the
    intake takes the next seqs after them, and the agent's next batch follows
    the client's: no seq is used twice, nothing is lost after a SIGKILL."""
    jdir = tmp_path / "j"
    agent = console(jdir)
    try:
        assert send(agent, "append a1 3") == (1, 3)
        a2 = send(agent, "append a2 2")
        with Journal.open(jdir, mode="client") as client:
            c1 = client.append([Entry(Op.CHANGE, b"c1/%d" % i) for i in range(4)], tracks=["u"])
        assert c1 == (a2[1] + 1, a2[1] + 4)
        a3 = send(agent, "append a3 1")
        assert a3 == (c1[1] + 1, c1[1] + 1)
    finally:
        agent.kill()
        agent.wait()
    with Journal.open(jdir, tracks=["t", "u"]) as j:
        paths = [r.entry.path for r in j.since(seq=0)]
        assert paths == [
            b"a1/0",
            b"a1/1",
            b"a1/2",
            b"a2/0",
            b"a2/1",
            *(b"c1/%d" % i for i in range(4)),
            b"a3/0",
        ]
        assert [r.seq for r in j.pending("t")] == [1, 2, 3, 4, 5, 10]
        assert len(j.pending("u")) == 10


def test_fold_delay_brings_batches_to_readers(tmp_path: Path) -> None:
    """Without any read by the agent, a read-only process sees a small batch
    once the fold delay has passed."""
    jdir = tmp_path / "j"
    agent = console(jdir, fold_delay="0.05")
    try:
        first, last = send(agent, "append q 3")
        with Journal.open(jdir, mode="read") as reader:
            for _ in range(200):
                if reader.last_seq() == last:
                    break
                reader.wait_for_change(0, 0.05)
            assert [r.entry.path for r in reader.since(seq=first)] == [b"q/0", b"q/1", b"q/2"]
        agent.communicate(timeout=60)
        assert agent.returncode == 0
    finally:
        stop(agent)


def test_client_opened_before_the_agent_made_its_intake(tmp_path: Path) -> None:
    """A client that opened the journal while it had no intake still folds the
    one an agent creates later, before its own append."""
    jdir = tmp_path / "j"
    Journal.open(jdir, tracks=["t", "u"]).close()
    (jdir / NAME).unlink()  # all folded: as a journal made before the intake existed
    with Journal.open(jdir, mode="client") as client:
        agent = console(jdir)
        try:
            assert send(agent, "append a 2") == (1, 2)
            assert client.append([Entry(Op.CHANGE, b"c")]) == (3, 3)
            assert send(agent, "append b 1") == (4, 4)
        finally:
            agent.kill()
            agent.wait()
    with Journal.open(jdir, tracks=["t", "u"]) as j:
        assert [r.entry.path for r in j.since(seq=0)] == [b"a/0", b"a/1", b"c", b"b/0"]


def test_one_fold_of_batches_for_different_tracks(tmp_path: Path) -> None:
    """Small batches for changing sets of tracks, folded in one commit: each
    track gets exactly its seqs and its count, the checkpoint the newest."""
    with Journal.open(tmp_path / "j", tracks=["t", "u", "v"], fold_delay=3600) as j:
        plan = [
            (["t", "u"], 2, 10),
            (["t", "u"], 1, None),
            (["u"], 3, 11),
            (None, 1, None),
            (["t", "u"], 2, None),
        ]
        for n, (tracks, count, cp) in enumerate(plan):
            j.append(
                [Entry(Op.CHANGE, b"%d/%d" % (n, i)) for i in range(count)], tracks=tracks, checkpoint_ns=cp
            )
        assert j.unfolded() == 9
        expected = {"t": [1, 2, 3, 7, 8, 9], "u": list(range(1, 10)), "v": [7]}
        for track, seqs in expected.items():
            assert [r.seq for r in j.pending(track)] == seqs
            assert j.stats().tracks[track].pending == len(seqs)
        assert j.unfolded() == 0
        assert (j.checkpoint().time_ns, j.checkpoint().seq) == (11, 6)
