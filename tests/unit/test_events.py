"""Pure event translation: raw inotify events -> journal entries, move pairing."""

from __future__ import annotations

import itertools
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.tree.excludes import Excludes
from agent.watch.events import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    RawEvent,
    Translator,
    WatchTable,
    decode_events,
    parse_events,
)
from journal import IS_DIR, Entry, Op

WAIT = 50_000_000  # 50 ms
ROOT, SUB = 1, 2


def make(excludes: tuple[str, ...] = ()) -> Translator:
    table = WatchTable()
    table.add(ROOT, b"")
    table.add(SUB, b"d")
    return Translator(table, Excludes(excludes), WAIT)


def ev(mask: int, name: bytes, wd: int = ROOT, cookie: int = 0) -> RawEvent:
    return RawEvent(wd, mask, cookie, name)


def key(e: Entry) -> tuple[Op, bytes, bytes, int]:
    return (e.op, e.path, e.dest, e.flags)


def dedupe(keys: list[tuple[Op, bytes, bytes, int]]) -> list[tuple[Op, bytes, bytes, int]]:
    out: list[tuple[Op, bytes, bytes, int]] = []
    for k in keys:
        if not out or out[-1] != k:
            out.append(k)
    return out


# ---------------------------------------------------------------- table rows
def test_simple_rows() -> None:
    """Each kernel event maps to the entry docs/design.md §4 gives it."""
    t = make()
    out = t.feed(
        [
            ev(IN_CREATE, b"f"),
            ev(IN_CLOSE_WRITE, b"f"),
            ev(IN_ATTRIB, b"g", wd=SUB),
            ev(IN_DELETE, b"h"),
            ev(IN_DELETE | IN_ISDIR, b"e", wd=SUB),
            ev(IN_MODIFY, b"\xff\n-x"),
        ],
        10,
        5,
    )
    assert [key(e) for e in out.entries] == [
        (Op.CHANGE, b"f", b"", 0),
        (Op.ATTR, b"d/g", b"", 0),
        (Op.DELETE, b"h", b"", 0),
        (Op.DELETE, b"d/e", b"", IS_DIR),
        (Op.CHANGE, b"\xff\n-x", b"", 0),
    ]
    assert all(e.time_ns == 10 for e in out.entries)


def test_new_directory_asks_for_scan() -> None:
    """A created directory is journaled and must be watched and scanned."""
    out = make().feed([ev(IN_CREATE | IN_ISDIR, b"new")], 1, 0)
    assert [(key(i.entry), i.scan) for i in out.items] == [((Op.CHANGE, b"new", b"", IS_DIR), True)]


def test_overflow_becomes_rescan() -> None:
    """IN_Q_OVERFLOW (wd -1) is never dropped: it becomes RESCAN of the root."""
    out = make().feed([ev(IN_CREATE, b"a"), RawEvent(-1, IN_Q_OVERFLOW, 0, b"")], 1, 0)
    assert [key(e) for e in out.entries] == [(Op.CHANGE, b"a", b"", 0), (Op.RESCAN, b"", b"", 0)]


def test_paired_move_across_batches() -> None:
    """MOVED_FROM at the end of one read pairs with MOVED_TO at the start of the next."""
    t = make()
    first = t.feed([ev(IN_CREATE, b"x"), ev(IN_MOVED_FROM, b"a", cookie=7)], 100, 90)
    assert [key(e) for e in first.entries] == [(Op.CHANGE, b"x", b"", 0)]
    assert t.held == 1
    second = t.feed([ev(IN_MOVED_TO, b"b", wd=SUB, cookie=7), ev(IN_CREATE, b"a")], 110, 105)
    assert [key(e) for e in second.entries] == [(Op.MOVE, b"a", b"d/b", 0), (Op.CHANGE, b"a", b"", 0)]


def test_unpaired_moved_from_expires_to_delete_and_blocks_later_entries() -> None:
    """Moved out: DELETE after the wait; entries read later stay behind it."""
    t = make()
    out = t.feed([ev(IN_MOVED_FROM | IN_ISDIR, b"d", cookie=3), ev(IN_CREATE, b"d")], 100, 90)
    assert out.entries == []  # CHANGE(d) may not overtake DELETE(d)
    out = t.feed([], 100 + WAIT - 1, 95)
    assert out.entries == []
    out = t.feed([], 100 + WAIT, 96)
    assert [key(e) for e in out.entries] == [(Op.DELETE, b"d", b"", IS_DIR), (Op.CHANGE, b"d", b"", 0)]
    assert out.items[0].unwatch == (SUB,)
    assert t.table.path(SUB) is None


