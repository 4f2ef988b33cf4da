"""The comparison every contract test relies on must itself catch drift."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.helpers.trees import assert_trees_equal, diff_trees
from tests.helpers.wait import WaitTimeout, wait_until


def _tree(base) -> None:
    (base / "d").mkdir(parents=True)
    (base / "d" / "f").write_bytes(b"content")
    os.symlink(b"d/f", base / "l")
    with open(os.fsencode(base) + b"/\xff\n", "wb") as f:
        f.write(b"odd")


@pytest.mark.parametrize(
    "drift",
    ["content", "mode", "link", "type", "extra", "missing", "mtime"],
)
def test_each_kind_of_drift_is_reported(tmp_path, drift: str) -> None:
    """Content, mode, symlink target, type, extra/missing entries and mtime."""
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a)
    shutil.copytree(a, b, symlinks=True)
    for src, dst in ((a / "d" / "f", b / "d" / "f"), (a / "d", b / "d")):
        st = os.lstat(src)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert diff_trees(a, b, mtime=True) == []
    if drift == "content":
        (b / "d" / "f").write_bytes(b"CONTENT")
    elif drift == "mode":
        os.chmod(b / "d" / "f", 0o600)
    elif drift == "link":
        os.unlink(b / "l")
        os.symlink(b"d", b / "l")
    elif drift == "type":
        os.unlink(b / "l")
        (b / "l").write_bytes(b"d/f")
    elif drift == "extra":
        (b / "d" / "new").write_bytes(b"")
    elif drift == "missing":
        os.unlink(os.fsencode(b) + b"/\xff\n")
    else:
        os.utime(b / "d" / "f", ns=(0, 1))
    with pytest.raises(AssertionError):
        assert_trees_equal(a, b, mtime=True, dir_mtime=False)


def test_wait_until_returns_value_or_times_out() -> None:
    """wait_until hands back the truthy value, and fails when none comes."""
    calls = []
    assert wait_until(lambda: calls.append(1) or (len(calls) >= 3 and "done"), 5, 0.001) == "done"
    with pytest.raises(WaitTimeout):
        wait_until(lambda: False, 0.05, 0.01)
