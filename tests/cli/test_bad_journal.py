"""Bad journals through the CLI: a clear error, exit 2, and nothing overwritten."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

AGENT = str(Path(sys.executable).with_name("agent"))


def _agent(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([AGENT, *args], capture_output=True, timeout=60)


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    """A real journal for ``tmp_path/src``, created by ``agent scan``."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x")
    res = _agent("scan", "--root", str(tmp_path / "src"), "--journal", str(tmp_path / "j"))
    assert res.returncode == 0, res.stderr
    return tmp_path / "j"


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.name not in ("lock.mdb", "agent.lock")}


def _assert_refused(res: subprocess.CompletedProcess[bytes], words: bytes) -> None:
    assert res.returncode == 2, res
    assert res.stderr.startswith(b"error: ") and words in res.stderr
    assert b"hint: " in res.stderr
    assert b"Traceback" not in res.stderr


@pytest.mark.parametrize(
    "command", [["run"], ["status"], ["verify", "--target", "local:/nonexistent"], ["scan"]]
)
def test_truncated_journal(journal: Path, tmp_path: Path, command: list[str]) -> None:
    """A truncated data.mdb is refused by every command and left as it was."""
    data = journal / "data.mdb"
    with open(data, "r+b") as f:
        f.truncate(8192)
    before = _snapshot(journal)
    res = _agent(*command, "--root", str(tmp_path / "src"), "--journal", str(journal))
    _assert_refused(res, b"truncated")
    assert _snapshot(journal) == before


def test_directory_holding_something_else(tmp_path: Path) -> None:
    """A non-empty directory that is not a journal is never written to."""
    (tmp_path / "src").mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_bytes(b"keep me")
    res = _agent("run", "--root", str(tmp_path / "src"), "--journal", str(other))
    _assert_refused(res, b"holds no journal")
    assert sorted(p.name for p in other.iterdir()) == ["precious.txt"]


def test_journal_of_another_root(journal: Path, tmp_path: Path) -> None:
    """A journal made for one root refuses another root."""
    (tmp_path / "elsewhere").mkdir()
    before = _snapshot(journal)
    res = _agent("run", "--root", str(tmp_path / "elsewhere"), "--journal", str(journal))
    _assert_refused(res, b"belongs to root")
    assert _snapshot(journal) == before


def test_future_schema(journal: Path, tmp_path: Path) -> None:
    """A journal written by a future schema is refused, not converted."""
    env = lmdb.open(str(journal), max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"schema", b"99", db=meta)
    env.close()
    before = _snapshot(journal)
    res = _agent("run", "--root", str(tmp_path / "src"), "--journal", str(journal))
    _assert_refused(res, b"schema")
    assert _snapshot(journal) == before
