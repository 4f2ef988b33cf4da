"""The manifest's hard-link index: names of multiply-linked files per inode,
kept in the same transaction as their states; old states and journals made
before the index stay readable."""

from __future__ import annotations

import struct
from pathlib import Path

import lmdb

from journal import FileKind, FileState, Journal
from journal.codec import decode_state, encode_state, state_inode_links, state_stat_prefix

LONG = b"l/" + b"n" * 600  # over the direct-key limit: stored under a hash


def linked(inode: int, nlink: int = 2, size: int = 1) -> FileState:
    return FileState(FileKind.FILE, size, 0o644, 0, 0, 5, 6, inode, b"d" * 32, b"", nlink)


def test_codec_keeps_single_link_states_byte_identical_and_reads_v1() -> None:
    """A state with one name encodes as the first schema (the scan's prefix
    still matches); several names add the count; a hand-made v1 record reads
    as one name."""
    one = linked(7, nlink=1)
    raw = encode_state(one)
    assert raw[0] == 1 and raw.startswith(state_stat_prefix(1, 1, 0o644, 0, 0, 5, 6, 7))
    v1 = struct.pack(">BBQIIIqqQBI", 1, 1, 1, 0o644, 0, 0, 5, 6, 7, 32, 0) + b"d" * 32
    assert raw == v1 and decode_state(v1) == one and state_inode_links(v1) == (7, 1)
    three = linked(9, nlink=3)
    raw3 = encode_state(three)
    assert raw3[0] == 2 and decode_state(raw3) == three and state_inode_links(raw3) == (9, 3)


def test_index_follows_puts_removals_and_cleared_trees(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j", root="/srv", tracks=["t"]) as j:
        j.manifest_put(
            {b"a": linked(7), b"d/b": linked(7), b"x/c": linked(7), LONG: linked(7), b"solo": linked(8, 1)}
        )
        assert set(j.linked_names([7, 8])[7]) == {b"a", b"d/b", b"x/c", LONG}
        assert j.linked_names([8]) == {8: {}}
        j.manifest_put({b"a": linked(7, nlink=1)})  # one name left the group
        j.mark_done("t", [], {b"d/b": None}, cleared=[b"x", b"l"])
        assert j.linked_names([7]) == {7: {}}
        j.mark_done("t", [], {b"a": linked(7, nlink=2, size=3)})
        assert j.linked_names([7]) == {7: {b"a": linked(7, nlink=2, size=3)}}


def test_manifest_pass_finds_names_recorded_with_one_link(tmp_path: Path) -> None:
    """A name shipped before the file got its other names is not indexed; the
    pass over the manifest finds it by inode."""
    with Journal.open(tmp_path / "j", root="/srv", tracks=["t"]) as j:
        j.manifest_put({b"a": linked(7, 1), LONG: linked(7, 1), b"other": linked(8, 1), b"b": linked(7, 2)})
        found = j.manifest_with_inodes([7])
        assert set(found[7]) == {b"a", LONG, b"b"} and found[7][b"a"] == linked(7, 1)


def test_journal_made_before_the_index_opens(tmp_path: Path) -> None:
    """An older journal lacks the index database: a reader sees an empty
    index, the agent's writable open creates it."""
    with Journal.open(tmp_path / "j", root="/srv", tracks=["t"]) as j:
        j.manifest_put({b"a": linked(7)})
    env = lmdb.open(str(tmp_path / "j"), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"links", txn=txn), delete=True)
    env.close()
    with Journal.open(tmp_path / "j", mode="read") as j:
        assert j.linked_names([7]) == {7: {}} and j.manifest_get(b"a") == linked(7)
    with Journal.open(tmp_path / "j", root="/srv", tracks=["t"]) as j:
        j.manifest_put({b"b": linked(7)})
        assert set(j.linked_names([7])[7]) == {b"b"}
