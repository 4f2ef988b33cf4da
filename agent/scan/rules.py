"""The scanner's pure deciders: is a path's state on disk a change from the
manifest's (from stat data alone, or after reading it), and which manifest
paths that were not seen are deletes."""

from __future__ import annotations

import enum

from agent.tree.excludes import Excludes
from agent.tree.fsstate import same_metadata
from journal import FileKind, FileState

__all__ = ["Difference", "stat_difference", "deletions"]


class Difference(enum.Enum):
    """Whether a path on disk differs from its manifest state, by stat data."""

    SAME = "same"  # nothing to ship
    CHANGED = "changed"  # a real difference, no need to read the content
    HASH = "hash"  # suspect: compare the content digest


def stat_difference(disk: FileState, recorded: FileState | None, threshold_ns: int | None) -> Difference:
    """Decide from stat data alone. ``disk`` carries the symlink target but no
    digest; ``threshold_ns`` is checkpoint - slack, or None for a full scan
    (then any stat difference makes a file a suspect). Type, mode, owner,
    mtime and symlink target are shipped state: a difference in any of them
    is a change of every kind of path, content equal or not (``touch -d``);
    ctime and inode are not shipped, only hints that the content may differ."""
    if recorded is None:
        return Difference.CHANGED
    if (disk.kind, disk.mode, disk.uid, disk.gid, disk.mtime_ns, disk.link) != (
        recorded.kind,
        recorded.mode,
        recorded.uid,
        recorded.gid,
        recorded.mtime_ns,
        recorded.link,
    ):
        return Difference.CHANGED
    if disk.kind == FileKind.DIR and disk.inode != recorded.inode:
        return Difference.CHANGED  # another directory now has this name: its mirror copy may be gone
    if disk.kind != FileKind.FILE:
        return Difference.SAME
    if disk.size != recorded.size or not recorded.digest:
        return Difference.CHANGED
    if threshold_ns is None:
        return Difference.SAME if same_metadata(disk, recorded) else Difference.HASH
    if disk.ctime_ns >= threshold_ns or disk.mtime_ns >= threshold_ns or disk.inode != recorded.inode:
        return Difference.HASH
    return Difference.SAME  # older stat changes are in the journal already (checkpoint)


def deletions(
    unseen: dict[bytes, FileState], skipped: list[bytes], excludes: Excludes
) -> list[tuple[bytes, FileState]]:
    """Manifest paths absent on disk that must be deleted, children first.
    Paths at or below a ``skipped`` directory, and excluded paths, are kept."""
    prefixes = tuple(s + b"/" for s in skipped)
    skipped_set = set(skipped)
    out = []
    for path, state in unseen.items():
        if path in skipped_set or (prefixes and path.startswith(prefixes)):
            continue
        if excludes and excludes.match(path, state.kind == FileKind.DIR):
            continue
        out.append((path, state))
    out.sort(reverse=True)  # b"a/x" > b"a": every child sorts after its parent
    return out
