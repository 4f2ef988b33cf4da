"""Schema 5 dropped the ``latest`` index (path -> newest log record), which
every append wrote and nothing but tests read: a new journal has none, and
the agent drops it from a schema-4 journal, keeping everything else."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from journal import Entry, FileKind, FileState, Journal, Op, SchemaMismatch
from journal._layout import SCHEMA_VERSION
from tests.journal._util import live_value

STATE = FileState(FileKind.FILE, 9, 0o644, 1, 2, 10**18, 10**18 + 5, 77, b"d" * 32, b"")
LONG = b"deep/" + b"x" * 600  # hashed key: its full name is kept in ``longpath``


def _db_names(jdir: Path) -> set[bytes]:
    env = lmdb.open(str(jdir), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {bytes(k) for k in txn.cursor().iternext(values=False)}
    finally:
        env.close()


def _as_schema_4(jdir: Path) -> None:
    """Make the journal what schema 4 left: a ``latest`` index naming, for
    each path of the log, the key of the record holding its newest entry."""
    env = lmdb.open(str(jdir), max_dbs=16)
    try:
        with env.begin(write=True) as txn:
            latest = env.open_db(b"latest", txn=txn, create=True)
            txn.put(b"a", (1).to_bytes(8, "big"), db=latest)
            txn.put(b"b", (2).to_bytes(8, "big"), db=latest)
            txn.put(b"meta-is-untouched", (2).to_bytes(8, "big"), db=latest)
    finally:
        env.close()
    _as_schema_5(jdir)
    _stamp(jdir, b"4")


def _as_schema_5(jdir: Path) -> None:
    """Make the journal what schema 5 left: no ``recorded`` index."""
    env = lmdb.open(str(jdir), max_dbs=16)
    try:
        with env.begin(write=True) as txn:
            txn.drop(env.open_db(b"recorded", txn=txn, create=False), delete=True)
    finally:
        env.close()
    _stamp(jdir, b"5")


def _stamp(jdir: Path, schema: bytes) -> None:
    env = lmdb.open(str(jdir), max_dbs=16)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"schema", schema, db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()


def _journal(jdir: Path) -> None:
    with Journal.open(jdir, root="/r", tracks=["t", "u"]) as j:
        j.append([Entry(Op.CHANGE, b"a"), Entry(Op.DELETE, LONG)])
        j.append([Entry(Op.MOVE, b"b", b"c", time_ns=5)], checkpoint_ns=9)
        j.manifest_put({b"a": STATE, LONG: STATE})
        j.mark_done("u", [1])


def _contents(j: Journal) -> tuple[object, ...]:
    return (
        [r for r in j.since(seq=0)],
        [r.seq for r in j.pending("t")],
        [r.seq for r in j.pending("u")],
        dict(j.manifest_items()),
        j.checkpoint(),
        j.tracks(),
    )


def test_a_new_journal_keeps_no_latest_index(tmp_path: Path) -> None:
    """Appends write no per-path index: the log, pending ranges and manifest say it all."""
    jdir = tmp_path / "j"
    _journal(jdir)
    assert b"latest" not in _db_names(jdir)
    assert live_value(jdir, b"meta", b"schema") == b"%d" % SCHEMA_VERSION == b"6"


def test_schema_4_is_upgraded_by_the_agent(tmp_path: Path) -> None:
    """A reader reads a schema-4 journal as it is, a client is refused, and
    the agent drops the index in the transaction that stamps the schema."""
    jdir = tmp_path / "j"
    _journal(jdir)
    with Journal.open(jdir, mode="read") as j:
        before = _contents(j)
    _as_schema_4(jdir)
    with Journal.open(jdir, mode="read") as j:
        assert j.schema == 4
        assert _contents(j) == before
    with pytest.raises(SchemaMismatch, match="schema 4"):
        Journal.open(jdir, mode="client")
    assert b"latest" in _db_names(jdir)
    with Journal.open(jdir) as j:
        assert j.schema == SCHEMA_VERSION
        assert _contents(j) == before
        assert j.append([Entry(Op.CHANGE, b"d")]) == (4, 4)
        assert j.mark_done("t", [1, 2, 3, 4]) == 4
        assert j.compact(retention_ns=0, now_ns=10**19) == 1  # "u" still waits for 2..4
    assert b"latest" not in _db_names(jdir)
    assert live_value(jdir, b"meta", b"schema") == b"%d" % SCHEMA_VERSION
    with Journal.open(jdir, mode="client") as j:
        assert [r.seq for r in j.pending("u")] == [2, 3, 4]


def test_schema_5_gains_the_recorded_index(tmp_path: Path) -> None:
    """Schema 5 had no ``recorded`` index: a reader reads it as it is, the
    agent creates the index, and a state of the old journal (recorded from
    no entry) is removed by any later removal, as before."""
    jdir = tmp_path / "j"
    _journal(jdir)
    with Journal.open(jdir, mode="read") as j:
        before = _contents(j)
    _as_schema_5(jdir)
    assert b"recorded" not in _db_names(jdir)
    with Journal.open(jdir, mode="read") as j:
        assert j.schema == 5
        assert _contents(j) == before
    with Journal.open(jdir) as j:
        assert j.schema == SCHEMA_VERSION
        assert _contents(j) == before
        j.mark_done("t", [], {b"a": None}, origin={b"a": 1})
        assert j.manifest_get(b"a") is None
    assert b"recorded" in _db_names(jdir)
