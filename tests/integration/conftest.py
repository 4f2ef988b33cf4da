"""Fixtures for integration tests (watcher fixtures carry a ``watcher_`` prefix)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.tree.excludes import Excludes
from agent.watch.watcher import Watcher
from journal import Entry, Journal, Op
from tests.helpers.wait import wait_until

Key = tuple[Op, bytes, bytes]


@dataclass
class WatcherRig:
    root: Path
    outside: Path
    journal: Journal
    watcher: Watcher
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: list[BaseException] = field(default_factory=list)
    _markers: int = 0

    def run(self) -> None:
        def body() -> None:
            try:
                self.watcher.run(self.stop)
            except BaseException as exc:
                self.error.append(exc)

        self.thread = threading.Thread(target=body, name="watcher-under-test", daemon=True)
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
            assert not self.thread.is_alive(), "watcher thread did not stop"

    def entries(self) -> list[Entry]:
        return [r.entry for r in self.journal.since(seq=0)]

    def seen(self) -> list[Key]:
        return [(e.op, e.path, e.dest) for e in self.entries()]

    def abs(self, rel: str | bytes) -> bytes:
        return os.fsencode(self.root) + b"/" + os.fsencode(rel)

    def wait_for(self, expected: Iterable[Key], timeout: float = 15.0) -> list[Key]:
        """Wait until every expected (op, path, dest) is journaled, in this order."""
        want = list(expected)

        def ok() -> bool:
            return _is_subsequence(want, self.seen())

        wait_until(ok, timeout, message=f"journal lacks {want} (has {self.seen()[-20:]})")
        return self.seen()

    def barrier(self) -> list[Key]:
        """Create a marker and wait for it: every earlier event has been journaled."""
        self._markers += 1
        name = f".barrier{self._markers}".encode()
        with open(self.abs(name), "wb"):
            pass
        return self.wait_for([(Op.CHANGE, name, b"")])


def _is_subsequence(want: list[Key], have: list[Key]) -> bool:
    it = iter(have)
    return all(any(k == h for h in it) for k in want)


def make_rig(
    tmp_path: Path,
    *,
    excludes: Iterable[str] = (),
    prepare: Callable[[Path], None] | None = None,
    move_wait_s: float = 0.05,
    on_rescan: Callable[[], None] | None = None,
) -> WatcherRig:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    if prepare is not None:
        prepare(root)
    journal = Journal.open(tmp_path / "journal", root=str(root))
    watcher = Watcher(root, journal, Excludes(list(excludes)), move_wait_s=move_wait_s, on_rescan=on_rescan)
    return WatcherRig(root, outside, journal, watcher)


@pytest.fixture
def watcher_factory(tmp_path: Path) -> Iterator[Callable[..., WatcherRig]]:
    """Build, start and run a Watcher; always stopped and closed afterwards."""
    rigs: list[WatcherRig] = []

    def build(*, start: bool = True, **kwargs: Any) -> WatcherRig:
        rig = make_rig(tmp_path, **kwargs)
        rigs.append(rig)
        if start:
            rig.watcher.start()
            rig.run()
        return rig

    try:
        yield build
    finally:
        for rig in rigs:
            try:
                rig.halt()
            finally:
                rig.watcher.close()
                rig.journal.close()


@pytest.fixture
def watcher_rig(watcher_factory: Callable[..., WatcherRig]) -> WatcherRig:
    """A running watcher on an empty root."""
    return watcher_factory()
