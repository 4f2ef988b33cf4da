"""Capturing what was shipped never reads outside the tree: a moved-in
directory or a parent component swapped for a symlink to a foreign tree
before the capture leaves nothing of that tree in the manifest, on the
mirror, or in a later scan's DELETEs. Real journal, real files, real
LocalShipper and Scanner."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.operate.config import LocalTarget
from agent.scan.scanner import Scanner
from agent.ship.local.shipper import LocalShipper
from agent.ship.replayer import Replayer
from agent.tree.excludes import Excludes
from journal import IS_DIR, Entry, Journal, Op
from tests.integration.test_replayer_local import TRACK, Rig, make_rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from make_rig(tmp_path, tmp_path / "mirror")


def create(path: bytes, data: bytes) -> None:
    """A new file; never written through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def foreign_tree(top: Path) -> set[bytes]:
    """A directory outside the root, full of files; returns their names."""
    names = set()
    for d in (b"", b"sub", b"sub/deeper"):
        os.makedirs(os.path.join(os.fsencode(top), d), exist_ok=True)
        for i in range(20):
            name = (d + b"/" if d else b"") + b"foreign%d" % i
            create(os.path.join(os.fsencode(top), name), b"outside the root " + name)
            names.add(name)
    return names


def manifest_paths(rig: Rig) -> set[bytes]:
    return {p for p, _ in rig.journal.manifest_items()}


def mirror_files(rig: Rig) -> set[bytes]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(rig.mirror):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), rig.mirror))
    return out


def scan_deletes(rig: Rig) -> list[bytes]:
    before = rig.journal.last_seq()
    Scanner(rig.root, rig.journal, Excludes(())).scan(since_ns=None)
    return [r.entry.path for r in rig.journal.since(seq=before + 1) if r.entry.op == Op.DELETE]


def test_moved_in_directory_swapped_for_a_symlink(rig: Rig, tmp_path: Path) -> None:
    """The directory arrives by a move, then becomes a link to a foreign tree
    before the replayer captures it: nothing of that tree is read."""
    foreign = foreign_tree(tmp_path / "outside")
    os.mkdir(rig.path(b"incoming"))
    rig.log(Entry(Op.MOVE, b"elsewhere", b"incoming", flags=IS_DIR))
    os.rmdir(rig.path(b"incoming"))
    os.symlink(os.fsencode(tmp_path / "outside"), rig.path(b"incoming"))
    rig.drain()
    assert manifest_paths(rig) <= {b"", b"incoming"}
    assert rig.journal.manifest_get(b"incoming").link == os.fsencode(tmp_path / "outside")
    assert not any(p.endswith(tuple(foreign)) for p in mirror_files(rig))
    assert rig.pending() == []
    assert scan_deletes(rig) == []


def test_parent_component_swapped_for_a_symlink(rig: Rig, tmp_path: Path) -> None:
    """A file's parent directory is replaced by a link to a foreign tree
    holding the same names: the file is captured as absent, not as the
    foreign file, and the mirror gets no foreign content."""
    foreign_tree(tmp_path / "outside")
    os.makedirs(rig.path(b"d/sub"))
    create(rig.path(b"d/sub/foreign0"), b"inside")
    rig.log((Op.CHANGE, b"d"), (Op.CHANGE, b"d/sub"), (Op.CHANGE, b"d/sub/foreign0"))
    rig.drain()
    inside = rig.journal.manifest_get(b"d/sub/foreign0")
    assert inside is not None and inside.size == len(b"inside")

    os.rename(rig.path(b"d"), os.fsencode(tmp_path / "d-away"))
    os.symlink(os.fsencode(tmp_path / "outside"), rig.path(b"d"))
    rig.log(Entry(Op.CHANGE, b"d/sub/foreign0"), Entry(Op.CHANGE, b"d/sub/foreign1"))
    rig.drain()
    for rel in (b"d/sub/foreign0", b"d/sub/foreign1"):
        state = rig.journal.manifest_get(rel)
        assert state is None or state.size == len(b"inside"), rel
    if os.path.lexists(rig.mirror + b"/d/sub/foreign0"):
        with open(rig.mirror + b"/d/sub/foreign0", "rb") as f:
            assert f.read() == b"inside"
    assert not os.path.lexists(rig.mirror + b"/d/sub/foreign1")
    assert rig.pending() == [] and rig.journal.dead_letters(TRACK) == []


def test_a_root_given_through_a_symlink_is_followed_once(tmp_path: Path) -> None:
    """The configured root may itself be a symlink: it is trusted, so moved-in
    trees below it are captured as usual."""
    (tmp_path / "real" / "incoming" / "sub").mkdir(parents=True)
    create(os.fsencode(tmp_path / "real" / "incoming" / "sub" / "f"), b"inside")
    os.symlink(tmp_path / "real", tmp_path / "root")
    with Journal.open(tmp_path / "journal", root=str(tmp_path / "root"), tracks=[TRACK]) as journal:
        shipper = LocalShipper(LocalTarget(TRACK, tmp_path / "mirror"), tmp_path / "root")
        try:
            journal.append([Entry(Op.MOVE, b"elsewhere", b"incoming", flags=IS_DIR)])
            Replayer(journal, shipper, tmp_path / "root", settle_s=0.0).step()
        finally:
            shipper.close()
        assert journal.manifest_get(b"incoming/sub/f").size == len(b"inside")
        assert {p for p, _ in journal.manifest_items()} >= {b"incoming", b"incoming/sub", b"incoming/sub/f"}
