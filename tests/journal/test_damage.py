"""Damage on disk is reported, never decoded into other values nor written
over: checksummed values, the marker that makes every later open refuse,
schema-2 journals (no checksums) upgraded in place, and the intake's
distinction between a torn last record and damage."""

from __future__ import annotations

import os
import random
from pathlib import Path

import lmdb
import pytest

from journal import (
    DamagedRecord,
    FileKind,
    FileState,
    Journal,
    JournalCorrupt,
    SchemaMismatch,
    WrongRoot,
    _intake,
)
from journal._layout import SCHEMA_VERSION
from journal._records import decode_record, encode_record
from journal.codec import decode_entry, decode_state, encode_entry, encode_state
from journal.types import Entry, Op
from tests.journal._util import flip_value, live_value

STATE = FileState(FileKind.FILE, 9, 0o644, 1, 2, 10**18, 10**18 + 5, 77, b"d" * 32, b"")
LINK = FileState(FileKind.SYMLINK, 3, 0o777, 0, 0, 5, 6, 8, b"e" * 32, b"a/b")
LINKED = FileState(FileKind.FILE, 4, 0o600, 0, 0, 7, 8, 99, b"f" * 32, b"", nlink=2)  # several names
ENTRIES = [Entry(Op.CHANGE, b"a"), Entry(Op.MOVE, b"b\xff", b"c", 7, 1), Entry(Op.DELETE, b"", time_ns=3)]


def _flips(raw: bytes) -> list[bytes]:
    """``raw`` with each bit of each byte flipped, one at a time."""
    return [raw[:i] + bytes([raw[i] ^ (1 << b)]) + raw[i + 1 :] for i in range(len(raw)) for b in range(8)]


@pytest.mark.parametrize("state", [STATE, LINK, LINKED])
def test_every_flipped_bit_of_a_state_is_refused(state: FileState) -> None:
    raw = encode_state(state)
    assert decode_state(raw) == state
    for damaged in _flips(raw):
        with pytest.raises(DamagedRecord):
            decode_state(damaged)


def test_every_flipped_bit_of_a_log_record_is_refused() -> None:
    raw = encode_record(ENTRIES)
    assert decode_record(raw) == ENTRIES
    for damaged in _flips(raw):
        with pytest.raises(DamagedRecord):
            decode_record(damaged)


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_flipped_bit_of_an_entry_is_refused(entry: Entry) -> None:
    """An entry stored on its own: a dead letter's copy."""
    raw = encode_entry(entry)
    assert decode_entry(raw) == entry
    for damaged in _flips(raw):
        with pytest.raises(DamagedRecord):
            decode_entry(damaged)


