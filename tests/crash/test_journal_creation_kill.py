"""A SIGKILL while a new journal is created never leaves a journal that later
opens refuse.

LMDB creates ``data.mdb`` and only then writes its meta pages: a kill in
between used to leave an empty file that every later open refused as
truncated, so an agent killed in its first second could never start again.
strace's fault injection delivers the SIGKILL at an exact system call of the
real process: each of the first writes, and the rename that puts a new data
file in place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from journal import Entry, Journal, Op

_CREATE = """
import sys
from journal import Journal
with Journal.open(sys.argv[1], root="/srv/a", tracks=["t"]):
    pass
"""

# What a journal directory holds after an agent opened and closed it.
_JOURNAL_FILES = {"agent.lock", "data.mdb", "intake.lock", "intake.log", "lock.mdb", "manifest.lock"}


def _create_killed_at(jdir: Path, syscall: str, nth: int) -> int:
    strace = shutil.which("strace")
    assert strace, "strace is installed by ops/test"
    inject = ["-e", f"trace={syscall}", "-e", f"inject={syscall}:signal=KILL:when={nth}"]
    proc = subprocess.run(
        [strace, "-f", "-qq", "-o", "/dev/null", *inject, sys.executable, "-c", _CREATE, str(jdir)],
        capture_output=True,
        timeout=60,
    )
    return proc.returncode


@pytest.mark.parametrize(
    ("syscall", "nth"),
    [("pwrite64", n) for n in range(1, 7)] + [("rename", 1), ("fsync", 1), ("fdatasync", 1)],
)
def test_a_journal_killed_while_created_opens_again(tmp_path: Path, syscall: str, nth: int) -> None:
    jdir = tmp_path / "j"
    _create_killed_at(jdir, syscall, nth)
    with Journal.open(jdir, root="/srv/a", tracks=["t"]) as j:
        j.append([Entry(Op.CHANGE, b"f")])
        assert [r.entry.path for r in j.pending("t")] == [b"f"]
    assert set(os.listdir(jdir)) <= _JOURNAL_FILES, "what an interrupted creation left is cleared"
    with Journal.open(jdir, mode="read") as j:
        assert [r.entry.path for r in j.pending("t")] == [b"f"]


def test_the_first_write_of_a_new_data_file_is_really_killed(tmp_path: Path) -> None:
    """The injection works: killed at the data file's first write, the process dies."""
    assert _create_killed_at(tmp_path / "j", "pwrite64", 2) != 0
