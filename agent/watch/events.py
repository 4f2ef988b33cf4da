"""Pure translation of raw inotify events into journal entries (docs/design.md §4).

No I/O here: the watcher reads the fd and performs the requested side effects
(add watches, scan new directories, remove watches). Everything that decides
*what an event means* lives here so it can be tested with synthetic streams.

Ordering is the contract: entries leave :class:`Translator` in the order the
kernel reported the events. A ``MOVED_FROM`` waits (at most ``move_wait_ns``)
for its ``MOVED_TO``; while it waits, everything read after it waits too, so
"moved out, then a new file with the old name" can never be replayed as
"created, then deleted".
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.tree.excludes import Excludes
from agent.watch.table import WatchTable, reroot
from journal import IS_DIR, Entry, Op

__all__ = [
    "IN_MODIFY",
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_MOVE_SELF",
    "IN_UNMOUNT",
    "IN_Q_OVERFLOW",
    "IN_IGNORED",
    "IN_ONLYDIR",
    "IN_DONT_FOLLOW",
    "IN_EXCL_UNLINK",
    "IN_ISDIR",
    "WATCH_MASK",
    "RawEvent",
    "WatchTable",
    "Item",
    "Output",
    "Translator",
    "join",
    "parse_events",
    "decode_events",
]

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

WATCH_MASK = (
    IN_CREATE
    | IN_CLOSE_WRITE
    | IN_MODIFY
    | IN_ATTRIB
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
    | IN_ONLYDIR
)

_ROOT_GONE = ((IN_DELETE_SELF, "deleted"), (IN_MOVE_SELF, "moved"), (IN_UNMOUNT, "unmounted"))
_CHANGE_BITS = IN_CREATE | IN_CLOSE_WRITE | IN_MODIFY
_NOT_PLAIN = IN_ISDIR | IN_Q_OVERFLOW | IN_IGNORED | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE


_HEADER = struct.Struct("iIII")


class RawEvent(NamedTuple):
    """One kernel event; ``name`` is raw bytes, never decoded."""

    wd: int
    mask: int
    cookie: int
    name: bytes


def parse_events(data: bytes) -> list[RawEvent]:
    """Split read() buffers into events; names keep their raw bytes. Hot:
    every event of a burst passes here, hence the local names."""
    events: list[RawEvent] = []
    append, unpack, make = events.append, _HEADER.unpack_from, tuple.__new__
    pos, end, head = 0, len(data), _HEADER.size
    while pos < end:
        wd, mask, cookie, size = unpack(data, pos)
        pos += head
        append(make(RawEvent, (wd, mask, cookie, data[pos : pos + size].rstrip(b"\0"))))
        pos += size
    return events


def decode_events(data: bytes) -> tuple[list[RawEvent], int]:
    """:func:`parse_events` without the events that would translate to a
    repeat: a plain change (create, modify, close_write of a file) of the file
    the previous event changed plainly. A written file's three events become
    one; the translator would have dropped the other two (lossless in-batch
    de-duplication, docs/design.md §3), after paying for them. A dropped
    MODIFY bit is kept on the event that stays: a write is what marks an item
    ``written``. Also returns how many events ``data`` held."""
    events: list[RawEvent] = []
    append, unpack, make = events.append, _HEADER.unpack_from, tuple.__new__
    pos, end, head = 0, len(data), _HEADER.size
    last_wd, last_name, last_mask = -1, b"", 0
    count = 0
    while pos < end:
        count += 1
        wd, mask, cookie, size = unpack(data, pos)
        pos += head
        name = data[pos : pos + size].rstrip(b"\0")
        pos += size
        if mask & _CHANGE_BITS and not mask & _NOT_PLAIN and name:
            if wd == last_wd and name == last_name:
                if mask & IN_MODIFY and not last_mask & IN_MODIFY:
                    last_mask |= IN_MODIFY
                    events[-1] = make(RawEvent, (wd, last_mask, events[-1].cookie, name))
                continue
            last_wd, last_name, last_mask = wd, name, mask
        else:
            last_wd = -1
        append(make(RawEvent, (wd, mask, cookie, name)))
    return events, count


def join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


@dataclass(frozen=True, slots=True)
class Item:
    """One released decision: journal ``entry``; when ``scan`` is set, watch
    and scan ``entry.dest or entry.path`` first-hand (a directory the watches do
    not cover yet); remove ``unwatch`` from the kernel (left the tree)."""

    entry: Entry
    scan: bool = False
    unwatch: tuple[int, ...] = ()
    written: bool = False  # a write (IN_MODIFY) to the path was read: see docs/design.md §4


@dataclass(slots=True)
class _Held:
    """An entry waiting in order; a pending move while ``cookie`` is set."""

    entry: Entry
    src_wd: int
    t0: int
    scan: bool = False
    cookie: int = 0
    deadline: int = 0
    moved_wds: frozenset[int] = frozenset()
    unwatch: tuple[int, ...] = ()
    dead: bool = False  # happened outside the tree (below a directory moved out)
    written: bool = False


@dataclass(slots=True)
class Output:
    items: list[Item] = field(default_factory=list)
    root_gone: str = ""  # "deleted" / "moved" / "unmounted" / "unwatched": the root went away
    stale: int = 0  # events for watches that no longer belong to the tree

    @property
    def entries(self) -> list[Entry]:
        return [i.entry for i in self.items]


class Translator:
    """Stateful, pure event translator (one per watcher, not thread-safe).

    Feed every drain (even an empty one) with :meth:`feed`; it returns the
    entries that may be journaled now. :attr:`safe_checkpoint_ns` is the newest
    drain start time whose events have all been released.
    """

    def __init__(self, table: WatchTable, excludes: Excludes, move_wait_ns: int) -> None:
        self.table = table
        self._excludes = excludes
        self.move_wait_ns = move_wait_ns
        self._queue: collections.deque[_Held] = collections.deque()
        self._moves: dict[int, _Held] = {}
        self._last_t0: int | None = None
        self.safe_checkpoint_ns: int | None = None
        self._excluded_dirs: dict[bytes, bool] = {}  # parent path -> excluded, with its ancestors

    @property
    def excludes(self) -> Excludes:
        """Fixed for the translator's life: answers are cached per directory."""
        return self._excludes

    @property
    def held(self) -> int:
        return len(self._queue)

    @property
    def next_deadline_ns(self) -> int | None:
        return min((h.deadline for h in self._moves.values()), default=None)

    def feed(self, events: Iterable[RawEvent], now_ns: int, t0_ns: int, *, complete: bool = True) -> Output:
        """Translate one drain read at ``now_ns``; the drain started at ``t0_ns``
        (repeat the same ``t0_ns`` while a drain is cut short: ``complete`` False)."""
        out = Output()
        self._expire(now_ns)
        for ev in events:
            self._one(ev, now_ns, t0_ns, out)
            if out.root_gone:
                self._expire(None)
                break
        self._release(out)
        if complete:
            self._advance_checkpoint(t0_ns)
        return out

    def _advance_checkpoint(self, t0: int) -> None:
        """Every change before ``t0`` was read by drains up to this one; it is
        safe only once none of their entries is still held (docs/design.md §5)."""
        oldest = self._queue[0].t0 if self._queue else None
        if oldest is None:
            self.safe_checkpoint_ns = t0
        elif oldest == t0 and self._last_t0 is not None:
            self.safe_checkpoint_ns = self._last_t0
        self._last_t0 = t0

    # ------------------------------------------------------------- one event
    def _one(self, ev: RawEvent, now: int, t0: int, out: Output) -> None:
        if ev.mask & IN_Q_OVERFLOW:
            self._push(Entry(Op.RESCAN, b"", time_ns=now), ev.wd, t0)
            return
        parent = self.table.path(ev.wd)
        if parent is None:
            out.stale += 1  # watch already dropped (moved out or removed)
            return
        if ev.mask & IN_IGNORED:
            if ev.wd == self.table.root_wd:
                out.root_gone = out.root_gone or "unwatched"  # e.g. its DELETE_SELF was lost
            self.table.discard(ev.wd)
            return
        if not ev.name:
            self._self_event(ev, parent, out)
            return
        path = join(parent, ev.name)
        flags = IS_DIR if ev.mask & IN_ISDIR else 0
        excluded = self._excluded(parent, path, bool(flags))
        if ev.mask & IN_MOVED_FROM:
            self._moved_from(ev, path, flags, now, t0, excluded)
        elif ev.mask & IN_MOVED_TO:
            self._moved_to(ev, path, flags, now, t0, excluded)
        elif not excluded:
            self._simple(ev, path, flags, now, t0)

    def _excluded(self, parent: bytes, path: bytes, is_dir: bool) -> bool:
        """``excludes.match(path, is_dir)``, asking about each parent
        directory once: a burst has many names per directory."""
        if not self.excludes:
            return False
        hit = self._excluded_dirs.get(parent)
        if hit is None:
            hit = bool(parent) and self.excludes.match(parent, True)
            if len(self._excluded_dirs) >= 4096:
                self._excluded_dirs.clear()  # bounded; a pure function of the path
            self._excluded_dirs[parent] = hit
        return hit or self.excludes.match_self(path, is_dir)

    def _self_event(self, ev: RawEvent, parent: bytes, out: Output) -> None:
        """Events about a watched directory itself. The parent's watch reports
        the same change by name, so only the root's own events matter."""
        if parent != b"" or ev.wd != self.table.root_wd:
            return
        for bit, reason in _ROOT_GONE:
            if ev.mask & bit:
                out.root_gone = reason
                return

    def _simple(self, ev: RawEvent, path: bytes, flags: int, now: int, t0: int) -> None:
        mask = ev.mask
        if mask & _CHANGE_BITS:  # create, close_write, modify; a created directory is scanned
            op, scan = Op.CHANGE, bool(flags and mask & IN_CREATE)
        elif mask & IN_ATTRIB:
            op, scan = Op.ATTR, False
        elif mask & IN_DELETE:
            op, scan = Op.DELETE, False
        else:
            return
        written = bool(mask & IN_MODIFY)
        if not scan and self._repeats(op, path, flags, ev.wd):
            self._queue[-1].written |= written
            return  # lossless: identical op on identical path, nothing between
        self._queue.append(_Held(Entry(op, path, time_ns=now, flags=flags), ev.wd, t0, scan, written=written))

    def _repeats(self, op: Op, path: bytes, flags: int, wd: int) -> bool:
        if not self._queue:
            return False
        last = self._queue[-1]
        e = last.entry
        plain = not (last.cookie or last.scan or last.unwatch or last.dead)
        return plain and last.src_wd == wd and e.op == op and e.path == path and e.flags == flags

    def _moved_from(self, ev: RawEvent, path: bytes, flags: int, now: int, t0: int, excluded: bool) -> None:
        if excluded:
            return  # an unpaired MOVED_TO of the destination does the right thing
        held = _Held(Entry(Op.DELETE, path, time_ns=now, flags=flags), ev.wd, t0)
        held.cookie, held.deadline = ev.cookie, now + self.move_wait_ns
        held.moved_wds = self.table.wds_under(path) if flags else frozenset()
        self._queue.append(held)
        self._moves[ev.cookie] = held

    def _moved_to(self, ev: RawEvent, path: bytes, flags: int, now: int, t0: int, excluded: bool) -> None:
        src = self._moves.pop(ev.cookie, None)
        if src is None:
            if not excluded:
                self._push(Entry(Op.CHANGE, path, time_ns=now, flags=flags), ev.wd, t0, scan=bool(flags))
            return
        src.cookie = 0
        old = src.entry.path
        if excluded:
            src.unwatch = self.table.drop_under(old) if flags else ()
            return  # stays DELETE(old): moved to a place we do not mirror
        watched = self.table.wd(old) is not None
        if flags:
            self.table.rename(old, path)
            self._reroot_held_after(src, old, path)
        src.entry = Entry(Op.MOVE, old, path, time_ns=src.entry.time_ns, flags=flags)
        src.scan = bool(flags) and not watched

    def _push(self, entry: Entry, wd: int, t0: int, *, scan: bool = False) -> None:
        self._queue.append(_Held(entry, wd, t0, scan=scan))

    # --------------------------------------------------------------- moves
    def _held_after(self, marker: _Held) -> Iterator[_Held]:
        seen = False
        for h in self._queue:
            if seen:
                yield h
            seen = seen or h is marker

    def _reroot_held_after(self, marker: _Held, old: bytes, new: bytes) -> None:
        """Events read between a directory's MOVED_FROM and MOVED_TO that came
        from inside it already carry the new location."""
        for h in self._held_after(marker):
            if h.src_wd in marker.moved_wds:
                e = h.entry
                h.entry = Entry(e.op, reroot(e.path, old, new), e.dest, e.time_ns, e.flags)

    def _expire(self, now: int | None) -> None:
        """MOVED_FROM without a pair in time: moved out of the tree."""
        for cookie, held in list(self._moves.items()):
            if now is not None and held.deadline > now:
                continue
            del self._moves[cookie]
            held.cookie = 0
            if held.entry.flags & IS_DIR:
                held.unwatch = self.table.drop_under(held.entry.path)
                for h in self._held_after(held):
                    h.dead = h.dead or h.src_wd in held.moved_wds

    def _release(self, out: Output) -> None:
        last: tuple[Op, bytes, bytes, int] | None = None
        while self._queue and not self._queue[0].cookie:
            h = self._queue.popleft()
            if h.dead:
                out.stale += 1
                continue
            key = (h.entry.op, h.entry.path, h.entry.dest, h.entry.flags)
            if key == last and not h.scan and not h.unwatch:
                if h.written and not out.items[-1].written:
                    kept = out.items[-1]
                    out.items[-1] = Item(kept.entry, kept.scan, kept.unwatch, written=True)
                continue  # lossless: identical op on identical path, nothing between
            out.items.append(Item(h.entry, h.scan, h.unwatch, h.written))
            last = key