def test_damaged_dead_letter_is_refused(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    with Journal.open(jdir, tracks=["t"]) as j:
        j.append([Entry(Op.CHANGE, b"dead/path")])
        assert j.mark_dead("t", {1: "gave up"}) == 1
    key = b"t\0" + (1).to_bytes(8, "big")
    flip_value(jdir, b"dead", key, 4 + len(b"gave up") + 25)  # inside the path
    with Journal.open(jdir, mode="read") as j, pytest.raises(DamagedRecord, match="journal entry"):
        j.dead_letters()


def _v1(raw: bytes) -> bytes:
    """A value as schema 2 wrote it: version 1, no checksum."""
    return b"\x01" + raw[1:-4]


def test_values_without_checksum_still_read() -> None:
    assert decode_state(_v1(encode_state(LINK))) == LINK
    assert decode_record(_v1(encode_record(ENTRIES))) == ENTRIES
    assert decode_entry(_v1(encode_entry(ENTRIES[1]))) == ENTRIES[1]


def _journal_with_states(jdir: Path) -> None:
    with Journal.open(jdir, root="/r", tracks=["t"]) as j:
        j.manifest_put({b"a": STATE, b"b/c": LINK})
        j.append([Entry(Op.CHANGE, b"a")])


def _downgrade(jdir: Path, schema: int = 2) -> None:
    """Rewrite the journal as ``schema`` left it: no hard-link index, and in
    schema 2 states without checksums."""
    env = lmdb.open(str(jdir), max_dbs=8)
    try:
        manifest, meta = env.open_db(b"manifest"), env.open_db(b"meta")
        with env.begin(write=True) as txn:
            txn.drop(env.open_db(b"links", txn=txn), delete=True)
            for key, raw in list(txn.cursor(db=manifest)) if schema == 2 else ():
                txn.put(key, _v1(bytes(raw)), db=manifest)
            txn.put(b"schema", b"%d" % schema, db=meta)
    finally:
        env.close()


def test_schema_2_is_upgraded_by_the_agent(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    _journal_with_states(jdir)
    _downgrade(jdir)
    with Journal.open(jdir, mode="read") as j:  # a reader reads it as it is
        assert dict(j.manifest_items()) == {b"a": STATE, b"b/c": LINK}
    with pytest.raises(SchemaMismatch, match="schema 2"):
        Journal.open(jdir, mode="client")
    with pytest.raises(WrongRoot):
        Journal.open(jdir, root="/elsewhere")
    assert live_value(jdir, b"meta", b"schema") == b"2"
    assert live_value(jdir, b"manifest", b"a") == _v1(encode_state(STATE))
    with Journal.open(jdir) as j:
        assert j.schema == SCHEMA_VERSION
        assert dict(j.manifest_items()) == {b"a": STATE, b"b/c": LINK}
        assert [r.entry.path for r in j.pending("t")] == [b"a"]
        j.manifest_put({b"h": LINKED, b"d/h2": LINKED})  # the upgrade made the index
        assert set(j.linked_names([LINKED.inode])[LINKED.inode]) == {b"h", b"d/h2"}
    assert live_value(jdir, b"meta", b"schema") == b"%d" % SCHEMA_VERSION
    assert live_value(jdir, b"manifest", b"a") == encode_state(STATE)


def test_schema_3_is_upgraded_by_the_agent(tmp_path: Path) -> None:
    """A journal made before the hard-link index: readers see an empty index,
    a client is refused, the agent creates the index and keeps every state."""
    jdir = tmp_path / "j"
    _journal_with_states(jdir)
    _downgrade(jdir, 3)
    with Journal.open(jdir, mode="read") as j:
        assert j.linked_names([LINKED.inode]) == {LINKED.inode: {}}
        assert dict(j.manifest_items()) == {b"a": STATE, b"b/c": LINK}
    with pytest.raises(SchemaMismatch, match="schema 3"):
        Journal.open(jdir, mode="client")
    with Journal.open(jdir) as j:
        assert j.schema == SCHEMA_VERSION
        j.manifest_put({b"h": LINKED, b"d/h2": LINKED})
        assert set(j.linked_names([LINKED.inode])[LINKED.inode]) == {b"h", b"d/h2"}
    assert live_value(jdir, b"meta", b"schema") == b"%d" % SCHEMA_VERSION
    assert live_value(jdir, b"manifest", b"a") == encode_state(STATE)
    with Journal.open(jdir, mode="read") as j:
        assert set(j.linked_names([LINKED.inode])[LINKED.inode]) == {b"h", b"d/h2"}


def _journal_with_links(jdir: Path) -> None:
    with Journal.open(jdir, root="/r", tracks=["t"]) as j:
        j.manifest_put({b"h": LINKED, b"d/h2": LINKED, b"a": STATE})
        j.append([Entry(Op.CHANGE, b"h")])


def test_damaged_link_index_entry_is_refused(tmp_path: Path) -> None:
    """An index entry whose path no longer matches its key is damage."""
    jdir = tmp_path / "j"
    _journal_with_links(jdir)
    key = LINKED.inode.to_bytes(8, "big") + b"d/h2"
    flip_value(jdir, b"links", key, 2)
    with Journal.open(jdir) as j, pytest.raises(DamagedRecord, match="hard-link index"):
        j.linked_names([LINKED.inode])
    assert (jdir / "DAMAGED").exists()


def test_link_index_disagreeing_with_the_manifest_is_refused(tmp_path: Path) -> None:
    """An index entry naming a state of another inode (the manifest changed
    behind the index's back) is damage, not a name of the file."""
    jdir = tmp_path / "j"
    _journal_with_links(jdir)
    env = lmdb.open(str(jdir), max_dbs=8)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"d/h2", encode_state(STATE), db=env.open_db(b"manifest", txn=txn))
    finally:
        env.close()
    with Journal.open(jdir, mode="read") as j, pytest.raises(DamagedRecord, match="disagrees"):
        j.linked_names([LINKED.inode])


def test_damaged_linked_state_keeps_its_index_entry(tmp_path: Path) -> None:
    """Replacing a damaged state of a file with several names raises before
    its index entry is touched: the transaction does nothing."""
    jdir = tmp_path / "j"
    _journal_with_links(jdir)
    damaged = flip_value(jdir, b"manifest", b"d/h2", 70)
    with Journal.open(jdir) as j, pytest.raises(DamagedRecord, match="d/h2"):
        j.manifest_put({b"d/h2": STATE})
    assert live_value(jdir, b"manifest", b"d/h2") == damaged
    assert live_value(jdir, b"links", LINKED.inode.to_bytes(8, "big") + b"d/h2") == b"d/h2"


def test_damaged_schema_2_state_stops_the_upgrade(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    _journal_with_states(jdir)
    _downgrade(jdir)
    damaged = flip_value(jdir, b"manifest", b"b/c", 49)  # the link length: no checksum to tell
    before = (jdir / "data.mdb").read_bytes()
    with pytest.raises(JournalCorrupt, match="manifest state"):
        Journal.open(jdir)
    assert (jdir / "data.mdb").read_bytes() == before
    assert live_value(jdir, b"manifest", b"b/c") == damaged
    with pytest.raises(JournalCorrupt, match="found damaged"):
        Journal.open(jdir, mode="read")


@pytest.mark.parametrize("write", ["put", "done", "delete", "clear_below"])
def test_damaged_state_is_never_written_over(tmp_path: Path, write: str) -> None:
    """Replacing, removing or clearing a damaged state raises; the damaged
    bytes stay, and the journal is marked so every later open refuses."""
    jdir = tmp_path / "j"
    _journal_with_states(jdir)
    damaged = flip_value(jdir, b"manifest", b"b/c", 70)  # inside the digest: decodes only as damaged
    with Journal.open(jdir) as j:
        with pytest.raises(DamagedRecord, match="b/c"):
            if write == "put":
                j.manifest_put({b"b/c": STATE})
            elif write == "done":
                j.mark_done("t", [1], {b"b/c": STATE})
            elif write == "delete":
                j.mark_done("t", [1], {b"b/c": None})
            else:
                j.mark_done("t", [1], cleared=[b"b"])
        assert j.pending("t")  # the transaction that failed did nothing
    assert live_value(jdir, b"manifest", b"b/c") == damaged
    assert (jdir / "DAMAGED").exists()
    for mode in ("agent", "client", "read"):
        with pytest.raises(JournalCorrupt, match="found damaged"):
            Journal.open(jdir, mode=mode)  # type: ignore[arg-type]


def test_reader_reports_damage_without_marking(tmp_path: Path) -> None:
    jdir = tmp_path / "j"
    _journal_with_states(jdir)
    flip_value(jdir, b"manifest", b"a", 24)
    with Journal.open(jdir, mode="read") as j:
        with pytest.raises(DamagedRecord):
            j.manifest_get(b"a")
        with pytest.raises(DamagedRecord):
            dict(j.manifest_items())
    assert not (jdir / "DAMAGED").exists()


# ---------------------------------------------------------------- the intake


def _batch(first: int, count: int = 1, name: bytes = b"p") -> _intake.Batch:
    record = encode_record([Entry(Op.CHANGE, name + b"%d" % s) for s in range(first, first + count)])
    return _intake.Batch(first, count, ("t",), None, record)


def _file(*parts: tuple[int, bytes]) -> bytes:
    """An intake image: each part written at its offset over zeros."""
    raw = bytearray(_intake.SIZE)
    for at, data in parts:
        raw[at : at + len(data)] = data
    return bytes(raw)


def _records(*batches: _intake.Batch, at: int = 0) -> list[tuple[int, bytes]]:
    out = []
    for b in batches:
        data = _intake.encode(b)
        out.append((at, data))
        at += len(data)
    return out


def _flip_in(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1 :]


def test_intact_intake() -> None:
    raw = _file(*_records(_batch(1), _batch(2, 3), _batch(5)))
    found = _intake.scan(raw, 0)
    assert [b.first for b in found.chain] == [1, 2, 5] and not found.torn and not found.damage


def test_record_damaged_mid_chain() -> None:
    parts = _records(_batch(1), _batch(2, 3), _batch(5))
    raw = _file(*parts)
    for at in (parts[1][0] + 2, parts[1][0] + 30, parts[2][0] - 1):  # magic, digest, body
        found = _intake.scan(_flip_in(raw, at), 0)
        assert [b.first for b in found.chain] == [1]
        assert "seqs 2..4 would be lost" in found.damage, found


def test_first_record_damaged() -> None:
    parts = _records(_batch(1), _batch(2))
    found = _intake.scan(_flip_in(_file(*parts), 40), 0)
    assert found.chain == [] and "seqs 1..1 would be lost" in found.damage


def test_torn_last_record() -> None:
    parts = _records(_batch(1), _batch(2, 2))
    at, data = parts[1]
    torn = _file(parts[0], (at, data[: len(data) // 2]))
    found = _intake.scan(torn, 0)
    assert [b.first for b in found.chain] == [1] and not found.damage
    assert "seqs 2..3" in found.torn


def test_damage_in_records_already_folded_is_harmless() -> None:
    raw = _file(*_records(_batch(1), _batch(2), _batch(3)))
    found = _intake.scan(_flip_in(raw, 40), 3)  # LMDB holds seqs up to 3
    assert found.chain == [] and not found.damage and not found.torn


def test_records_left_from_before_a_rewind() -> None:
    """After a rewind new records overwrite old ones from offset 0: what is
    left beyond them is older than LMDB's last seq, whatever tore."""
    old = _records(*[_batch(s, name=b"old") for s in range(1, 9)])
    new = _records(_batch(9, 2, name=b"n"), _batch(11, name=b"n"))
    raw = _file(*old, *new)
    found = _intake.scan(raw, 8)
    assert [b.first for b in found.chain] == [9, 11] and not found.damage and not found.torn
    at, data = _records(_batch(12, name=b"n"), at=new[-1][0] + len(new[-1][1]))[0]
    torn = _file(*old, *new, (at, data[:20]))
    found = _intake.scan(torn, 8)
    assert [b.first for b in found.chain] == [9, 11] and not found.damage
    assert "seqs 12..12" in found.torn


def test_sigkill_mid_append_is_never_damage(tmp_path: Path) -> None:
    """Writers killed at random moments leave at most a torn last record:
    every mode opens the journal after each kill."""
    from .test_crash import _kill_at_random

    rng = random.Random(int(os.environ.get("JOURNAL_CRASH_SEED", random.randrange(2**32))))
    jdir = tmp_path / "j"
    for run in range(4):
        _kill_at_random(jdir, rng, run * 1_000_000)
        for mode in ("read", "client"):
            Journal.open(jdir, mode=mode).close()  # type: ignore[arg-type]
    assert not (jdir / "DAMAGED").exists()
