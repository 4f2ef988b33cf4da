"""Pure planning: journal records -> coalesced per-path changes -> one Plan.

Shipping sends the *current* state of a path, so history only matters for
two things: which paths to touch, and which mirror contents must be removed
first. Coalescing keeps exactly that, per path:

- CHANGE / ATTR -> PUT; DELETE -> DELETE (recursive on the mirror);
- create then delete -> DELETE; delete then create -> PUT, preceded by a
  DELETE when the removed or the new object is a directory (a PUT of a
  directory does not remove an old directory's children);
- MOVE(a, b) -> DELETE a + PUT b. A directory move is DELETE b + recursive
  PUT b: the subtree arrived with the move, and whatever the mirror held at b
  (entries whose own deletes are coalesced into b) is cleared first;
- a CHANGE of a directory flagged SUBTREE -> recursive PUT (the shipper makes
  the mirror's subtree equal to the source's, extras removed);
- a DELETE or move-away of a directory absorbs earlier entries below it;
  later entries below it stay (the tree was re-created);
- RESCAN (the scanner journals what it finds) and a DELETE of the root
  itself (never mirrored, docs/design.md §4) produce no action: their seqs are
  marked done at once (a completion key that no action names).

Completion. Each (track, path) maps to a :class:`Completion`: the seqs an OK
result of that path's actions marks done, and ``after``, the older entries that
remove this path or one above it (DELETE, move away, directory moved in).
A seq listed under several paths (a MOVE names two) needs all of them OK,
and a seq is done only if its ``after`` entries are done in the same round
(:func:`resolve`). Otherwise a pending older removal, retried after the newer
entry was marked done, would delete what that entry shipped.

:class:`Selection` decides which pending records may be planned while other
paths back off, without shipping a path's later history before its earlier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from agent.ship.actions import Action, ActionKind, Plan
from journal import SUBTREE, Op, Record

__all__ = [
    "PathChange",
    "Completion",
    "CompletionMap",
    "coalesce",
    "build_plan",
    "Holds",
    "Selection",
    "depth",
    "parent",
    "lineage",
    "record_paths",
    "resolve",
]


@dataclass(frozen=True, slots=True)
class Completion:
    """The entries an OK result of one (track, path) marks done."""

    seqs: tuple[int, ...]  # done by an OK result of this path's actions
    after: tuple[int, ...] = ()  # ... once these (older removals at or above the path) are done too
    gone: tuple[bytes, ...] = ()  # paths below that this path's DELETE removed (manifest entries to drop)
    removed_at: int = 0  # the newest entry that removed this path (its DELETE's own), 0: none


CompletionMap = dict[tuple[str, bytes], Completion]


@dataclass(frozen=True, slots=True)
class PathChange:
    """What one path needs on the mirror. Neither ``delete`` nor ``put``:
    nothing to ship, ``seqs`` are marked done as they are."""

    path: bytes
    delete: bool = False
    put: bool = False
    recursive: bool = False
    seqs: tuple[int, ...] = ()
    after: tuple[int, ...] = ()  # removals at or above the path these seqs must not overtake
    gone: tuple[bytes, ...] = ()  # touched paths below, folded into this path's DELETE
    removed_at: int = 0  # the newest entry that removed the path itself (a DELETE or a move away)


def parent(path: bytes) -> bytes:
    head, sep, _ = path.rpartition(b"/")
    return head if sep else b""


def depth(path: bytes) -> int:
    """0 for the root (b""), 1 for a top-level name, and so on."""
    return path.count(b"/") + 1 if path else 0


def lineage(path: bytes) -> Iterable[bytes]:
    """``path`` and every ancestor up to and including the root b""."""
    yield path
    while path:
        path = parent(path)
        yield path


def record_paths(record: Record) -> tuple[bytes, ...]:
    e = record.entry
    return (e.path, e.dest) if e.op == Op.MOVE else (e.path,)


@dataclass(slots=True)
class _Slot:
    seqs: list[int] = field(default_factory=list)
    removals: list[int] = field(default_factory=list)  # seqs that removed this path on the mirror
    gone: list[bytes] = field(default_factory=list)  # slots below folded into this one
    delete: bool = False
    dir_deleted: bool = False  # the object to remove was (or held) a directory
    put: bool = False
    recursive: bool = False


class _Tree:
    """Working state: a slot per touched path plus a child index, so the
    subtree below a deleted directory is dropped without scanning every slot."""

    def __init__(self) -> None:
        self.slots: dict[bytes, _Slot] = {}
        self._kids: dict[bytes, set[bytes]] = {}

    def slot(self, path: bytes) -> _Slot:
        found = self.slots.get(path)
        if found is not None:
            return found
        made = self.slots[path] = _Slot()
        child = path
        while child:
            kids = self._kids.setdefault(parent(child), set())
            if child in kids:
                break
            kids.add(child)
            child = parent(child)
        return made

    def absorb_below(self, path: bytes) -> bool:
        """Fold every slot strictly below ``path`` into ``path``'s slot (a
        removal there covers them); True if there were any. Their removals
        stay removals: newer entries below must not overtake them either."""
        into = self.slot(path)
        found = False
        stack = list(self._kids.pop(path, ()))
        while stack:
            p = stack.pop()
            gone = self.slots.pop(p, None)
            if gone is not None:
                into.seqs.extend(gone.seqs)
                into.removals.extend(gone.removals)
                into.gone += [p, *gone.gone]
                found = True
            stack.extend(self._kids.pop(p, ()))
        return found


def _put(tree: _Tree, path: bytes, seq: int, is_dir: bool) -> None:
    s = tree.slot(path)
    s.seqs.append(seq)
    s.put = True
    if not (s.dir_deleted or is_dir):
        s.delete = False  # a PUT of a file replaces a removed file by itself


def _delete(tree: _Tree, path: bytes, seq: int, is_dir: bool) -> None:
    s = tree.slot(path)
    s.seqs.append(seq)
    s.removals.append(seq)
    below = tree.absorb_below(path)
    s.delete = True
    s.dir_deleted = s.dir_deleted or is_dir or below
    s.put = s.recursive = False


def _move_in_dir(tree: _Tree, path: bytes, seq: int) -> None:
    s = tree.slot(path)
    s.seqs.append(seq)
    s.removals.append(seq)
    tree.absorb_below(path)
    s.delete = s.dir_deleted = s.put = s.recursive = True


def _no_action(tree: _Tree, path: bytes, seq: int) -> None:
    tree.slot(path).seqs.append(seq)


def coalesce(records: Sequence[Record]) -> list[PathChange]:
    """Per-path changes for ``records`` (one track's pending entries, in seq
    order), sorted by path. Every input seq appears in at least one change."""
    tree = _Tree()
    for rec in sorted(records, key=lambda r: r.seq):
        e, seq = rec.entry, rec.seq
        if e.op in (Op.CHANGE, Op.ATTR):
            _put(tree, e.path, seq, e.is_dir)
            if e.flags & SUBTREE and e.is_dir:
                tree.slot(e.path).recursive = True
        elif e.op == Op.DELETE and e.path:
            _delete(tree, e.path, seq, e.is_dir)
        elif e.op == Op.MOVE and e.path and e.dest:
            _delete(tree, e.path, seq, e.is_dir)
            if e.is_dir:
                _move_in_dir(tree, e.dest, seq)
            else:
                _put(tree, e.dest, seq, False)
        else:  # RESCAN, or a delete/move naming the root
            _no_action(tree, e.path, seq)
    return [
        PathChange(
            path,
            s.delete,
            s.put,
            s.recursive and s.put,
            tuple(sorted(set(s.seqs))),
            _removals_above(tree.slots, path),
            tuple(sorted(set(s.gone))) if s.delete else (),
            max(s.removals, default=0) if s.delete else 0,
        )
        for path, s in sorted(tree.slots.items())
    ]


def _removals_above(slots: Mapping[bytes, _Slot], path: bytes) -> tuple[int, ...]:
    """Removals of ``path`` or of a directory above it. Entries below a
    removed directory are all newer than its removal (older ones were
    absorbed), so each such removal must not be overtaken."""
    found: set[int] = set()
    for anc in lineage(path):
        above = slots.get(anc)
        if above is not None:
            found.update(above.removals)
    return tuple(sorted(found))


def _order(action: Action) -> tuple[int, int, bytes]:
    """Deletes first, deepest first; then puts, parents before children."""
    if action.kind == ActionKind.DELETE:
        return (0, -depth(action.path), action.path)
    return (1, depth(action.path), action.path)


def build_plan(per_track: Mapping[str, Sequence[Record]]) -> tuple[Plan, CompletionMap]:
    """One plan for every track's records; an action several tracks need is
    merged into one (msync multicasts it once), recursive if any needs that."""
    merged: dict[tuple[ActionKind, bytes], tuple[set[str], set[int], bool]] = {}
    completions: CompletionMap = {}
    for track, records in per_track.items():
        for ch in coalesce(records):
            completions[(track, ch.path)] = Completion(ch.seqs, ch.after, ch.gone, ch.removed_at)
            wanted = [(ActionKind.DELETE, False)] if ch.delete else []
            wanted += [(ActionKind.PUT, ch.recursive)] if ch.put else []
            for kind, recursive in wanted:
                tracks, seqs, rec = merged.setdefault((kind, ch.path), (set(), set(), False))
                tracks.add(track)
                seqs.update(ch.seqs)
                merged[(kind, ch.path)] = (tracks, seqs, rec or recursive)
    actions = [
        Action(kind, path, recursive, frozenset(tracks), tuple(sorted(seqs)))
        for (kind, path), (tracks, seqs, recursive) in merged.items()
    ]
    return Plan(tuple(sorted(actions, key=_order))), completions


def resolve(
    completions: CompletionMap,
    track: str,
    not_ok: Set[tuple[str, bytes]],
    dead: Mapping[tuple[str, bytes], str],
) -> tuple[list[int], dict[int, str]]:
    """Seqs of ``track`` that are done, and those to dead-letter (seq -> reason),
    given the keys that were not OK and the keys that went dead.

    A seq is done when every path listing it is OK and every seq in its
    ``after`` is done. Dead: the seqs listed under a dead path."""
    ok: dict[int, bool] = {}
    after: dict[int, set[int]] = {}
    gone: dict[int, list[str]] = {}
    for key, rule in completions.items():
        if key[0] != track:
            continue
        for s in rule.seqs:
            ok[s] = ok.get(s, True) and key not in not_ok
            after.setdefault(s, set()).update(a for a in rule.after if a != s)
            if key in dead:
                gone.setdefault(s, []).append(f"{_show(key[1])}: {dead[key]}")
    done = {s for s, good in ok.items() if good}
    changed = True
    while changed:  # drop seqs whose older removals are not done, until stable
        blocked = {s for s in done if not after[s] <= done}
        done -= blocked
        changed = bool(blocked)
    return sorted(done), {s: "; ".join(why) for s, why in gone.items()}


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


class Holds:
    """Paths whose pending history must not be overtaken (pure).

    ``add(path, below)`` holds ``path``, and everything below it when the
    held work removes mirror contents. A record touching a held path is
    blocked, and :meth:`hold` makes it hold its own paths in turn, so no later
    entry overtakes an earlier one it depends on; so is a directory moved in
    above a held path (it re-creates that path)."""

    def __init__(self, holds: Mapping[bytes, bool] | None = None) -> None:
        self._exact: set[bytes] = set()
        self._below: set[bytes] = set()
        self._covers: set[bytes] = set()  # proper ancestors of held paths
        for path, below in (holds or {}).items():
            self.add(path, below)

    def blocked(self, rec: Record) -> bool:
        e = rec.entry
        if e.op == Op.MOVE and e.is_dir and e.dest in self._covers:
            return True  # the moved-in subtree would overtake held history below it
        for p in record_paths(rec):
            if p in self._exact or (self._below and any(a in self._below for a in lineage(p))):
                return True
        return False

    def hold(self, rec: Record) -> None:
        e = rec.entry
        if e.op == Op.MOVE:
            self.add(e.path, True)
            self.add(e.dest, e.is_dir)
        elif e.op == Op.DELETE:
            self.add(e.path, True)
        elif e.op in (Op.CHANGE, Op.ATTR):
            self.add(e.path, False)

    def add(self, path: bytes, below: bool) -> None:
        (self._below if below else self._exact).add(path)
        for anc in lineage(parent(path)) if path else ():
            if anc in self._covers:
                break
            self._covers.add(anc)


class Selection:
    """Which pending records of one track may be planned now (pure; fed page
    by page, in seq order).

    ``holds`` are paths backing off: path -> True when the held work removes
    mirror contents (a DELETE), which then holds everything below it too
    (see :class:`Holds`). Taking stops at ``limit`` records or at the first
    record younger than ``ready_ns`` (the quiet delay), keeping what is
    shipped a prefix of each path's history. The young records of the page
    that ends the selection are kept in ``young``: they tell which paths are
    still changing (:mod:`agent.ship.settle`).
    """

    def __init__(self, holds: Mapping[bytes, bool], *, limit: int, ready_ns: int) -> None:
        self._holds = Holds(holds)
        self._limit = limit
        self._ready_ns = ready_ns
        self.taken: list[Record] = []
        self.young: list[Record] = []  # records after the selection's end, read with it
        self.held = 0
        self.young_ns: int | None = None  # time_ns of the first record not yet quiet
        self.due_ns: int | None = None  # when taken records held back as still changing must ship
        self.full = False
        self.last_seq = 0

    @property
    def done(self) -> bool:
        return self.full or self.young_ns is not None

    def feed(self, records: Iterable[Record]) -> bool:
        """Consider more records; True once no later record can be taken."""
        for rec in records:
            if self.young_ns is not None:
                self.young.append(rec)
                continue
            if len(self.taken) >= self._limit:
                self.full = True
                return True
            if rec.entry.time_ns > self._ready_ns:
                self.young_ns = rec.entry.time_ns
                self.young.append(rec)
                continue
            self.last_seq = rec.seq
            if self._holds.blocked(rec):
                self._holds.hold(rec)
                self.held += 1
            else:
                self.taken.append(rec)
        return self.done
