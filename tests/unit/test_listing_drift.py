"""Which directories a recursive PUT must copy again because their listing
moved after the capture."""

from __future__ import annotations

import os
from pathlib import Path

from agent.ship.listing_drift import moved_listings, outermost
from agent.tree.excludes import Excludes
from agent.tree.fsstate import capture_at, capture_in
from agent.tree.walk import Walk, root_dev


def _capture(root: bytes, top: bytes) -> dict:
    dev = root_dev(root)
    states = {top: capture_in(root, top, dev)}
    for listing in Walk(root, Excludes(()), dev, top):
        for name in listing.names:
            rel = listing.rel + b"/" + name if listing.rel else name
            states[rel] = capture_at(listing.fd, name, dev)
    return states


def test_outermost_keeps_only_the_top_of_each_subtree() -> None:
    paths = [b"a", b"a-b", b"a/b", b"a/b/c", b"c/d", b"c/d/e", b"x"]
    assert outermost(paths) == [b"a", b"a-b", b"c/d", b"x"]
    assert outermost([b"a", b""]) == [b""]


def test_an_unmoved_tree_needs_nothing(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f").write_bytes(b"x")
    root = os.fsencode(tmp_path)
    states = _capture(root, b"d")
    (tmp_path / "d" / "e" / "f").write_bytes(b"content only: no listing moved")
    assert moved_listings(root, root_dev(root), [b"d"], states, Excludes(())) == []


def test_a_name_made_and_removed_after_the_capture_moves_its_directory(tmp_path: Path) -> None:
    (tmp_path / "d" / "e" / "g").mkdir(parents=True)
    root = os.fsencode(tmp_path)
    os.utime(tmp_path / "d" / "e", ns=(1, 1))  # so the listing's mtime moves even within one clock tick
    states = _capture(root, b"d")
    (tmp_path / "d" / "e" / "late").write_bytes(b"x")
    (tmp_path / "d" / "e" / "late").unlink()
    (tmp_path / "d" / "e" / "g" / "new").mkdir()
    assert moved_listings(root, root_dev(root), [b"d"], states, Excludes(())) == [b"d/e"]


def test_a_top_that_is_gone_or_no_directory_yields_nothing(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    root = os.fsencode(tmp_path)
    states = _capture(root, b"d")
    (tmp_path / "d").rmdir()
    assert moved_listings(root, root_dev(root), [b"d"], states, Excludes(())) == []
    (tmp_path / "d").write_bytes(b"now a file")
    assert moved_listings(root, root_dev(root), [b"d"], states, Excludes(())) == []