def test_unpaired_moved_to_of_dir_scans() -> None:
    """Moved in from outside: CHANGE plus a scan of the directory."""
    out = make().feed([ev(IN_MOVED_TO | IN_ISDIR, b"in", cookie=9)], 1, 0)
    assert [(key(i.entry), i.scan) for i in out.items] == [((Op.CHANGE, b"in", b"", IS_DIR), True)]


def test_late_moved_to_after_expiry_is_change() -> None:
    """A MOVED_TO whose MOVED_FROM already expired does not pair."""
    t = make()
    t.feed([ev(IN_MOVED_FROM, b"a", cookie=4)], 0, 0)
    out = t.feed([ev(IN_MOVED_TO, b"b", cookie=4)], WAIT, 1)
    assert [key(e) for e in out.entries] == [(Op.DELETE, b"a", b"", 0), (Op.CHANGE, b"b", b"", 0)]


def test_dir_move_rewrites_watch_table_and_held_events() -> None:
    """Renaming a watched dir moves its subtree in the table; events from inside
    it read between FROM and TO get the new name."""
    t = make()
    t.table.add(3, b"d/sub")
    out = t.feed(
        [
            ev(IN_MOVED_FROM | IN_ISDIR, b"d", cookie=5),
            ev(IN_MODIFY, b"f", wd=3),
            ev(IN_MOVED_TO | IN_ISDIR, b"e", cookie=5),
            ev(IN_CLOSE_WRITE, b"g", wd=SUB),
        ],
        1,
        0,
    )
    assert [key(e) for e in out.entries] == [
        (Op.MOVE, b"d", b"e", IS_DIR),
        (Op.CHANGE, b"e/sub/f", b"", 0),
        (Op.CHANGE, b"e/g", b"", 0),
    ]
    assert not out.items[0].scan  # already watched
    assert (t.table.path(SUB), t.table.path(3)) == (b"e", b"e/sub")


def test_events_from_dir_moved_out_are_not_journaled() -> None:
    """After a directory left the tree, its watches report files outside the root."""
    t = make()
    t.feed([ev(IN_MOVED_FROM | IN_ISDIR, b"d", cookie=5), ev(IN_CREATE, b"z", wd=SUB)], 0, 0)
    out = t.feed([ev(IN_CREATE, b"late", wd=SUB)], WAIT, 1)
    assert [key(e) for e in out.entries] == [(Op.DELETE, b"d", b"", IS_DIR)]
    assert out.stale == 2


def test_excluded_paths() -> None:
    """Excluded paths give no entry; moves across the boundary become CHANGE/DELETE."""
    t = make(("*.tmp",))
    out = t.feed(
        [
            ev(IN_CREATE, b"a.tmp"),
            ev(IN_MOVED_FROM, b"a.tmp", cookie=1),
            ev(IN_MOVED_TO, b"a", cookie=1),
            ev(IN_MOVED_FROM, b"b", cookie=2),
            ev(IN_MOVED_TO, b"b.tmp", cookie=2),
        ],
        1,
        0,
    )
    assert [key(e) for e in out.entries] == [(Op.CHANGE, b"a", b"", 0), (Op.DELETE, b"b", b"", 0)]


def test_root_events() -> None:
    """The root deleted, moved or unmounted is reported; other self events are not entries."""
    for mask, how in ((IN_DELETE_SELF, "deleted"), (IN_MOVE_SELF, "moved"), (IN_UNMOUNT, "unmounted")):
        t = make()
        out = t.feed([ev(IN_CREATE, b"x"), ev(mask, b""), ev(IN_CREATE, b"y")], 1, 0)
        assert out.root_gone == how
        assert [key(e) for e in out.entries] == [(Op.CHANGE, b"x", b"", 0)]
    t = make()
    out = t.feed([ev(IN_DELETE_SELF, b"", wd=SUB), ev(IN_IGNORED, b"", wd=SUB)], 1, 0)
    assert (out.root_gone, out.entries, t.table.path(SUB)) == ("", [], None)
    out = t.feed([ev(IN_IGNORED, b"", wd=ROOT)], 2, 1)
    assert out.root_gone == "unwatched"  # its DELETE_SELF may have been lost in an overflow


