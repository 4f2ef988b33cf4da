"""A walk hands half of what it has not reached to another walk, and the two
together list every directory exactly once; a handed-over directory that was
replaced meanwhile is skipped, never walked."""

from __future__ import annotations

import os
from pathlib import Path

from agent.tree.excludes import Excludes
from agent.tree.walk import Walk, root_dev

NONE = Excludes(())


def make_tree(root: Path, tops: int = 6, subs: int = 3) -> set[bytes]:
    dirs = {b""}
    for t in range(tops):
        for s in range(subs):
            (root / f"t{t}" / f"s{s}").mkdir(parents=True)
            (root / f"t{t}" / f"s{s}" / "f").write_bytes(b"x")
            dirs.add(f"t{t}/s{s}".encode())
        dirs.add(f"t{t}".encode())
    return dirs


def listed(walk: Walk) -> list[bytes]:
    return [listing.rel for listing in walk]


def test_split_then_over_lists_every_directory_once(tmp_path: Path) -> None:
    dirs = make_tree(tmp_path)
    root, dev = os.fsencode(tmp_path), root_dev(os.fsencode(tmp_path))
    walk = Walk(root, NONE, dev)
    mine: list[bytes] = []
    handed: list[tuple[bytes, int]] = []
    for listing in walk:
        mine.append(listing.rel)
        if listing.rel == b"":  # the root's subdirectories are pending now
            assert len(walk.pending) == 6
            handed = walk.split()
            assert len(handed) == 3 and len(walk.pending) == 3
    theirs = listed(Walk.over(root, NONE, dev, handed))
    assert sorted(mine + theirs) == sorted(dirs)
    assert not set(mine) & set(theirs)


def test_a_walk_with_fewer_than_two_pending_gives_nothing(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    root = os.fsencode(tmp_path)
    walk = Walk(root, NONE, root_dev(root))
    assert walk.split() == []  # only its start is pending, which no parent listed here
    for listing in walk:
        if listing.rel == b"":
            assert walk.split() == []  # one directory pending stays with the walk
    assert walk.pending == []


def test_a_handed_over_directory_replaced_meanwhile_is_skipped(tmp_path: Path) -> None:
    make_tree(tmp_path, tops=2, subs=1)
    root = os.fsencode(tmp_path)
    dev = root_dev(root)
    walk = Walk(root, NONE, dev)
    for listing in walk:
        if listing.rel == b"":
            handed = walk.split()
            break
    (rel, _ino) = handed[0]
    os.rename(tmp_path / os.fsdecode(rel), tmp_path / "moved-away")
    (tmp_path / os.fsdecode(rel)).mkdir()  # another directory under the same name
    (tmp_path / os.fsdecode(rel) / "s0").mkdir()
    taker = Walk.over(root, NONE, dev, handed)
    assert listed(taker) == []
    assert taker.skipped == [rel]
