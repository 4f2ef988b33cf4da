"""Bad journals through the CLI: a clear error, exit 2, and nothing overwritten."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
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


def _state(d: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file of ``d`` (lock files too) with its mode, owner and bytes, and
    the directory's own mode and owner."""
    out = {}
    for p in [d, *d.iterdir()]:
        st = p.lstat()
        out[p.name] = (st.st_mode, st.st_uid, b"" if p == d else p.read_bytes())
    return out


COMMANDS = [["run"], ["status"], ["verify", "--target", "local:/nonexistent"], ["scan"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("mode", "words", "hint"),
    [
        (0o770, b"writable by group", b"chmod go-w"),
        (0o703, b"writable by others", b"chmod go-w"),
        (0o1777, b"writable by group and others", b"chmod go-w"),
    ],
    ids=["group", "others", "sticky-world"],
)
def test_journal_writable_by_others(
    journal: Path, tmp_path: Path, command: list[str], mode: int, words: bytes, hint: bytes
) -> None:
    """A journal directory others may write is refused by every command,
    before anything in it is opened or changed."""
    journal.chmod(mode)
    before = _state(journal)
    res = _agent(*command, "--root", str(tmp_path / "src"), "--journal", str(journal))
    _assert_refused(res, words)
    assert hint + b" " + str(journal).encode() in res.stderr
    assert _state(journal) == before


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_journal_owned_by_another_user(journal: Path, tmp_path: Path, command: list[str]) -> None:
    """A journal directory owned by another (non-root) user is refused; the
    hint names the chown that makes it this user's."""
    os.chown(journal, 54321, 54321, follow_symlinks=False)
    before = _state(journal)
    res = _agent(*command, "--root", str(tmp_path / "src"), "--journal", str(journal))
    _assert_refused(res, b"owned by uid 54321")
    assert f"chown {os.geteuid()} {journal}".encode() in res.stderr
    assert _state(journal) == before


def test_new_journal_is_created_private(tmp_path: Path) -> None:
    """A journal the agent creates is a 0700 directory whatever the umask."""
    (tmp_path / "src").mkdir()
    res = _agent("scan", "--root", str(tmp_path / "src"), "--journal", str(tmp_path / "new" / "j"))
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE((tmp_path / "new" / "j").stat().st_mode) == 0o700


def test_every_journal_file_private_after_a_real_agent(tmp_path: Path) -> None:
    """Run with umask 0, the agent still leaves the journal a 0700 directory
    of 0600 files (data, locks, intake, runtime counters)."""
    src, jdir, mirror = tmp_path / "src", tmp_path / "j", tmp_path / "mirror"
    src.mkdir()
    mirror.mkdir()
    (src / "f").write_bytes(b"x")
    args = ["run", "--root", str(src), "--journal", str(jdir), "--target", f"local:{mirror}"]
    proc = subprocess.Popen([AGENT, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, umask=0)
    try:
        deadline = time.monotonic() + 60
        while not ((jdir / "runtime.json").exists() and (mirror / "f").exists()):
            assert proc.poll() is None and time.monotonic() < deadline, "agent did not start"
            time.sleep(0.05)
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
    names = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in jdir.iterdir()}
    assert {"data.mdb", "lock.mdb", "intake.log", "intake.lock", "agent.lock", "runtime.json"} <= set(names)
    assert names == dict.fromkeys(names, 0o600)
    assert stat.S_IMODE(jdir.stat().st_mode) == 0o700
