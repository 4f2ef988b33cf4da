"""The soak's comparer and verdict must see every kind of difference they
claim to check; otherwise a green soak would prove nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.soak.compare import compare, scan
from tests.soak.verdict import disagreements, verify_path

ODD = b"nl\nname \xff"


@pytest.fixture
def pair(tmp_path: Path) -> tuple[bytes, bytes]:
    """A source tree and an identical copy (times, owners, links kept)."""
    src, dst = os.fsencode(tmp_path / "src"), os.fsencode(tmp_path / "dst")
    os.makedirs(src + b"/d")
    for rel, data in ((b"f", b"one"), (b"d/g", b"two"), (ODD, b"odd")):
        with open(src + b"/" + rel, "wb") as fh:
            fh.write(data)
    os.link(src + b"/f", src + b"/d/hard")
    os.symlink(b"../f", src + b"/d/link")
    shutil.copytree(src, dst, symlinks=True)
    os.mkfifo(src + b"/fifo")  # never replicated: the copy has none
    for rel in (b"d", b"f", b"d/g", ODD, b"d/hard"):
        st = os.lstat(src + b"/" + rel)
        os.utime(dst + b"/" + rel, ns=(st.st_atime_ns, st.st_mtime_ns))
    return src, dst


def _whats(src: bytes, dst: bytes, seconds: bool = False) -> dict[bytes, str]:
    return {d.path: f"{d.what} {d.detail}" for d in compare(scan(src), scan(dst), seconds=seconds)}


def test_identical_copy_is_clean(pair: tuple[bytes, bytes]) -> None:
    """Hard links become separate files and the fifo is absent: that is a match."""
    assert _whats(*pair) == {}


def test_every_kind_of_difference_is_seen(pair: tuple[bytes, bytes]) -> None:
    src, dst = pair
    os.chmod(dst + b"/d/g", 0o600)
    os.chown(dst + b"/f", 1234, 1234) if os.geteuid() == 0 else None
    os.utime(dst + b"/d", ns=(0, 5))
    with open(dst + b"/" + ODD, "r+b") as fh:
        fh.write(b"ODD")
    os.unlink(dst + b"/d/link")
    os.symlink(b"elsewhere", dst + b"/d/link")
    os.mkdir(dst + b"/extra")
    os.mkfifo(dst + b"/fifo")
    os.unlink(dst + b"/d/hard")
    found = _whats(src, dst)
    assert "mode" in found[b"d/g"]
    assert "mtime_ns" in found[b"d"]
    assert "content differs" in found[ODD]
    assert "link target" in found[b"d/link"]
    assert found[b"extra"].startswith("extra on the mirror")
    assert found[b"fifo"].startswith("special file replicated")
    assert found[b"d/hard"].startswith("missing on the mirror")
    if os.geteuid() == 0:
        assert "owner" in found[b"f"]


def test_seconds_precision_ignores_nanoseconds_only(pair: tuple[bytes, bytes]) -> None:
    src, dst = pair
    st = os.lstat(src + b"/f")
    os.utime(dst + b"/f", ns=(st.st_atime_ns, st.st_mtime_ns // 10**9 * 10**9 + 1))
    assert b"f" not in _whats(src, dst, seconds=True)
    assert b"f" in _whats(src, dst, seconds=False)
    os.utime(dst + b"/f", ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    assert "mtime_s" in _whats(src, dst, seconds=True)[b"f"]


def test_hard_link_group_that_diverges_on_the_mirror(pair: tuple[bytes, bytes]) -> None:
    """A write through one name that reached the mirror under that name only."""
    src, dst = pair
    with open(src + b"/d/hard", "ab") as fh:
        fh.write(b"+")
    shutil.copy2(src + b"/d/hard", dst + b"/d/hard")
    found = _whats(src, dst)
    assert "hard-linked with d/hard" in found[b"f"]
    assert any("hard-link group differs" in w for w in found.values())


def test_verify_paths_and_verdicts(pair: tuple[bytes, bytes]) -> None:
    """verify's printable paths turn back into bytes; its verdict is held
    against the comparer's both ways, path by path."""
    src, dst = pair
    assert verify_path(repr(os.fsdecode(ODD))) == ODD and verify_path("d/g") == b"d/g"
    tree = scan(src)
    clean = {"clean": True, "local": [], "targets": {"local": {"drift": [], "error": None}}}
    assert disagreements(0, clean, {"local": []}, tree) == []
    os.chmod(dst + b"/d/g", 0o600)
    diffs = {"local": compare(tree, scan(dst))}
    assert any("exit 0 but the comparer found" in p for p in disagreements(0, clean, diffs, tree))
    false = {"clean": False, "local": [], "targets": {"local": {"drift": [{"path": "fifo", "why": "x"}]}}}
    found = disagreements(1, false, {"local": []}, tree)
    assert any("false drift fifo" in p and "special" in p for p in found)
