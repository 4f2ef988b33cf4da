"""Excluded paths never travel, however a directory goes out.

Every shipper takes the exclude patterns when it is built. A directory that
goes out recursively (moved within the tree, ``agent replay`` of a
directory, ``verify --repair``) must not carry excluded entries, and what
a mirror holds at an excluded path is its own: neither overwritten nor
deleted (the patterns are in tests/contract/conftest.py: ``*.tmp``,
``cache/``, ``/top-only``, ``a/b``)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.contract.conftest import Rig


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _names(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


def test_a_recursive_put_carries_no_excluded_entry(excluding_rig: Rig) -> None:
    rig = excluding_rig
    d = rig.root / "d"
    _write(d / "page.html", b"carried\n")
    _write(d / "draft.tmp", b"excluded by *.tmp\n")
    _write(d / "cache" / "blob", b"excluded with its directory\n")
    _write(d / "sub" / "deep.tmp", b"excluded at any depth\n")
    _write(d / "sub" / "keep", b"carried\n")
    _write(d / "top-only", b"anchored at the root only: carried here\n")
    _write(d / "cachefile", b"cache/ names directories only: carried\n")
    _write(d / "a" / "b", b"a/b is anchored at the root: carried here\n")
    rig.put_ok(b"d", recursive=True)
    want = {"page.html", "sub", "sub/keep", "top-only", "cachefile", "a", "a/b"}
    for mirror in rig.mirrors:
        assert _names(mirror / "d") == want, mirror
        assert (mirror / "d" / "sub" / "keep").read_bytes() == b"carried\n"


def test_a_recursive_put_keeps_what_a_mirror_holds_at_excluded_paths(excluding_rig: Rig) -> None:
    rig = excluding_rig
    _write(rig.root / "d" / "page.html", b"v1\n")
    rig.put_ok(b"d", recursive=True)
    for mirror in rig.mirrors:
        _write(mirror / "d" / "local.tmp", b"the mirror's own\n")
        _write(mirror / "d" / "cache" / "warm", b"the mirror's own cache\n")
        _write(mirror / "d" / "stale.html", b"not in the source: goes\n")
    _write(rig.root / "d" / "page.html", b"v2, longer\n")
    _write(rig.root / "d" / "local.tmp", b"the source's: never sent\n")
    rig.put_ok(b"d", recursive=True)
    for mirror in rig.mirrors:
        assert (mirror / "d" / "page.html").read_bytes() == b"v2, longer\n"
        assert (mirror / "d" / "local.tmp").read_bytes() == b"the mirror's own\n"
        assert (mirror / "d" / "cache" / "warm").read_bytes() == b"the mirror's own cache\n"
        assert not (mirror / "d" / "stale.html").exists()