def test_checkpoint_waits_for_held_entries() -> None:
    """The safe checkpoint never passes a drain whose entries are still held."""
    t = make()
    t.feed([ev(IN_CREATE, b"a")], 10, 10)
    assert t.safe_checkpoint_ns == 10
    t.feed([ev(IN_MOVED_FROM, b"a", cookie=1)], 20, 20)
    assert t.safe_checkpoint_ns == 10
    t.feed([], 30, 30)
    assert t.safe_checkpoint_ns == 10
    t.feed([], 20 + WAIT, 40)
    assert t.safe_checkpoint_ns == 40
    t.feed([ev(IN_CREATE, b"b")], 50 + WAIT, 50, complete=False)
    assert t.safe_checkpoint_ns == 40  # the drain did not empty the queue


def test_watch_table() -> None:
    """Renames rewrite whole subtrees only; a known wd at a new path is a move."""
    table = WatchTable()
    for wd, p in ((1, b""), (2, b"a"), (3, b"a/b"), (4, b"ab")):
        table.add(wd, p)
    table.rename(b"a", b"x/y")
    assert dict(table.items()) == {1: b"", 2: b"x/y", 3: b"x/y/b", 4: b"ab"}
    table.add(2, b"q")
    assert (table.path(3), table.wd(b"q/b"), table.wd(b"x/y")) == (b"q/b", 3, None)
    assert sorted(table.drop_under(b"q")) == [2, 3]
    assert dict(table.items()) == {1: b"", 4: b"ab"}


# ---------------------------------------------------------------- properties
NAMES = [b"a", b"b", b"\xff", b"n\nl"]
SIMPLE = [IN_CREATE, IN_CLOSE_WRITE, IN_MODIFY, IN_ATTRIB, IN_DELETE]
EXPECT_OP = {IN_CREATE: Op.CHANGE, IN_CLOSE_WRITE: Op.CHANGE, IN_MODIFY: Op.CHANGE}
EXPECT_OP |= {IN_ATTRIB: Op.ATTR, IN_DELETE: Op.DELETE}


@st.composite
def scenarios(draw: st.DrawFn) -> list[RawEvent]:
    """Random file events, moves (adjacent or interleaved), lone moves, overflows.
    Move endpoints have unique names so every one can be traced."""
    events: list[RawEvent] = []
    open_moves: list[int] = []
    cookie = 100
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["simple", "simple", "from", "to", "close", "overflow"]))
        wd = draw(st.sampled_from([ROOT, SUB]))
        if kind == "simple":
            events.append(ev(draw(st.sampled_from(SIMPLE)), draw(st.sampled_from(NAMES)), wd))
        elif kind == "from":
            cookie += 1
            events.append(ev(IN_MOVED_FROM, b"from%d" % cookie, wd, cookie))
            open_moves.append(cookie)
        elif kind == "to":
            cookie += 1
            events.append(ev(IN_MOVED_TO, b"lone%d" % cookie, wd, cookie))
        elif kind == "close" and open_moves:
            c = open_moves.pop(draw(st.integers(0, len(open_moves) - 1)))
            events.append(ev(IN_MOVED_TO, b"to%d" % c, wd, c))
        elif kind == "overflow":
            events.append(RawEvent(-1, IN_Q_OVERFLOW, 0, b""))
    return events


def oracle(events: list[RawEvent]) -> list[tuple[Op, bytes, bytes, int]]:
    """Whole-sequence reference: every FROM pairs with the later TO of its cookie."""
    paths = {ROOT: b"", SUB: b"d"}

    def full(e: RawEvent) -> bytes:
        return paths[e.wd] + b"/" + e.name if paths[e.wd] else e.name

    to_of = {e.cookie: full(e) for e in events if e.mask & IN_MOVED_TO}
    from_cookies = {e.cookie for e in events if e.mask & IN_MOVED_FROM}
    out = []
    for e in events:
        if e.mask & IN_Q_OVERFLOW:
            out.append((Op.RESCAN, b"", b"", 0))
        elif e.mask & IN_MOVED_FROM:
            dest = to_of.get(e.cookie)
            out.append((Op.MOVE, full(e), dest, 0) if dest else (Op.DELETE, full(e), b"", 0))
        elif e.mask & IN_MOVED_TO:
            if e.cookie not in from_cookies:
                out.append((Op.CHANGE, full(e), b"", 0))
        else:
            out.append((EXPECT_OP[e.mask], full(e), b"", 0))
    return out


