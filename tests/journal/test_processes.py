"""The journal with real second parties: map growth, the writer lock, readers."""

from __future__ import annotations

from pathlib import Path

from journal import Entry, Journal, JournalLocked, Op
from tests.helpers.pipes import line_of

from ._children import batch_entries
from ._util import run_child, spawn, stop


def test_tiny_map_grows_transparently(tmp_path: Path) -> None:
    """A 64 KiB map grows as needed; every appended entry stays readable."""
    with Journal.open(tmp_path / "j", tracks=["t"], map_size=64 * 1024) as j:
        first_size = j._env.info()["map_size"]
        seq = 0
        for batch in range(60):
            got = j.append(batch_entries(batch, seq + 1, 50))
            assert got == (seq + 1, seq + 50)
            seq = got[1]
        assert j._env.info()["map_size"] > first_size
    with Journal.open(tmp_path / "j") as j:
        records = list(j.since(seq=0))
        assert [r.seq for r in records] == list(range(1, 3001))
        assert [r.entry for r in records] == [e for b in range(60) for e in batch_entries(b, b * 50 + 1, 50)]
        assert j.stats().tracks["t"].pending == 3000


def test_second_writer_is_refused_naming_holder(tmp_path: Path) -> None:
    """A second agent on a locked journal gets JournalLocked with the holder's pid, at once."""
    holder = spawn("hold_lock", str(tmp_path / "j"))
    try:
        line = holder.stdout.readline().split()
        assert line[0] == "ready"
        result = run_child("try_open", str(tmp_path / "j"), timeout=60)
        assert result.stdout.split() == ["JournalLocked", str(holder.pid)], result.stderr
        try:
            Journal.open(tmp_path / "j")
        except JournalLocked as exc:
            assert exc.holder_pid == holder.pid
            assert str(holder.pid) in str(exc)
        else:
            raise AssertionError("second writer was not refused")
    finally:
        stop(holder)
    with Journal.open(tmp_path / "j") as j:  # released when the holder died
        assert j.tracks() == ["t"]


def test_reader_process_sees_whole_batches_while_writer_grows_map(tmp_path: Path) -> None:
    """A mode='read' process reads consistent snapshots while this process
    appends and grows the map under it."""
    jdir = tmp_path / "j"
    total = 4000
    with Journal.open(jdir, tracks=["t"], map_size=64 * 1024) as j:
        j.append(batch_entries(0, 1, 10))
        reader = spawn("read_while_writing", str(jdir), str(total))
        try:
            assert line_of(reader.stdout).strip() == "ready"
            seq, batch = 10, 1
            while seq < total:
                seq = j.append(batch_entries(batch, seq + 1, 50))[1]
                batch += 1
            out, err = reader.communicate(timeout=120)
        finally:
            stop(reader)
        assert reader.returncode == 0, err
        word, reads, last = out.split()
        assert word == "done" and int(last) == seq and int(reads) >= 1


def test_wait_for_change_wakes_on_append(tmp_path: Path) -> None:
    """A waiter in this process returns the new last seq once another thread appends."""
    import threading

    with Journal.open(tmp_path / "j", tracks=["t"]) as j:
        seen: list[int] = []
        waiter = threading.Thread(target=lambda: seen.append(j.wait_for_change(0, timeout=60)))
        waiter.start()
        j.append([Entry(Op.CHANGE, b"x")])
        waiter.join(timeout=60)
        assert seen == [1]
        assert j.wait_for_change(1, timeout=0.01) == 1


def test_threads_read_while_map_grows(tmp_path: Path) -> None:
    """Reader threads keep working while another thread's appends grow the map
    (resizing waits for open transactions instead of moving the map under them)."""
    import threading

    errors: list[BaseException] = []
    stop_flag = threading.Event()
    with Journal.open(tmp_path / "j", tracks=["t"], map_size=64 * 1024) as j:

        def reader() -> None:
            try:
                while not stop_flag.wait(0.001):  # readers that never pause starve the writer of the GIL
                    records = j.pending("t")
                    assert [r.seq for r in records] == list(range(1, len(records) + 1))
                    assert sum(1 for _ in j.since(seq=0)) >= len(records)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            seq = 0
            for batch in range(40):
                seq = j.append(batch_entries(batch, seq + 1, 50))[1]
        finally:
            stop_flag.set()
            for t in threads:
                t.join(timeout=60)
        assert not errors, errors
        assert j._env.info()["map_size"] > 64 * 1024
        assert len(j.pending("t")) == seq


def test_client_process_appends_beside_agent(tmp_path: Path) -> None:
    """A mode='client' process appends while the agent appends; both grow the
    map, every batch lands whole and seqs stay contiguous."""
    jdir = tmp_path / "j"
    with Journal.open(jdir, tracks=["t"], map_size=64 * 1024) as j:
        client = spawn("append_many", str(jdir), "client", "client", "60")
        try:
            assert line_of(client.stdout).strip() == "ready"
            mine = [
                j.append([Entry(Op.CHANGE, b"agent/%d/%d" % (n, i)) for i in range(30)]) for n in range(60)
            ]
            out, err = client.communicate(timeout=120)
        finally:
            stop(client)
        assert client.returncode == 0, err
        theirs = [tuple(int(x) for x in line.split()[1:]) for line in out.splitlines()]
        records = list(j.since(seq=0))
        assert [r.seq for r in records] == list(range(1, 3601))
        by_seq = {r.seq: r.entry.path for r in records}
        for tag, spans in ((b"agent", mine), (b"client", theirs)):
            assert len(spans) == 60
            for n, (first, last) in enumerate(spans):
                assert [by_seq[s] for s in range(first, last + 1)] == [
                    b"%s/%d/%d" % (tag, n, i) for i in range(30)
                ]
        assert j.stats().tracks["t"].pending == 3600
