"""Whole directories of a plan go out as one recursive send.

Over makuosan's TCP console every exchange that prints something costs
about 40 ms (docs/msync.md §8), and per-member proof needs that output: one
``-l 2 --sync FILE`` per file costs 40 ms a file. One ``-l 2 -r DIR`` is a
single exchange however many files it carries, and still says ``update`` or
``skip`` per member for every entry inside. So when a plan holds most of
what is below a directory (a new release tree, a directory rewritten), that
directory is sent with ``-r`` and each planned path gets its verdict from
the lines naming it, exactly as if it had been sent alone.

Only a subtree that ``-r`` carries exactly is grouped: every entry below is
a planned regular file, a grouped directory, or an unplanned regular file
not written in the current second (sent along: it is current state, so this
is harmless, and never content-checked), no more of those than planned
paths; no symlink (a send chmods its target, which must be re-sent after
it), no fifo, socket or device (``-r`` would send them), no mount point, no
unreadable directory, no name ``-r`` cannot carry, no directory name holding
a space (makuosan's walk does not enter it). Entries msync's excludes leave
out need no plan: ``-r`` skips them too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

from agent.ship.actions import Action, ActionKind
from agent.ship.msync.carry import command_prefix, fits, prepare, same_second
from agent.ship.msync.jobs import Item
from agent.ship.msync.output import Entry
from agent.tree.walk import join, open_dir

__all__ = ["Candidate", "Cover", "Listing", "find_groups", "group_items", "list_dir", "MIN_GROUP"]

MIN_GROUP = 2  # planned entries a group needs: below that a single send is as cheap


@dataclass(frozen=True, slots=True)
class Candidate:
    """A planned PUT the shipper could leave to a recursive send: ``key``
    names the members it goes to (paths for other members never share a send)."""

    is_dir: bool
    key: Hashable


# (name, kind) of a directory's entries, kind "file", "fresh" (a regular file
# written in the current second), "dir" or "other" (symlink, special file,
# mount point); None when it cannot be read.
Listing = list[tuple[bytes, str]] | None


@dataclass
class Cover:
    """What one ``-r`` of a directory carries: the planned paths (the
    directory itself included when planned) and the unplanned regular files
    it sends along, at most as many as planned ones."""

    key: Hashable
    planned: list[bytes] = field(default_factory=list)
    unplanned: list[bytes] = field(default_factory=list)


def _parent(rel: bytes) -> bytes:
    return rel.rpartition(b"/")[0]


def _carried(name: bytes) -> bool:
    """Whether makuosan's ``-r`` walk carries this name (carry.py, scanner_carries)."""
    return not (b"\n" in name or b"\r" in name or name.endswith(b" "))


def find_groups(
    candidates: Mapping[bytes, Candidate],
    listdir: Callable[[bytes, int | None], Listing],
    excluded: Callable[[bytes, bool], bool],
    min_group: int = MIN_GROUP,
) -> dict[bytes, Cover]:
    """Topmost directories (never the root ``b""``) a ``-r`` send can carry
    for the plan: every subdirectory covered too, every entry a planned path
    or an unplanned regular file not written this second, the unplanned ones no more than
    the planned ones. Directories are listed deepest first, each at most
    once, and none above one that failed; ``listdir`` gets the most entries
    the directory may hold to be carried (excluded ones aside), so it may
    give up on a longer one."""
    ancestors: set[bytes] = set()
    files_in: dict[bytes, int] = {}  # planned files directly in a directory
    for path, cand in candidates.items():
        d = path if cand.is_dir else _parent(path)
        if not cand.is_dir:
            files_in[d] = files_in.get(d, 0) + 1
        while d and d not in ancestors:
            ancestors.add(d)
            d = _parent(d)
    covered: dict[bytes, Cover] = {}
    subs: dict[bytes, list[Cover]] = {}  # covered subdirectories of a directory
    failed: set[bytes] = set()
    for d in sorted(ancestors, key=lambda p: -p.count(b"/")):
        if d in failed or b" " in d.rpartition(b"/")[2]:
            failed.add(_parent(d))
            continue
        below = subs.get(d, [])
        planned = files_in.get(d, 0) + (d in candidates) + sum(len(c.planned) for c in below)
        most = files_in.get(d, 0) + len(below) + planned
        got = _cover(d, candidates, covered, lambda rel, most=most: listdir(rel, most), excluded)
        if got is None or len(got.unplanned) > len(got.planned):
            failed.add(_parent(d))
        else:
            covered[d] = got
            subs.setdefault(_parent(d), []).append(got)
    tops = {d: c for d, c in covered.items() if _parent(d) not in covered}
    return {d: c for d, c in tops.items() if len(c.planned) >= min_group}


