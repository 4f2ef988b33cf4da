"""The soak writer runs as root among symlinks it made to places outside its
tree: it must never write, open, chmod, chown, truncate, utime or delete
through one. Each primitive is tried on a link (and through a linked
directory) to an outside canary, and the random writer runs long among such
links; the outside stays byte for byte and stat for stat the same."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.soak.compare import scan
from tests.soak.safefs import SafeTree
from tests.soak.writer import Writer


def _outside_state(outside: Path) -> tuple:
    st = os.lstat(outside)
    return scan(outside), (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_nlink)


@pytest.fixture
def rig(tmp_path: Path) -> tuple[SafeTree, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "canary").write_bytes(b"keep me\n")
    (outside / "sub").mkdir()
    os.symlink(outside / "canary", root / "flink")
    os.symlink(outside, root / "dlink")
    os.mkfifo(root / "fifo")
    return SafeTree(root), outside


PRIMITIVES = {
    "write": lambda t, p: t.write(p, b"x"),
    "append": lambda t, p: t.write(p, b"x", append=True),
    "write_mkdirs": lambda t, p: t.write(p + b"/new", b"x", create_dirs=True),
    "truncate": lambda t, p: t.truncate(p, 0),
    "rewrite": lambda t, p: t.rewrite_same_size(p, b"zzzz"),
    "chmod": lambda t, p: t.chmod(p, 0o777),
    "chown": lambda t, p: t.chown(p, 1234, 1234),
    "utime": lambda t, p: t.utime(p, 10**9),
    "mkdir_p": lambda t, p: t.mkdir_p(p + b"/a/b"),
}


@pytest.mark.parametrize("op", sorted(PRIMITIVES))
@pytest.mark.parametrize("path", [b"flink", b"dlink", b"dlink/canary", b"dlink/sub", b"fifo"])
def test_primitive_refuses_links(rig: tuple[SafeTree, Path], op: str, path: bytes) -> None:
    """On a link, below a linked directory, or a fifo for content: refused, outside untouched."""
    tree, outside = rig
    before = _outside_state(outside)
    if path == b"fifo" and op in ("chmod", "chown", "utime"):
        pytest.skip("metadata of a fifo is a legitimate change in the tree")
    with pytest.raises(OSError):
        PRIMITIVES[op](tree, path)
    assert _outside_state(outside) == before


def test_remove_rename_link_act_on_the_link(rig: tuple[SafeTree, Path]) -> None:
    """Deleting, renaming and hard-linking a symlink touch the link, never its target."""
    tree, outside = rig
    before = _outside_state(outside)
    tree.link(b"flink", b"hard")
    assert os.path.islink(tree.root + b"/hard")
    tree.rename(b"dlink", b"moved")
    tree.remove(b"moved")
    tree.remove(b"flink")
    with pytest.raises(OSError):
        tree.remove(b"dlink/canary")
    assert _outside_state(outside) == before


@pytest.mark.parametrize("seed", range(2))
def test_random_writer_never_touches_outside(rig: tuple[SafeTree, Path], seed: int) -> None:
    """Thousands of random operations among links into ``outside``: it stays as it was."""
    tree, outside = rig
    before = _outside_state(outside)
    writer = Writer(tree.root, random.Random(seed), os.fsencode(outside))
    for _ in range(700):
        writer.step()
    assert _outside_state(outside) == before
    assert writer.counts["symlink"] + writer.counts["retarget"] > 0  # links were among the choices


def test_writer_replays_per_seed(tmp_path: Path) -> None:
    """The same seed on the same starting tree gives the same operations and tree."""
    outcomes = []
    for run in ("a", "b"):
        root, outside = tmp_path / run, tmp_path / f"{run}-outside"
        root.mkdir()
        outside.mkdir()
        writer = Writer(root, random.Random(7), b"/nonexistent-outside")
        ops = [writer.step() for _ in range(400)]
        tree = {p: (n.kind, n.mode, n.uid, n.gid, n.data) for p, n in scan(root).items()}
        outcomes.append((ops, tree))
    assert outcomes[0] == outcomes[1]


def test_a_carriable_writer_never_repeats_a_size_within_a_second(tmp_path: Path) -> None:
    """msync members skip a file whose size and mtime second they hold: in
    msync seeds no two content writes of one wall-clock second (or the one
    before) share a size, whatever the seed draws; other seeds are untouched."""
    (tmp_path / "o").mkdir()
    carriable = Writer(tmp_path / "a", random.Random(1), tmp_path / "o", carriable=True)
    sizes = [carriable._fresh_size(300) for _ in range(50)]
    assert len(set(sizes)) == len(sizes) and min(sizes) == 300
    plain = Writer(tmp_path / "b", random.Random(1), tmp_path / "o")
    assert {plain._fresh_size(300) for _ in range(5)} == {300}
