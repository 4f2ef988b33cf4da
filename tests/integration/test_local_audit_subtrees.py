"""``agent verify``'s tree audit reads the manifest one directory at a time:
paths missing below a gone directory, below a directory that is a file now,
and long paths are all reported, each once; siblings whose keys sort around
the directory's subtree are judged as themselves."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.operate.verify import local_audit
from agent.tree.excludes import Excludes
from tests.integration import test_scanner_journal as test_scanner
from tests.integration.test_scanner_journal import Env

LONG = b"L" * 250


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """The scanner tests' tree, journal and manifest."""
    yield from test_scanner.env.__wrapped__(tmp_path)


def audit(env: Env) -> dict[bytes, str]:
    findings, _ = local_audit(env.rootb, env.journal, Excludes(()))
    assert len(findings) == len({f.path for f in findings})
    return {f.path: f.why for f in findings}


def test_clean_tree_has_no_findings(env: Env) -> None:
    for d in (b"a", b"a!b", b"a0", b"a/" + LONG):
        os.makedirs(env.path(d))
        env.write(d + b"/x", d)
    env.mirror()
    assert audit(env) == {}


def test_missing_subtrees_and_a_directory_now_a_file(env: Env) -> None:
    """Each path below a gone directory is missing, the long one too; a
    directory that is a file now differs in type and loses its children."""
    for d in (b"a", b"a!b", b"a0", b"a/" + LONG, b"gone/sub"):
        os.makedirs(env.path(d), exist_ok=True)
        env.write(d + b"/x", d)
    env.mirror()
    shutil.rmtree(env.path(b"gone"))
    shutil.rmtree(env.path(b"a"))
    env.write(b"a", b"a file now")
    env.write(b"a0/x", b"changed")
    got = audit(env)
    assert got[b"a"].startswith("type is file, manifest says dir")
    assert got[b"a0/x"].startswith("content differs")
    missing = {p for p, why in got.items() if why.startswith("in the manifest, missing on disk")}
    assert missing == {
        b"a/x",
        b"a/" + LONG,
        b"a/" + LONG + b"/x",
        b"gone",
        b"gone/sub",
        b"gone/sub/x",
    }
    assert set(got) == missing | {b"a", b"a0/x"}
