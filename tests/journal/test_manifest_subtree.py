"""The manifest reads a scan walks with: one directory's own entries (its
subdirectories' subtrees skipped), a gone subtree children first, and the
long (hashed) paths, each checked against a brute-force reading of the
whole manifest."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import FileKind, FileState, Journal
from journal.codec import decode_state

F = FileState(FileKind.FILE, 1)
LONG = b"n" * 600  # over the direct-key limit: stored under a hash

# names chosen to straddle "/" in byte order: "!" sorts before it, "0" after
names = st.sampled_from([b"a", b"a!b", b"a0", b"b", b"\x01x", b"\xffz", LONG])
paths = st.lists(names, min_size=1, max_size=4).map(b"/".join)


def children_brute(manifest: dict[bytes, FileState], parent: bytes, subdirs: list[bytes]):
    """What ``manifest_children`` must return, from the whole manifest."""
    below = parent + b"/" if parent else b""
    keys, deep = [], set()
    for path in sorted(manifest):
        if not path.startswith(below) or len(path) > 480:
            continue
        rest = path[len(below) :]
        if b"/" not in rest:
            keys.append(path)
        elif rest.split(b"/")[0] not in subdirs:
            deep.add(rest.split(b"/")[0])
    return keys, deep


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(paths, max_size=25), st.sampled_from([b"", b"a", b"a!b", b"a/a"]), st.data())
def test_children_are_one_directory_deep(stored: set[bytes], parent: bytes, data: st.DataObject) -> None:
    """Every direct child in key order with its state; the names with
    entries below them, except the subdirectories the caller walks anyway."""
    manifest = {p: F for p in stored}
    subdirs = data.draw(st.lists(st.sampled_from([b"a", b"a!b", b"a0", b"b", b"zz"]), unique=True))
    with tempfile.TemporaryDirectory() as tmp, Journal.open(Path(tmp) / "j", root="/srv") as j:
        j.manifest_put({b"": FileState(FileKind.DIR), **manifest})
        keys, raws, deep = j.manifest_children(parent, subdirs)
        want_keys, want_deep = children_brute(manifest, parent, subdirs)
        assert keys == want_keys
        assert all(decode_state(r) == F for r in raws) and len(raws) == len(keys)
        assert set(deep) == want_deep


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(paths, max_size=25), st.sampled_from([b"a", b"a!b", b"a/a", b"b"]))
def test_below_reads_a_subtree_children_first(stored: set[bytes], top: bytes) -> None:
    """Every direct key strictly below ``top``, in descending key order, so
    each child comes before its parent; nothing of a sibling like ``top!x``."""
    with tempfile.TemporaryDirectory() as tmp, Journal.open(Path(tmp) / "j", root="/srv") as j:
        j.manifest_put(dict.fromkeys(stored, F))
        want = sorted((p for p in stored if p.startswith(top + b"/") and len(p) <= 480), reverse=True)
        assert [k for k, _ in j.manifest_below(top)] == want


def test_below_is_read_in_chunks(tmp_path: Path) -> None:
    """A subtree larger than one chunk is read on from the last key seen."""
    stored = {b"d/f%05d" % i: F for i in range(2500)}
    with Journal.open(tmp_path / "j", root="/srv") as j:
        j.manifest_put({b"d": FileState(FileKind.DIR), b"e": F, **stored})
        got: list[bytes] = []
        before = None
        while chunk := j.manifest_below(b"d", before):
            got += [k for k, _ in chunk]
            before = chunk[-1][0]
        assert got == sorted(stored, reverse=True)


def test_long_paths_are_read_by_prefix(tmp_path: Path) -> None:
    """Hashed paths come back by their real path, at or below ``under``."""
    with Journal.open(tmp_path / "j", root="/srv") as j:
        j.manifest_put({b"a/" + LONG: F, b"ab/" + LONG: F, b"a": F})
        assert set(j.manifest_long()) == {b"a/" + LONG, b"ab/" + LONG}
        assert set(j.manifest_long(b"a")) == {b"a/" + LONG}
        assert j.manifest_raw(b"a/" + LONG) is not None and j.manifest_raw(b"zz") is None
