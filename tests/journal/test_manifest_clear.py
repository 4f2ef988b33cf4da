"""mark_done(cleared=...): a tree that left the mirror leaves the manifest,
long (hashed) paths included, and nothing beside it."""

from __future__ import annotations

from pathlib import Path

from journal import FileKind, FileState, Journal

LONG = b"/" + b"n" * 600  # over the direct-key limit: stored under a hash


def test_clearing_a_tree_keeps_the_tree_its_siblings_and_new_states(tmp_path: Path) -> None:
    """Entries strictly below the tree go; the tree itself, a sibling sharing
    its prefix and states given in the same call stay."""
    f, d = FileState(FileKind.FILE, 1), FileState(FileKind.DIR)
    with Journal.open(tmp_path / "j", root="/srv", tracks=["t"]) as j:
        j.manifest_put(
            {b"a": d, b"a/x": f, b"a/s/y": f, b"a" + LONG: f, b"ab": f, b"ab/z": f, b"ab" + LONG: f}
        )
        j.mark_done("t", [], {b"a/new": f}, cleared=[b"a"])
        assert dict(j.manifest_items()) == {b"a": d, b"a/new": f, b"ab": f, b"ab/z": f, b"ab" + LONG: f}
        j.mark_done("t", [], cleared=[b"ab", b""])  # the root is never cleared
        assert dict(j.manifest_items()) == {b"a": d, b"a/new": f, b"ab": f}
