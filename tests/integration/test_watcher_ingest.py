"""Ingest at the kernel's pace: the inotify fd is emptied by a loop that does
nothing else, so a journal that is slow for a while (a busy disk) never
makes the kernel queue overflow. On a tmpfs, where writers are fastest."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.tree.excludes import Excludes
from agent.watch.watcher import Watcher
from journal import Journal, Op
from tests.helpers.wait import wait_until

SHM = Path("/dev/shm")


def _tmpfs(path: Path) -> bool:
    try:
        with open("/proc/self/mounts") as fh:
            return any(line.split()[1] == str(path) and line.split()[2] == "tmpfs" for line in fh)
    except OSError:
        return False


@pytest.fixture
def shm_root() -> Iterator[Path]:
    if not _tmpfs(SHM) or not os.access(SHM, os.W_OK):
        pytest.skip("needs a writable tmpfs at /dev/shm")
    top = Path(tempfile.mkdtemp(prefix="msync-agent-ingest-", dir=SHM))
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


class GatedJournal:
    """A journal whose appends block while the gate is closed, like a disk
    that stalls; everything else is the real journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.open = threading.Event()
        self.open.set()
        self.blocked = threading.Event()

    def append(self, entries: Any, **kwargs: Any) -> Any:
        if not self.open.is_set():
            self.blocked.set()
            self.open.wait(120)
        return self.journal.append(entries, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)


def _queue_limit() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def test_a_stalled_journal_does_not_overflow_the_kernel_queue(tmp_path: Path, shm_root: Path) -> None:
    """While one append is stalled, files whose events are three times what
    the kernel queue holds are created; once the journal moves again every
    file is journaled, and nothing overflowed (no RESCAN)."""
    files = _queue_limit()  # create + modify + close_write: three events each
    root = shm_root / "root"
    root.mkdir()
    (root / "d").mkdir()
    journal = Journal.open(tmp_path / "journal", root=str(root))
    gated = GatedJournal(journal)
    watcher = Watcher(root, gated, Excludes([]))  # type: ignore[arg-type]
    stop = threading.Event()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            watcher.run(stop)
        except BaseException as exc:
            errors.append(exc)

    watcher.start()
    thread = threading.Thread(target=body, name="watcher-under-test", daemon=True)
    thread.start()
    try:
        gated.open.clear()
        (root / "first").write_bytes(b"x")
        wait_until(gated.blocked.is_set, 30, message="the watcher never appended")
        base = os.fsencode(root / "d")
        for i in range(files):
            fd = os.open(base + b"/f%06d" % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"x")
            os.close(fd)
        (root / "last").write_bytes(b"x")
        gated.open.set()

        def settled() -> bool:
            return bool(errors) or any(
                r.entry.path == b"last" or r.entry.op == Op.RESCAN for r in journal.since(seq=0)
            )

        wait_until(settled, 120, message="the burst was never journaled")
        records = list(journal.since(seq=0))
        assert not errors, errors
        assert [r for r in records if r.entry.op == Op.RESCAN] == [] and watcher.overflows == 0
        paths = {r.entry.path for r in records}
        assert all(b"d/f%06d" % i in paths for i in range(files))
    finally:
        gated.open.set()
        stop.set()
        thread.join(30)
        journal.close()
    assert not thread.is_alive()