def _cover(
    d: bytes,
    candidates: Mapping[bytes, Candidate],
    covered: Mapping[bytes, Cover],
    listdir: Callable[[bytes], Listing],
    excluded: Callable[[bytes, bool], bool],
) -> Cover | None:
    """What ``-r d`` carries, when every entry of ``d`` is covered by one key."""
    own = candidates.get(d)
    if own is not None and not own.is_dir:
        return None
    keys: set[Hashable] = {own.key} if own is not None else set()
    out = Cover(None)
    listing = listdir(d)
    if listing is None:
        return None
    for name, kind in listing:
        child = join(d, name)
        if excluded(child, kind == "dir"):
            continue
        if kind == "file" and child in candidates and not candidates[child].is_dir:
            keys.add(candidates[child].key)
            out.planned.append(child)
        elif kind == "file" and child not in candidates and _carried(name):
            out.unplanned.append(child)
        elif kind == "dir" and child in covered:
            keys.add(covered[child].key)
            out.planned += covered[child].planned
            out.unplanned += covered[child].unplanned
        else:
            return None
        if len(keys) > 1:
            return None
    if not keys:
        return None  # nothing planned below and the directory itself not planned
    out.key = keys.pop()
    out.planned += [d] if own is not None else []
    return out


def list_dir(root: bytes, rel: bytes, dev: int, now: float, most: int | None = None) -> Listing:
    """The entries of directory ``rel`` below ``root``, opened without
    following symlinks; an entry on another device is ``other``; a regular
    file whose mtime is the second ``now`` is in is ``fresh``. None when it
    cannot be read, or holds more than ``most`` entries (then none is stat'ed)."""
    try:
        fd = open_dir(root, rel, dev=dev)
    except OSError:
        return None
    try:
        with os.scandir(fd) as it:
            entries = list(it)
        if most is not None and len(entries) > most:
            return None
        return [(os.fsencode(e.name), _kind(e.stat(follow_symlinks=False), dev, now)) for e in entries]
    except OSError:
        return None
    finally:
        os.close(fd)


def _kind(st: os.stat_result, dev: int, now: float) -> str:
    if st.st_dev != dev:
        return "other"
    if stat.S_ISREG(st.st_mode):
        return "fresh" if same_second(st.st_mtime_ns, now) else "file"
    return "dir" if stat.S_ISDIR(st.st_mode) else "other"


def group_items(
    keyed: list[tuple[Hashable, Item]],
    listdir: Callable[[bytes, int | None], Listing],
    echo: Callable[[bytes], bytes],
    skipped: Callable[[bytes, bool], bool],
) -> list[tuple[Hashable, Item]]:
    """``keyed`` (member key, item) in plan order, with the items of every
    whole planned directory replaced by one group item at the place of the
    first of them. ``echo`` turns a root-relative path into a base-relative
    one; ``skipped`` tells whether makuosan's own walk skips a base-relative
    path (its exclude patterns)."""
    by_path = {it.action.path: it for _, it in keyed if _eligible(it)}
    cands = {p: Candidate(it.is_dir, key) for key, it in keyed if (p := it.action.path) in by_path}
    if len(cands) < MIN_GROUP:
        return keyed
    found = find_groups(cands, listdir, lambda rel, is_dir: skipped(echo(rel), is_dir))
    owner: dict[bytes, Item] = {}
    for d, cover in found.items():
        paths = cover.planned
        prep = prepare(echo(d))
        key = cover.key
        hosts = key if isinstance(key, tuple) else (None,)
        if isinstance(prep, str) or not all(
            fits(prep.token, command_prefix(recursive=True, host=h)) for h in hosts
        ):
            continue
        covered = [by_path[p] for p in paths]
        group = Item(Action(ActionKind.PUT, d), (), Entry(prep.echo, recursive=True), prep.token)
        group.is_dir, group.covered, group.own = True, covered, by_path.get(d)
        group.along = [echo(p) for p in cover.unplanned]
        group.biggest = max(it.biggest for it in covered)  # unplanned files: not fresh, sent alike
        for p in paths:
            owner[p] = group
    out: list[tuple[Hashable, Item]] = []
    placed: set[int] = set()
    for key, it in keyed:
        group = owner.get(it.action.path) if it.action.path in by_path else None
        if group is None:
            out.append((key, it))
        elif id(group) not in placed:
            placed.add(id(group))
            out.append((key, group))
    return out


def _eligible(it: Item) -> bool:
    """A put of an existing regular file or directory sent as itself alone."""
    e = it.entry
    return (
        e is not None
        and it.plain
        and not (e.delete or e.recursive or it.mirror or it.more or it.resend or it.bad)
    )