def run_split(t: Translator, events: list[RawEvent], cuts: list[int], gaps: list[int]) -> list[Entry]:
    out: list[Entry] = []
    now = 1_000
    bounds = sorted({0, len(events), *(c % (len(events) + 1) for c in cuts)})
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        now += gaps[i % len(gaps)] if gaps else 0
        out += t.feed(events[lo:hi], now, now - 1).entries
    out += t.feed([], now + 10 * WAIT, now + 1).entries
    return out


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.lists(st.integers(0, 40), max_size=6))
def test_batching_within_wait_matches_oracle(events: list[RawEvent], cuts: list[int]) -> None:
    """Read in any batch split (within the wait), the entries equal the reference:
    nothing dropped, nothing reordered, moves paired only by their own cookie."""
    t = make()
    got = run_split(t, events, cuts, [1])
    assert dedupe([key(e) for e in got]) == dedupe(oracle(events))
    assert t.held == 0


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.lists(st.integers(0, 40), max_size=6), st.lists(st.integers(0, 2 * WAIT), max_size=6))
def test_any_timing_accounts_for_every_move_event(
    events: list[RawEvent], cuts: list[int], gaps: list[int]
) -> None:
    """With arbitrary delays every MOVED_FROM yields exactly one MOVE or DELETE,
    every MOVED_TO one MOVE or CHANGE, MOVE pairs share a cookie, and the other
    events keep their relative order."""
    t = make()
    got = run_split(t, events, cuts, gaps)
    cookie_of = {(b"d/" if e.wd == SUB else b"") + e.name: e.cookie for e in events if e.cookie}
    sources = [e.path for e in got if e.op == Op.MOVE or (e.op == Op.DELETE and e.path in cookie_of)]
    dests = [e.dest for e in got if e.op == Op.MOVE]
    dests += [e.path for e in got if e.op == Op.CHANGE and e.path in cookie_of]
    froms = [p for p, _ in cookie_of.items() if b"from" in p]
    tos = [p for p, _ in cookie_of.items() if b"from" not in p]
    assert sorted(sources) == sorted(froms)
    assert sorted(dests) == sorted(tos)
    for e in got:
        if e.op == Op.MOVE:
            assert cookie_of[e.path] == cookie_of[e.dest]
    plain = [key(e) for e in got if e.path not in cookie_of and e.dest not in cookie_of]
    expect = [k for k in oracle(events) if k[1] not in cookie_of and k[2] not in cookie_of]
    assert dedupe(plain) == dedupe(expect)


def test_parse_events_keeps_raw_names() -> None:
    """A kernel read buffer splits into events; names keep their bytes, padding goes."""

    def raw(wd: int, mask: int, cookie: int, name: bytes) -> bytes:
        padded = name + b"\0" * (16 - len(name) % 16) if name else b""
        return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded

    data = raw(1, IN_CREATE, 0, b"\xff\nname") + raw(-1, IN_Q_OVERFLOW, 0, b"") + raw(2, IN_MOVED_TO, 9, b"x")
    assert parse_events(data) == [
        RawEvent(1, IN_CREATE, 0, b"\xff\nname"),
        RawEvent(-1, IN_Q_OVERFLOW, 0, b""),
        RawEvent(2, IN_MOVED_TO, 9, b"x"),
    ]


