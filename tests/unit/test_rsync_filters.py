"""The exclude patterns mean the same to rsync as to the agent: a real rsync
walks a tree with the translated rules, the agent's walker with the
patterns, and both must keep exactly the same paths."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.ship.rsync.filters import exclude_args, exclude_rules
from agent.tree.excludes import Excludes
from agent.tree.walk import Walk, root_dev

PATTERNS = [
    ["*.tmp"],
    ["cache/"],
    ["/top"],
    ["a/b"],
    ["a/**/b"],
    ["**/tmp"],
    ["logs/**"],
    ["x/*.gz", "[0-9]*.log"],
    ["a/**/b/**/c"],
    ["**/deep/"],
    ["?"],
]

FILES = [
    "top", "d/top", "a/x/b", "a/x/y/b", "z/a/b", "b",
    "tmp", "d/tmp", "d/e/tmp/f", "f.tmp", "d/g.tmp",
    "logs/1", "logs/2/3", "x/1.gz", "x/y/1.gz", "1.log", "d/2.log",
    "a/b/c", "a/1/b/2/c", "a/b/x/c", "cache/k", "d/cache/k", "d/cachefile",
    "deep/f", "q/deep/f", "q/r/deep/g", "k", "kk",
]  # fmt: skip


def _tree(root: Path) -> None:
    for rel in FILES:
        path = root / rel
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode())
    (root / "cachefile").write_bytes(b"a file named like the dir-only pattern")


def _ours(root: Path, patterns: list[str]) -> set[bytes]:
    out = set()
    broot = os.fsencode(root)
    for listing in Walk(broot, Excludes(patterns), root_dev(broot)):
        for name in listing.names:
            out.add(listing.rel + b"/" + name if listing.rel else name)
    return out


def _rsync(root: Path, dest: Path, patterns: list[str]) -> set[bytes]:
    argv = [
        "rsync",
        "-r",
        "--dry-run",
        "--out-format=%n",
        *exclude_args(Excludes(patterns)),
        "--",
        f"{root}/",
        str(dest),
    ]
    out = subprocess.run(argv, check=True, capture_output=True).stdout
    return {line.rstrip(b"/") for line in out.splitlines() if line and line != b"./"}


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
@pytest.mark.parametrize("patterns", PATTERNS, ids=lambda p: ",".join(p))
def test_rsync_keeps_exactly_what_the_agent_keeps(tmp_path: Path, patterns: list[str]) -> None:
    root = tmp_path / "src"
    _tree(root)
    assert _rsync(root, tmp_path / "dst", patterns) == _ours(root, patterns)


def test_every_globstar_segment_but_the_last_may_match_nothing() -> None:
    assert exclude_rules(Excludes(["a/**/b"])) == [b"/a/**/b", b"/a/b"]
    assert exclude_rules(Excludes(["logs/**", "cache/", "*.tmp"])) == [b"/logs/**", b"cache/", b"*.tmp"]
