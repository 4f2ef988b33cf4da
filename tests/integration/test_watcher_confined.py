"""The watcher never watches or lists outside the tree: a directory it is
about to watch whose parent became a symlink to a foreign tree (the race of
a moved-in tree being replaced while the watcher walks it) yields no watch
and no entry, and events in the foreign tree reach no journal."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from agent.tree.excludes import Excludes
from agent.watch.watcher import Watcher
from journal import Entry, Journal
from tests.helpers.wait import wait_until


def create(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_walk_below_a_parent_swapped_for_a_symlink_stays_inside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "sub" / "deeper").mkdir(parents=True)
    for i in range(10):
        create(outside / "sub" / f"foreign{i}", b"outside")
    root.mkdir()
    with Journal.open(tmp_path / "journal", root=str(root), tracks=["t"]) as journal:
        watcher = Watcher(root, journal, Excludes([]))
        watcher.start()
        try:
            (root / "m").symlink_to(outside)  # was a moved-in directory holding sub/ when listed
            before = watcher.watches
            found: list[Entry] = []
            watcher.watchset.watch_tree(b"m/sub", found)
            assert found == []
            assert watcher.watches == before
            stop = threading.Event()
            thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
            thread.start()
            try:
                create(outside / "sub" / "later", b"written outside after the walk")
                create(root / "marker", b"events are read in order: the marker comes after")
                wait_until(lambda: b"marker" in paths(journal), timeout=20, message="marker not journaled")
            finally:
                stop.set()
                thread.join(timeout=15)
        finally:
            watcher.close()
        assert not thread.is_alive()
        assert paths(journal) <= {b"marker", b"m"}


def paths(journal: Journal) -> set[bytes]:
    return {r.entry.path for r in journal.since(seq=1)}
