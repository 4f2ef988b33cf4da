"""The scanner reads the manifest one directory at a time: what it finds must
not depend on where a directory's subtree sits among its siblings' keys, on a
directory that stopped being one, or on a gone subtree larger than one read."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.scan.scanner import Scanner
from agent.tree.excludes import Excludes
from agent.tree.walk import Walk
from journal import IS_DIR, Op
from tests.integration import test_scanner_journal as test_scanner
from tests.integration.test_scanner_journal import Env, paths

LONG = b"L" * 250


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """The scanner tests' tree, journal and manifest."""
    yield from test_scanner.env.__wrapped__(tmp_path)


def deletes_in_order(entries: list) -> list[bytes]:
    return [e.path for e in entries if e.op == Op.DELETE]


def children_first(order: list[bytes]) -> bool:
    return all(order.index(p) > order.index(c) for c in order for p in order if c.startswith(p + b"/"))


@pytest.mark.parametrize("full", [False, True])
def test_names_around_the_slash_are_matched_exactly(env: Env, full: bool) -> None:
    """Siblings "a", "a!b" (sorts before "a/") and "a0" (after it), each a
    directory with children: unchanged they are not suspects; a change and a
    delete in each are found exactly, nothing of a sibling."""
    for d in (b"a", b"a!b", b"a0", b"a/a", b"a/a!b"):
        os.mkdir(env.path(d))
        for f in (b"x", b"y"):
            env.write(d + b"/" + f, d + f)
    env.mirror()
    since = env.settle()
    report, entries = env.scan(None if full else since)
    assert (entries, report.suspects, report.hashed) == ([], 0, 0)
    for d in (b"a", b"a!b", b"a0", b"a/a!b"):
        env.write(d + b"/x", b"changed " + d)
        os.unlink(env.path(d + b"/y"))
    _, entries = env.scan(None if full else since)
    want = {b"a", b"a!b", b"a0", b"a/a!b"}  # their mtimes moved with the delete
    assert set(paths(entries, Op.CHANGE)) == want | {d + b"/x" for d in want}
    assert set(deletes_in_order(entries)) == {d + b"/y" for d in want}


def test_directory_replaced_by_a_file_loses_its_children(env: Env) -> None:
    """A directory that is a file now: the file is a change, every path the
    manifest holds below it a delete, children first."""
    os.makedirs(env.path(b"d/sub"))
    env.write(b"d/sub/f", b"f")
    env.write(b"d/g", b"g")
    env.write(b"d!", b"sibling")
    env.mirror()
    since = env.settle()
    shutil.rmtree(env.path(b"d"))
    env.write(b"d", b"now a file")
    _, entries = env.scan(since)
    assert b"d" in paths(entries, Op.CHANGE)
    order = deletes_in_order(entries)
    assert sorted(order) == [b"d/g", b"d/sub", b"d/sub/f"] and children_first(order)
    assert all(e.flags == (IS_DIR if e.path == b"d/sub" else 0) for e in entries if e.op == Op.DELETE)


def test_gone_subtree_larger_than_one_read(env: Env) -> None:
    """A gone tree of 2,500 paths (and a long path in it) is deleted whole,
    children before parents; a sibling sharing its prefix is left alone."""
    for i in range(5):
        os.makedirs(env.path(b"big/s%d" % i))
        for j in range(500):
            env.write(b"big/s%d/f%03d" % (i, j), b"x")
    os.mkdir(env.path(b"big/" + LONG))
    env.write(b"big/" + LONG + b"/" + LONG, b"long")
    env.write(b"big0", b"sibling")
    env.mirror()
    since = env.settle()
    shutil.rmtree(env.path(b"big"))
    report, entries = env.scan(since)
    order = deletes_in_order(entries)
    assert len(order) == len(set(order)) == 2500 + 5 + 2 + 1
    assert b"big0" not in order and b"big/" + LONG + b"/" + LONG in order
    assert children_first(order) and order[-1] == b"big"
    assert report.enqueued_deletes == len(order)


def test_directory_vanishing_before_it_is_opened_loses_its_children(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed by its parent, gone when the walk opens it: what the manifest
    holds below it is deleted (the directory itself is left to the watcher)."""
    since = env.settle()
    real = Walk._open

    def vanish(self: Walk, rel: bytes, ino: int | None) -> int | None:
        if rel == b"docs/deep":
            shutil.rmtree(os.path.join(self.root, rel))
        return real(self, rel, ino)

    monkeypatch.setattr(Walk, "_open", vanish)
    _, entries = env.scan(since)
    assert deletes_in_order(entries) == [b"docs/deep/c.bin"]


def test_subtree_scan_of_a_gone_directory_deletes_it_and_below(env: Env) -> None:
    """``scan_subtree`` of a directory gone from disk: it and everything
    below it, children first; nothing outside it."""
    os.unlink(env.path(b"a.txt"))
    shutil.rmtree(env.path(b"docs"))
    first = env.journal.last_seq() + 1
    Scanner(env.root, env.journal, Excludes(()), slack_ns=0).scan_subtree(b"docs")
    order = [r.entry.path for r in env.journal.since(seq=first)]
    assert sorted(order) == [b"docs", b"docs/b.txt", b"docs/deep", b"docs/deep/c.bin"]
    assert children_first(order)


def test_excluded_subtree_keeps_its_entries(env: Env) -> None:
    """A directory that is excluded now is not gone: nothing below it is deleted."""
    os.makedirs(env.path(b"cache/x"))
    env.write(b"cache/x/f", b"f")
    env.mirror()
    since = env.settle()
    _, entries = env.scan(since, excludes=("cache/",))
    assert deletes_in_order(entries) == []
