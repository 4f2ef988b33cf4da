"""The exclude patterns mean the same to makuosan as to the agent: with the
translated patterns, makuosan's own matching (as its source does it, which
the msync double reproduces) skips exactly the paths the agent skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.ship.msync.filters import GLOBSTAR_DEPTH, makuosan_patterns
from agent.tree.excludes import Excludes
from tests.doubles.double_daemon import _suffix_match
from tests.unit.test_rsync_filters import PATTERNS, _tree

ROOT = b"/srv/we*b [1]/root"  # wildcards in the root's own path must not act as wildcards


def _paths(top: Path) -> list[tuple[bytes, bool]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        rel = os.path.relpath(dirpath, top)
        for name in dirnames + filenames:
            path = os.path.join(rel, name) if rel != "." else name
            out.append((os.fsencode(path), name in dirnames))
    return out


def _makuosan_skips(rel: bytes, is_dir: bool, patterns: list[bytes], dirs: set[bytes]) -> bool:
    """makuosan's walk: an entry is skipped when it, or a directory above it
    (which the walk then never entered), matches."""
    parts = rel.split(b"/")
    for i in range(1, len(parts) + 1):
        sub = b"/".join(parts[:i])
        full = ROOT + b"/" + sub
        names = [full, full + b"/"] if (sub in dirs or (i == len(parts) and is_dir)) else [full]
        if any(_suffix_match(n, p) for n in names for p in patterns):
            return True
    return False


@pytest.mark.parametrize("patterns", PATTERNS, ids=lambda p: ",".join(p))
def test_makuosan_skips_what_the_agent_skips(tmp_path: Path, patterns: list[str]) -> None:
    """Never more (a path the agent ships must never be skipped by makuosan's
    own walks), and less only where makuosan gives up: it tries a pattern on
    a path's tails only while they are at least as long as the pattern, so
    ``[0-9]*.log`` never excludes ``1.log`` (docs/msync.md)."""
    _tree(tmp_path)
    entries = _paths(tmp_path)
    dirs = {rel for rel, is_dir in entries if is_dir}
    translated = makuosan_patterns(patterns, ROOT)
    agent = Excludes(patterns)
    for rel, is_dir in entries:
        theirs, ours = _makuosan_skips(rel, is_dir, translated, dirs), agent.match(rel, is_dir)
        assert not (theirs and not ours), (rel, translated)
        if ours and not theirs:
            shortest = min(len(p) for p in translated)
            assert any(len(part) < shortest for part in rel.split(b"/")), (rel, translated)


def test_an_inner_globstar_reaches_a_bounded_depth() -> None:
    translated = makuosan_patterns(["a/**/b"], b"/r")
    assert translated[0] == b"/r/a/b" and len(translated) == GLOBSTAR_DEPTH + 1
    assert makuosan_patterns(["**/tmp", "logs/**", "*.swp"], b"/r") == [b"tmp", b"/r/logs/*", b"*.swp"]
