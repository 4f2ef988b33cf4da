"""A write through one name of a hard-linked file reaches every name on the
mirror: inotify reports only the name written, so the replayer journals the
other names it knows. Real inotify, journal, replayer, local and rsync
shippers; and the stopped-agent case through the real startup scan."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.operate.config import LocalTarget, RsyncTarget
from agent.scan.scanner import Scanner
from agent.ship.base import Shipper
from agent.ship.local.shipper import LocalShipper
from agent.ship.replayer import Replayer
from agent.ship.rsync.shipper import RsyncShipper
from agent.tree.excludes import Excludes
from agent.watch.watcher import Watcher
from journal import Entry, Journal, Op
from tests.helpers.wait import wait_until

TRACK = "t"


def make_shipper(kind: str, mirror: Path, root: Path) -> Shipper:
    if kind == "local":
        return LocalShipper(LocalTarget(TRACK, mirror), root)
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed")
    return RsyncShipper(RsyncTarget(TRACK, str(mirror), timeout_s=60), root)


def write(path: Path, data: bytes, *, append: bool = False) -> None:
    """Write through a name, never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def names_current(root: Path, mirror: Path, names: list[str], journal: Journal) -> Callable[[], bool]:
    def check() -> bool:
        return not journal.pending(TRACK) and all(read(mirror / n) == read(root / n) for n in names)

    return check


def linked_on(mirror: Path, names: list[str]) -> bool:
    """Every name is the same file on the mirror (the group is kept)."""
    try:
        return len({os.lstat(mirror / n).st_ino for n in names}) == 1
    except FileNotFoundError:
        return False


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path, Journal]]:
    root, mirror = tmp_path / "root", tmp_path / "mirror"
    root.mkdir()
    mirror.mkdir()
    with Journal.open(tmp_path / "journal", root=str(root), tracks=[TRACK]) as journal:
        yield root, mirror, journal


@pytest.mark.parametrize("kind", ["local", "rsync"])
def test_write_through_another_name_reaches_every_name(tree, kind: str) -> None:
    """``ln a d/b; echo more >> d/b`` while the agent runs: the mirror's ``a``
    gets the new content too, and nothing stays pending."""
    root, mirror, journal = tree
    shipper = make_shipper(kind, mirror, root)
    watcher = Watcher(root, journal, Excludes([]))
    replayer = Replayer(journal, shipper, root, settle_s=0.05, rng=random.Random(1))
    watcher.start()
    stop = threading.Event()
    threads = [threading.Thread(target=f, args=(stop,), daemon=True) for f in (watcher.run, replayer.run)]
    for t in threads:
        t.start()
    try:
        write(root / "a", b"first\n")
        (root / "d").mkdir()
        wait_until(names_current(root, mirror, ["a"], journal), timeout=20, message="a not shipped")
        os.link(root / "a", root / "d" / "b")
        wait_until(names_current(root, mirror, ["a", "d/b"], journal), timeout=20, message="b not shipped")
        write(root / "d" / "b", b"more\n", append=True)
        wait_until(
            names_current(root, mirror, ["a", "d/b"], journal), timeout=20, message="a on the mirror is stale"
        )
        assert read(mirror / "a") == b"first\nmore\n"
        os.link(root / "a", root / "third")
        write(root / "a", b"rewritten through a\n")
        names = ["a", "d/b", "third"]
        wait_until(
            names_current(root, mirror, names, journal),
            timeout=20,
            message="a name of a three-link file is stale",
        )
        wait_until(
            lambda: linked_on(mirror, names), timeout=20, message="the names are not one file on the mirror"
        )
    finally:
        stop.set()
        journal.wake()
        for t in threads:
            t.join(timeout=15)
        watcher.close()
        shipper.close()
    assert not any(t.is_alive() for t in threads)
    assert journal.dead_letters() == []


def drain(replayer: Replayer) -> None:
    for _ in range(100):
        if replayer.step().idle:
            return
    raise AssertionError("replayer did not settle")


@pytest.mark.parametrize("kind", ["local", "rsync"])
def test_write_while_stopped_is_found_by_the_startup_scan(tree, kind: str) -> None:
    """Both names shipped, agent stopped, a write through the second name:
    the startup scan (from the checkpoint) and the replayer bring every name
    on the mirror up to date."""
    root, mirror, journal = tree
    shipper = make_shipper(kind, mirror, root)
    try:
        write(root / "a", b"first\n")
        (root / "d").mkdir()
        os.link(root / "a", root / "d" / "b")
        journal.append([Entry(Op.CHANGE, p) for p in (b"a", b"d", b"d/b")])
        drain(Replayer(journal, shipper, root, settle_s=0.0))
        assert read(mirror / "a") == read(mirror / "d" / "b") == b"first\n"
        checkpoint = journal.set_checkpoint(time.time_ns())
        write(root / "d" / "b", b"while stopped\n", append=True)
        Scanner(root, journal, Excludes([])).scan(since_ns=checkpoint.time_ns)
        drain(Replayer(journal, shipper, root, settle_s=0.0))
    finally:
        shipper.close()
    assert read(mirror / "a") == read(mirror / "d" / "b") == b"first\nwhile stopped\n"
    assert journal.pending(TRACK) == []
    assert linked_on(mirror, ["a", "d/b"])


@pytest.mark.parametrize("kind", ["local", "rsync"])
def test_a_write_through_a_name_removed_before_it_shipped_reaches_the_other_names(tree, kind: str) -> None:
    """``echo more >> d/b; rm d/b`` before the replayer comes to ``d/b``:
    inotify named only ``d/b``, which is gone when shipped, so nothing
    captured shows the write; ``a`` changed all the same and must be sent."""
    root, mirror, journal = tree
    shipper = make_shipper(kind, mirror, root)
    replayer = Replayer(journal, shipper, root, settle_s=0.0, rng=random.Random(1))
    try:
        write(root / "a", b"first\n")
        (root / "d").mkdir()
        os.link(root / "a", root / "d" / "b")
        now = time.time_ns()
        journal.append([Entry(Op.CHANGE, p, time_ns=now) for p in (b"a", b"d", b"d/b")])
        drain(replayer)
        assert read(mirror / "a") == b"first\n"
        write(root / "d" / "b", b"more\n", append=True)
        os.unlink(root / "d" / "b")
        now = time.time_ns()
        journal.append([Entry(Op.CHANGE, b"d/b", time_ns=now), Entry(Op.DELETE, b"d/b", time_ns=now)])
        drain(replayer)
        assert read(mirror / "d" / "b") is None
        assert read(mirror / "a") == b"first\nmore\n", "the write through the removed name is lost"
    finally:
        shipper.close()
