"""Grouping of msync shipper work into invocations (pure: no I/O).

An item is one plan action with what the shipper learned about it; a job is
one msync invocation. Order inside a lane is the plan's order, which keeps
deletes before the puts that replace them and subtrees together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.ship.actions import Action
from agent.ship.base import ShipResult
from agent.ship.msync.carry import Prepared
from agent.ship.msync.output import Entry

__all__ = [
    "Item",
    "Job",
    "Sent",
    "expand",
    "lane_roots",
    "lane_of",
    "lane_jobs",
    "chunks",
    "parent_dirs",
    "restamp_levels",
    "size_of",
]


@dataclass(eq=False)
class Item:
    """One action on its way through a plan."""

    action: Action
    tracks: tuple[str, ...]
    entry: Entry | None = None
    token: bytes = b""
    resend: Prepared | None = None  # a symlink's in-base target, re-sent after the link
    is_dir: bool = False
    biggest: int = 0  # size of the largest regular file it carries: how long a member may stay silent
    below: int = 0  # entries below a recursive put (members list them for --delete)
    # A tree msync's -r cannot carry goes out entry by entry with --delete
    # (no -r): ``more`` is everything below the root, children first.
    mirror: bool = False
    more: list[Prepared] = field(default_factory=list)
    bad: str = ""  # why part of the tree could not be sent at all
    plain: bool = False  # a regular file or a directory: a recursive send may carry it
    # A group (group.py): one ``-r`` send of a directory whose every entry
    # the plan holds. ``covered`` are the planned items it carries (their
    # verdicts come from the lines naming them); ``own`` is the directory's
    # own planned item, if any. A group reports nothing itself.
    covered: list[Item] = field(default_factory=list)
    own: Item | None = None
    along: list[bytes] = field(default_factory=list)  # unplanned files -r sends too (base-relative)
    results: dict[str, ShipResult] = field(default_factory=dict)


@dataclass
class Job:
    """One msync invocation: items for one host (or all, ``host is None``)."""

    host: bytes | None
    recursive: bool
    items: list[Item]
    delete: bool = False  # --delete: -r mirrors whole subtrees, else each directory's children


# (item that owns the verdict, or None for a file a group sends along; the
# entry; the argv token, or None for a path a group's -r reaches unnamed)
Sent = list[tuple["Item | None", Entry, bytes | None]]


def expand(job: Job) -> tuple[Sent, dict[int, int]]:
    """Every path one invocation answers for, and for each item (by id) the
    index of its own path: the others (a tree's entries, a link's target)
    only worsen its verdict."""
    sent: Sent = []
    main: dict[int, int] = {}
    for it in job.items:
        if it.covered:
            sent += [(None, Entry(p), None) for p in it.along]
            for c in it.covered:
                if c is not it.own:
                    main[id(c)] = len(sent)
                    sent.append((c, Entry(c.entry.echo), None))
            if it.own is not None:
                main[id(it.own)] = len(sent)
            sent.append((it.own, it.entry, it.token))
            continue
        sent += [(it, Entry(m.echo), m.token) for m in it.more]
        main[id(it)] = len(sent)
        sent.append((it, it.entry, it.token))
    sent += [(it, Entry(it.resend.echo), it.resend.token) for it in job.items if it.resend]
    return sent, main


def lane_roots(paths: list[bytes]) -> list[bytes]:
    """For each path, the shortest of ``paths`` that is it or one of its
    ancestors (``b""``, the root, is everyone's). Two paths keep their plan
    order against each other (a delete before the put that replaces it, a
    directory before or after what is inside) only when one lies inside the
    other, and then they get the same root; paths with different roots lie
    in disjoint subtrees and may go out in msync calls running at once."""
    known = set(paths)
    out = []
    for path in paths:
        root = path
        if b"" in known:
            root = b""
        else:
            cut = path.find(b"/")
            while cut >= 0:
                if path[:cut] in known:
                    root = path[:cut]
                    break
                cut = path.find(b"/", cut + 1)
        out.append(root)
    return out


def lane_of(roots: list[bytes], weights: list[int], width: int) -> list[int]:
    """A lane (0 to ``width`` - 1) per entry: all entries of one root in the
    same lane, each root, in order of first appearance, to the lane with the
    least weight so far."""
    total: dict[bytes, int] = {}
    for root, w in zip(roots, weights):
        total[root] = total.get(root, 0) + w
    load = [0] * max(1, width)
    lane: dict[bytes, int] = {}
    for root, w in total.items():
        lane[root] = min(range(len(load)), key=lambda i: load[i])
        load[lane[root]] += w
    return [lane[root] for root in roots]


def lane_jobs(lane: list[tuple[tuple[bytes, ...] | None, Item]], batch: int) -> list[Job]:
    """Consecutive items for the same member set form a segment; a segment for
    a subset becomes one run of jobs per member (``-t``)."""
    jobs: list[Job] = []
    start = 0
    for end in range(1, len(lane) + 1):
        if end == len(lane) or lane[end][0] != lane[start][0]:
            key, items = lane[start][0], [it for _, it in lane[start:end]]
            for host in key or (None,):
                jobs += chunks(items, host, batch)
            start = end
    return jobs


def chunks(items: list[Item], host: bytes | None, batch: int) -> list[Job]:
    """Consecutive runs of recursive / mirror / plain items, ``batch`` paths per
    job. In a plain job, directories go last, deepest first: members create
    missing parents themselves, and a directory sent after its children keeps its mtime."""
    jobs: list[Job] = []
    for it in items:
        rec = it.entry.recursive
        delete = (rec and not it.covered) or it.mirror  # a group adds, a recursive put mirrors
        last = jobs[-1] if jobs else None
        if last is None or (last.recursive, last.delete) != (rec, delete) or size(last) >= batch:
            jobs.append(Job(host, rec, [], delete))
        jobs[-1].items.append(it)
    for job in jobs:
        if not job.recursive:
            files = [it for it in job.items if not it.is_dir]
            dirs = [it for it in job.items if it.is_dir]
            dirs.sort(key=lambda it: -it.entry.echo.count(b"/"))
            job.items = files + dirs
    return jobs


def size(job: Job) -> int:
    return sum(size_of(it) for it in job.items)


def size_of(it: Item) -> int:
    """Paths one item names or answers for in a call."""
    return (2 if it.resend else 1) + len(it.more) + len(it.covered)


def parent_dirs(paths: list[bytes]) -> list[bytes]:
    """Every proper ancestor of ``paths`` (not the root), deepest first: the
    directories whose mtime a member changed when it created or removed an
    entry inside them."""
    out: set[bytes] = set()
    for path in paths:
        while b"/" in path:
            path = path.rsplit(b"/", 1)[0]
            out.add(path)
    return sorted(out, key=lambda p: (-p.count(b"/"), p))


RESTAMP_CHUNK = 50  # directories a restamping call carries at least before another runs beside it


def restamp_levels(tokens: list[bytes], concurrency: int) -> list[list[list[bytes]]]:
    """Directory tokens (deepest first) as rounds of calls: one round per
    depth, deepest first, each split into up to ``concurrency`` calls of even
    size that run at once (no send of a directory changes another's mtime;
    only a member creating a missing one touches its parent, which a later
    round sends), each of at least ``RESTAMP_CHUNK`` directories when split.
    A silent call costs its directories and little else, so a round is never
    cut into waves that wait for each other."""
    levels: list[list[bytes]] = []
    depth = None
    for t in tokens:
        d = t.count(b"/")
        if d != depth:
            levels.append([])
            depth = d
        levels[-1].append(t)
    out = []
    for level in levels:
        calls = max(1, min(concurrency, len(level) // RESTAMP_CHUNK))
        size = -(-len(level) // calls)
        out.append([level[i : i + size] for i in range(0, len(level), size)])
    return out
