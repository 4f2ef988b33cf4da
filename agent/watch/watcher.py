"""The watcher: inotify fd -> :mod:`agent.watch.events` -> ``Journal.append`` (docs/design.md §2, §4, §5).

One thread owns the fd, the watch table and the translator. A drain is only
"received" once ``Journal.append`` has returned; counters move after that.
The watcher never ships and never waits for a target.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from agent.tree.excludes import Excludes
from agent.watch.errors import RootError, WatchLimitError, read_int, read_limit
from agent.watch.events import Item, Translator, WatchTable, decode_events
from agent.watch.reader import Reader, Taken
from agent.watch.specials import Specials
from agent.watch.vanished import VanishedDirs
from agent.watch.watchset import WatchSet, check_root
from journal import IS_DIR, Entry, Journal, JournalFull, Op

__all__ = ["Watcher", "RootError", "WatchLimitError", "read_limit"]

log = structlog.get_logger()

_TAKE_BYTES = 4 << 20  # raw event bytes per journal transaction (about 100,000 events)
_POLL_MS = 100
_VANISHED_MAX = 10_000  # new directories gone before their watch, awaiting the move that explains them
_IDLE_CHECKPOINT_NS = 1_000_000_000  # empty drains move the checkpoint at most once a second


class Watcher:
    """Recursive inotify watcher for one root, journaling into ``journal``.

    Checkpoint holds: :meth:`hold_checkpoint` / :meth:`release_checkpoint`
    form a counter; while it is above zero every append passes
    ``checkpoint_ns=None``. An overflow takes one hold itself, after the
    RESCAN entry is durable and before ``on_rescan`` is called. The scanner
    claims those holds with :meth:`pending_overflow_holds` before it starts a
    full scan and calls :meth:`release_checkpoint` once per claimed hold when
    the scan has completed: a checkpoint never covers a lost event.

    Threading: :meth:`start` and :meth:`run` belong to one thread; holds and
    counters may be used from any thread.
    """

    def __init__(
        self,
        root: Path,
        journal: Journal,
        excludes: Excludes,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        move_wait_s: float = 0.05,
        commit_interval_s: float = 0.01,
        on_rescan: Callable[[], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self._root = os.fsencode(self.root)
        self.journal = journal
        self.excludes = excludes
        self.clock_ns = clock_ns
        self.on_rescan = on_rescan
        self.commit_interval_ns = int(commit_interval_s * 1e9)
        self._last_commit = 0  # monotonic ns of the last append
        self._specials = Specials(self._root)
        self._vanished = VanishedDirs(_VANISHED_MAX)
        self.translator = Translator(WatchTable(), excludes, int(move_wait_s * 1e9))
        self.watchset: WatchSet | None = None  # made by start()
        self._stop: threading.Event | None = None
        self._reader: Reader | None = None
        self._lock = threading.Lock()
        self._holds = 0
        self._overflow_holds = 0
        self._committed_checkpoint: int | None = None
        self._last_checkpoint_write = 0
        self.events_read = 0
        self.entries_journaled = 0
        self.batches = 0
        self.overflows = 0
        self.stale_events = 0

    # ------------------------------------------------------------ checkpoint holds
    def hold_checkpoint(self) -> None:
        with self._lock:
            self._holds += 1

    def release_checkpoint(self) -> None:
        with self._lock:
            if self._holds <= 0:
                raise RuntimeError("release_checkpoint without a matching hold")
            self._holds -= 1

    def pending_overflow_holds(self) -> int:
        """Claim the holds taken by overflows so far; the caller releases each
        after its full scan has completed."""
        with self._lock:
            count, self._overflow_holds = self._overflow_holds, 0
            return count

    @property
    def watches(self) -> int:
        return len(self.translator.table)

    @property
    def table(self) -> WatchTable:
        return self.translator.table

    # ------------------------------------------------------------ start
    def start(self) -> None:
        """Watch every directory under the root; raise instead of watching part of it."""
        st = check_root(self.root)
        self.watchset = WatchSet(self.root, self.excludes, st.st_dev, self.clock_ns)
        self.translator.table = self.watchset.table
        try:
            self.watchset.watch_tree(b"", None)
        except BaseException:
            self.close()
            raise
        log.info("watch.started", root=str(self.root), watches=len(self.table))

    def close(self) -> None:
        if self.watchset is not None:
            self.watchset.close()
            self.watchset = None

    # ------------------------------------------------------------ run
    def run(self, stop: threading.Event) -> None:
        """Read, translate and journal until ``stop`` is set. Raises RootError
        when the root goes away and WatchLimitError when a new directory cannot
        be watched; whatever was read before is journaled first."""
        if self.watchset is None:
            raise RuntimeError("Watcher.start() must succeed before run()")
        t0 = self.clock_ns()
        self._stop = stop
        reader = self._reader = Reader(self.watchset.fileno(), clock_ns=self.clock_ns)
        thread = threading.Thread(target=reader.run, name="inotify-reader", daemon=True)
        thread.start()
        try:
            while not stop.is_set():
                taken = self._take(reader, self._timeout_ms())
                events, read = decode_events(taken.data)
                if taken.t0_ns is not None:  # a drain that emptied the fd was taken (docs/design.md §5)
                    t0 = taken.t0_ns
                out = self.translator.feed(events, self.clock_ns(), t0, complete=taken.t0_ns is not None)
                self.stale_events += out.stale
                self._commit(out.items, read)
                if out.root_gone:
                    log.error("watch.root_gone", root=str(self.root), how=out.root_gone)
                    raise RootError(f"root {self.root} was {out.root_gone} while being watched")
                if reader.error is not None and not reader.pending_bytes():
                    raise reader.error
        finally:
            reader.stop()
            thread.join()
            self.close()

    def _timeout_ms(self) -> int:
        deadline = self.translator.next_deadline_ns
        if deadline is None:
            return _POLL_MS
        return max(0, min(_POLL_MS, (deadline - self.clock_ns()) // 1_000_000 + 1))

    def _take(self, reader: Reader, timeout_ms: int) -> Taken:
        """What the reader read; when it is a trickle, let it accumulate so one
        fsync covers many events (group commit: the reader keeps reading)."""
        if not reader.wait(timeout_ms / 1000):
            return Taken()
        linger = self._last_commit + self.commit_interval_ns - time.monotonic_ns()
        if linger > 0 and reader.pending_bytes():
            time.sleep(linger / 1e9)
        return reader.take(_TAKE_BYTES)

    def _commit(self, items: list[Item], read: int) -> None:
        with self._specials.batch():  # one root fd for the lookups of this batch
            entries, scans_failed = self._apply(items)
        checkpoint = self._checkpoint_to_write(bool(entries))
        if entries or checkpoint is not None:
            self._append_until_room(entries, checkpoint)
            self._last_commit = time.monotonic_ns()
            if checkpoint is not None:
                self._committed_checkpoint = checkpoint
                self._last_checkpoint_write = time.monotonic_ns()
            log.debug("watch.batch", entries=len(entries), events=read)
        self.events_read += read
        self.entries_journaled += len(entries)
        self.batches += 1 if entries else 0
        rescans = sum(1 for e in entries if e.op == Op.RESCAN)
        if rescans:
            self._overflowed(rescans)
        if scans_failed is not None:
            raise scans_failed

    def _append_until_room(self, entries: list[Entry], checkpoint: int | None) -> None:
        """Append, waiting out a full journal disk: nothing is acknowledged
        meanwhile (the kernel queues events, or overflows into a RESCAN), and
        the batch is journaled as soon as space returns. A stop request while
        waiting re-raises: the checkpoint did not move, so the next start's
        scan covers what was read but not journaled. The append that
        succeeds after a refusal logs ``journal.resumed``."""
        delay = 1.0
        refused_at: float | None = None
        while True:
            try:
                self.journal.append(entries, checkpoint_ns=checkpoint)
            except JournalFull as exc:
                refused_at = time.monotonic() if refused_at is None else refused_at
                log.error("journal.full", error=str(exc), entries=len(entries), retry_in_s=delay)
                if self._stop is not None and self._stop.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)
                continue
            if refused_at is not None:
                log.info(
                    "journal.resumed", entries=len(entries), waited_s=round(time.monotonic() - refused_at, 1)
                )
            return

    def _checkpoint_to_write(self, have_entries: bool) -> int | None:
        with self._lock:
            held = self._holds > 0
        safe = self.translator.safe_checkpoint_ns
        if held or safe is None or safe == self._committed_checkpoint:
            return None
        idle = time.monotonic_ns() - self._last_checkpoint_write < _IDLE_CHECKPOINT_NS
        return None if not have_entries and idle else safe

    def _apply(self, items: list[Item]) -> tuple[list[Entry], WatchLimitError | None]:
        """Side effects of released items, in order; a scan's entries follow
        the entry that asked for it."""
        entries: list[Entry] = []
        special: dict[bytes, bool] = {}
        for item in items:
            e = item.entry
            for wd in item.unwatch:
                self._watchset().remove(wd)
            if (
                e.op in (Op.CHANGE, Op.ATTR)
                and not e.flags & IS_DIR
                and not item.written  # a write was read: journaled without looking (docs/design.md §4)
                and self._specials.is_special(e.path, special)
            ):
                entries.extend(self._specials.parent_entry(e))
                continue
            entries.append(e)
            if e.op == Op.DELETE:
                self._vanished.forget(e.path)
            if e.op == Op.MOVE and e.flags & IS_DIR:
                self._watch_vanished(e.path, e.dest, entries)
            if e.op == Op.RESCAN:
                with self._lock:  # before the append: no checkpoint may pass the loss
                    self._holds += 1
                    self._overflow_holds += 1
            if item.scan:
                try:
                    if not self._watchset().watch_tree(e.dest or e.path, entries):
                        self._vanish(e.dest or e.path)
                except WatchLimitError as exc:
                    log.error("watch.limit", error=str(exc))
                    return entries, exc
        return entries, None

    def _vanish(self, rel: bytes) -> None:
        """A new directory was gone before it could be watched: removed (its
        DELETE follows) or moved with a watched parent (that MOVE follows,
        see :meth:`_watch_vanished`)."""
        if not self._vanished.add(rel):
            log.warning(
                "watch.vanished_overflow", hint="too many unwatched new directories: a full rescan follows"
            )
            self._overflowed(0)

    def _watch_vanished(self, old: bytes, new: bytes, entries: list[Entry]) -> None:
        """A directory moved: new directories below it that vanished before
        they were watched are there now. Watch them and journal what they
        hold, as for any new directory; one that vanished again waits for the
        next move."""
        for rel in self._vanished.take_under(old):
            if rel == old:
                continue  # the moved directory itself: its unwatched MOVE scans it
            moved = new + rel[len(old) :]
            if not self._watchset().watch_tree(moved, entries):
                self._vanish(moved)

    def _overflowed(self, count: int) -> None:
        self.overflows += count
        queued = read_int("/proc/sys/fs/inotify/max_queued_events")
        log.error(
            "overflow",
            root=str(self.root),
            overflows=self.overflows,
            watches=len(self.table),
            hint=f"events were lost and a full rescan follows; if this repeats, raise"
            f" fs.inotify.max_queued_events (now {queued})",
        )
        self._rewatch()
        if self.on_rescan is not None:
            self.on_rescan()

    def _rewatch(self) -> None:
        """After lost events the watch table may miss new directories or
        still hold removed ones: walk the tree again (:meth:`WatchSet.rewatch`)."""
        self._vanished.clear()  # the walk finds every directory where it is now
        self.translator.table = self._watchset().rewatch()

    def _watchset(self) -> WatchSet:
        assert self.watchset is not None
        return self.watchset
