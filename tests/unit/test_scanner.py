"""The scanner's pure deciders: what stat data alone says, and which unseen
manifest paths are deletes. A path's shipped state is its type, content,
mode, owner, mtime and symlink target: any of them differing is a change."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from agent.scan.scanner import Difference, deletions, stat_difference
from agent.tree.excludes import Excludes
from agent.tree.fsstate import same_metadata
from journal import FileKind, FileState

T = 1_000_000  # a threshold (checkpoint - slack) in ns

states = st.builds(
    FileState,
    kind=st.sampled_from([FileKind.FILE, FileKind.DIR, FileKind.SYMLINK]),
    size=st.integers(0, 3),
    mode=st.sampled_from([0o644, 0o600, 0o755]),
    uid=st.integers(0, 1),
    gid=st.integers(0, 1),
    mtime_ns=st.sampled_from([0, T - 1, T, T + 5]),
    ctime_ns=st.sampled_from([0, T - 1, T, T + 5]),
    inode=st.integers(1, 2),
    digest=st.sampled_from([b"", b"d" * 32]),
    link=st.sampled_from([b"", b"target"]),
)
thresholds = st.sampled_from([None, T])


def meta(s: FileState) -> tuple[object, ...]:
    return (s.kind, s.mode, s.uid, s.gid, s.link, s.mtime_ns)


def test_new_path_is_a_change() -> None:
    """A path the manifest does not know is enqueued without reading it."""
    assert stat_difference(FileState(FileKind.FILE, 3), None, T) is Difference.CHANGED


@given(disk=states, recorded=states, threshold=thresholds)
def test_metadata_difference_is_always_a_change(
    disk: FileState, recorded: FileState, threshold: int | None
) -> None:
    """Type, mode, owner, mtime or symlink target differences need no digest to be real."""
    if meta(disk) != meta(recorded):
        assert stat_difference(disk, recorded, threshold) is Difference.CHANGED


@given(state=states, threshold=thresholds)
def test_replaced_directory_is_a_change(state: FileState, threshold: int | None) -> None:
    """Another directory under a known name (new inode), however old and alike,
    is shipped: the mirror may have dropped the old one with a move."""
    old = dataclasses.replace(state, kind=FileKind.DIR, link=b"", mtime_ns=0, ctime_ns=0, inode=1)
    assert stat_difference(dataclasses.replace(old, inode=2), old, threshold) is Difference.CHANGED
    assert stat_difference(old, old, threshold) is Difference.SAME


@given(disk=states, recorded=states, threshold=thresholds)
def test_only_files_of_equal_size_are_hashed(
    disk: FileState, recorded: FileState, threshold: int | None
) -> None:
    """Reading is reserved for regular files whose size and recorded digest leave the content open."""
    if stat_difference(disk, recorded, threshold) is Difference.HASH:
        assert disk.kind == recorded.kind == FileKind.FILE
        assert disk.size == recorded.size and recorded.digest


@given(state=states, threshold=thresholds)
def test_unchanged_old_state_is_same(state: FileState, threshold: int | None) -> None:
    """An old state identical to the manifest's costs nothing (the clean-restart case)."""
    state = dataclasses.replace(state, digest=b"d" * 32, mtime_ns=0, ctime_ns=0)
    assert stat_difference(dataclasses.replace(state, digest=b""), state, threshold) is Difference.SAME


@given(state=states)
def test_recent_file_is_hashed_even_with_equal_metadata(state: FileState) -> None:
    """Timestamp granularity: a file changed near the checkpoint is read even if stat looks equal."""
    state = dataclasses.replace(state, kind=FileKind.FILE, link=b"", digest=b"d" * 32, ctime_ns=T)
    assert stat_difference(dataclasses.replace(state, digest=b""), state, T) is Difference.HASH


@given(disk=states, recorded=states)
def test_full_scan_hashes_exactly_the_stat_differences(disk: FileState, recorded: FileState) -> None:
    """Without a checkpoint, a file of the manifest's size and metadata is read iff a stat field differs."""
    comparable = disk.kind == recorded.kind == FileKind.FILE and meta(disk) == meta(recorded)
    if comparable and disk.size == recorded.size and recorded.digest:
        expected = Difference.SAME if same_metadata(disk, recorded) else Difference.HASH
        assert stat_difference(disk, recorded, None) is expected


@given(disk=states, recorded=states)
def test_old_ctime_differences_are_trusted_to_the_journal(disk: FileState, recorded: FileState) -> None:
    """From a checkpoint, an old ctime difference alone is not a suspect (it was journaled)."""
    disk = dataclasses.replace(
        disk, mtime_ns=recorded.mtime_ns, ctime_ns=0, inode=recorded.inode, size=recorded.size
    )
    if meta(disk) == meta(recorded) and recorded.digest and recorded.mtime_ns < T:
        assert stat_difference(disk, recorded, T) is Difference.SAME


@given(state=states, threshold=thresholds, mtime=st.sampled_from([0, 1, T - 1, T + 5]))
def test_touch_d_is_a_change_of_every_kind(state: FileState, threshold: int | None, mtime: int) -> None:
    """Another mtime alone (``touch -d``, content equal) is shipped state that
    differs, for a file, a directory or a symlink, however old: no read needed."""
    disk = dataclasses.replace(state, digest=b"", mtime_ns=mtime)
    expected = Difference.SAME if mtime == state.mtime_ns else Difference.CHANGED
    if state.kind != FileKind.FILE or mtime != state.mtime_ns:
        assert stat_difference(disk, state, threshold) is expected


@given(state=states, threshold=thresholds)
def test_ctime_and_inode_alone_are_not_a_change_of_a_file_or_symlink(
    state: FileState, threshold: int | None
) -> None:
    """A chmod undone, or a file replaced by an identical copy with the same
    mtime: ctime and inode are not shipped, so nothing is (a file is read)."""
    state = dataclasses.replace(state, digest=b"d" * 32, mtime_ns=0, ctime_ns=0)
    disk = dataclasses.replace(state, digest=b"", ctime_ns=T + 5, inode=state.inode + 1)
    if state.kind == FileKind.FILE:
        assert stat_difference(disk, state, threshold) is Difference.HASH
    elif state.kind == FileKind.SYMLINK:
        assert stat_difference(disk, state, threshold) is Difference.SAME
    assert stat_difference(dataclasses.replace(disk, inode=state.inode), state, threshold) is (
        Difference.HASH if state.kind == FileKind.FILE else Difference.SAME
    )


names = st.sampled_from([b"a", b"b", b"a-b", b"x\xff", b"c\n"])
paths = st.lists(names, min_size=1, max_size=4).map(b"/".join)


@given(unseen=st.sets(paths, max_size=20), skipped=st.lists(paths, max_size=2), excluded=st.booleans())
def test_deletions(unseen: set[bytes], skipped: list[bytes], excluded: bool) -> None:
    """Deletes: children before parents; nothing at or below a skipped dir; excluded paths kept."""
    excludes = Excludes(["b"] if excluded else [])
    manifest = {p: FileState(FileKind.DIR) for p in unseen}
    out = [p for p, _ in deletions(manifest, skipped, excludes)]
    assert len(out) == len(set(out))
    for p in unseen:
        under_skip = any(p == s or p.startswith(s + b"/") for s in skipped)
        keep = under_skip or (excluded and b"b" in p.split(b"/"))
        assert (p in out) is not keep
    for i, p in enumerate(out):
        assert not any(q.startswith(p + b"/") for q in out[i + 1 :]), "a child came after its parent"
