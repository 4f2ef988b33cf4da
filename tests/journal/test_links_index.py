"""The manifest's hard-link index: names of multiply-linked files per inode,
kept in the same transaction as their states; old states and journals made
before the index stay readable."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from journal import FileKind, FileState, Journal
from journal.codec import decode_state, encode_state, state_inode_links, state_stat_prefix

LONG = b"l/" + b"n" * 600  # over the direct-key limit: stored under a hash


def linked(inode: int, nlink: int = 2, size: int = 1) -> FileState:
    return FileState(FileKind.FILE, size, 0o644, 0, 0, 5, 6, inode, b"d" * 32, b"", nlink)


def _sealed(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def test_codec_keeps_single_link_states_v2_and_reads_older_ones() -> None:
    """A state with one name encodes as v2, checksummed, without a count (the
    scan's prefix still matches); several names make a v3 with the count
    before the checksum; v1 (no checksum) reads as one name."""
    one = linked(7, nlink=1)
    raw = encode_state(one)
    head = struct.pack(">BBQIIIqqQBI", 2, 1, 1, 0o644, 0, 0, 5, 6, 7, 32, 0)
    assert raw == _sealed(head + b"d" * 32) and raw.startswith(state_stat_prefix(1, 1, 0o644, 0, 0, 5, 6, 7))
    assert decode_state(raw) == one and state_inode_links(raw) == (7, 1)
    v1 = b"\x01" + head[1:] + b"d" * 32
    assert decode_state(v1) == one and state_inode_links(v1) == (7, 1)
    three = linked(9, nlink=3)
    raw3 = encode_state(three)
    head3 = struct.pack(">BBQIIIqqQBI", 3, 1, 1, 0o644, 0, 0, 5, 6, 9, 32, 0)
    assert raw3 == _sealed(head3 + b"d" * 32 + struct.pack(">I", 3))
    assert decode_state(raw3) == three and state_inode_links(raw3) == (9, 3)
    assert not raw3.startswith(state_stat_prefix(1, 1, 0o644, 0, 0, 5, 6, 9))  # decoded and judged


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
