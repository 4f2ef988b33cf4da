"""Directories whose listing moved while a recursive PUT was being copied.

A recursive copy takes what a directory holds when the shipper reads it,
which can include names made after the replayer's capture. The manifest
learns only captured names. If such a name's event is then lost (a kill, an
overflow) and the name disappears while nobody watches, the mirror keeps it
and no scan can see it: a scan compares the tree with the manifest, never
with a mirror. Every name made or removed in a directory moves that
directory's mtime and ctime, so a directory whose state differs between the
capture and the end of the ship may have had names copied beyond the
capture: the replayer journals it again as a subtree change, and the copy
repeats until the directory held still (the mirror then holds the captured
names exactly).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from agent.tree.excludes import Excludes
from agent.tree.walk import Walk
from journal import FileKind, FileState

__all__ = ["moved_listings", "outermost"]


def moved_listings(
    root: bytes,
    dev: int,
    tops: Iterable[bytes],
    captured: Mapping[bytes, FileState | None],
    excludes: Excludes,
) -> list[bytes]:
    """Directories at or below ``tops`` whose state now differs from the
    ``captured`` one (inode, mtime, ctime) or that were not captured, the
    outermost of each moved subtree only. Excluded directories were not
    captured and are not looked at. A top that is no longer a
    directory yields nothing: its own change is journaled by the watcher or
    found by the scan, since the manifest knows it."""
    moved: list[bytes] = []
    for top in tops:
        for listing in Walk(root, excludes, dev, top):
            if not _same_dir(captured.get(listing.rel), os.fstat(listing.fd)):
                moved.append(listing.rel)
    return outermost(moved)


def _same_dir(old: FileState | None, st: os.stat_result) -> bool:
    return (
        old is not None
        and old.kind == FileKind.DIR
        and (old.inode, old.mtime_ns, old.ctime_ns) == (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    )


def outermost(paths: Iterable[bytes]) -> list[bytes]:
    """``paths`` without those lying below another of them (pure)."""
    chosen = set(paths)
    if b"" in chosen:
        return [b""]
    return sorted(p for p in chosen if not any(a in chosen for a in _ancestors(p)))


def _ancestors(path: bytes) -> Iterable[bytes]:
    while b"/" in path:
        path = path.rpartition(b"/")[0]
        yield path