def test_decoding_drops_only_what_translates_to_repeats() -> None:
    """create, modify, close_write of a file decode to one event; the same
    file changed again after another file's events, after its attributes, or
    under another watch, stays; translating either stream gives the same entries."""

    def raw(wd: int, mask: int, name: bytes) -> bytes:
        padded = name + b"\0" * (16 - len(name) % 16)
        return struct.pack("iIII", wd, mask, 0, len(padded)) + padded

    stream = [(ROOT, IN_CREATE, b"a"), (ROOT, IN_MODIFY, b"a"), (ROOT, IN_CLOSE_WRITE, b"a")]
    stream += [(ROOT, IN_CREATE, b"b"), (ROOT, IN_CLOSE_WRITE, b"b"), (ROOT, IN_MODIFY, b"a")]
    stream += [
        (ROOT, IN_MODIFY, b"a"),
        (ROOT, IN_ATTRIB, b"a"),
        (ROOT, IN_MODIFY, b"a"),
        (SUB, IN_MODIFY, b"a"),
    ]
    stream += [(ROOT, IN_CREATE | IN_ISDIR, b"n"), (ROOT, IN_CREATE | IN_ISDIR, b"n")]
    data = b"".join(raw(*e) for e in stream)
    decoded, count = decode_events(data)
    assert count == len(stream)
    kept = [stream[i] for i in (0, 3, 5, 7, 8, 9, 10, 11)]
    kept[0] = (ROOT, IN_CREATE | IN_MODIFY, b"a")  # the dropped write's bit stays
    assert [(e.wd, e.mask, e.name) for e in decoded] == kept
    full = [key(e) for e in make().feed(parse_events(data), 1, 0).entries]
    assert [key(e) for e in make().feed(decoded, 1, 0).entries] == full
    assert [(k[0], k[1]) for k in full] == [
        (Op.CHANGE, b"a"),
        (Op.CHANGE, b"b"),
        (Op.CHANGE, b"a"),
        (Op.ATTR, b"a"),
        (Op.CHANGE, b"a"),
        (Op.CHANGE, b"d/a"),
        (Op.CHANGE, b"n"),
        (Op.CHANGE, b"n"),
    ]


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_decoding_translates_like_parsing(events: list[RawEvent]) -> None:
    """Whatever the stream, translating the decoded events gives the entries
    translating every parsed event gives."""
    data = b"".join(struct.pack("iIII", e.wd, e.mask, e.cookie, 16) + e.name.ljust(16, b"\0") for e in events)
    assert parse_events(data) == events
    decoded = [key(e) for e in make().feed(decode_events(data)[0], 1, 0).entries]
    assert decoded == [key(e) for e in make().feed(parse_events(data), 1, 0).entries]


def _written(items: list) -> list[tuple[bytes, bool]]:
    return [(i.entry.path, i.written) for i in items]


def test_a_write_marks_the_item_written_however_the_events_are_split() -> None:
    """A MODIFY (a write) lets the watcher skip the special-file lookup: its item says
    so, whether the MODIFY is merged by the decoder, repeats a held entry, or
    follows a release. Created or closed without a write says nothing."""

    def raw(mask: int, name: bytes) -> bytes:
        padded = name + b"\0" * (16 - len(name) % 16)
        return struct.pack("iIII", ROOT, mask, 0, len(padded)) + padded

    stream = [(IN_CREATE, b"w"), (IN_MODIFY, b"w"), (IN_CLOSE_WRITE, b"w")]  # a file written
    stream += [(IN_CREATE, b"t"), (IN_CLOSE_WRITE, b"t")]  # touched: created, nothing written
    stream += [(IN_CREATE, b"p")]  # mkfifo, mknod, bind
    stream += [(IN_ATTRIB, b"w"), (IN_MODIFY, b"w")]  # written again after a chmod
    data = b"".join(raw(m, n) for m, n in stream)
    want = [(b"w", True), (b"t", False), (b"p", False), (b"w", False), (b"w", True)]
    assert _written(make().feed(decode_events(data)[0], 1, 0).items) == want
    assert _written(make().feed(parse_events(data), 1, 0).items) == want


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_decoding_marks_writes_like_parsing(events: list[RawEvent]) -> None:
    """Decoded or parsed, a stream's items are marked written alike."""
    data = b"".join(struct.pack("iIII", e.wd, e.mask, e.cookie, 16) + e.name.ljust(16, b"\0") for e in events)
    decoded = make().feed(decode_events(data)[0], 1, 0).items
    parsed = make().feed(parse_events(data), 1, 0).items
    assert [(key(i.entry), i.written) for i in decoded] == [(key(i.entry), i.written) for i in parsed]
