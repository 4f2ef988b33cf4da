"""Refused opens: foreign, other root, future schema, truncated, full disk.
Each is a clear error and leaves the directory's data as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import lmdb
import pytest

from journal import (
    Entry,
    Journal,
    JournalCorrupt,
    JournalError,
    NotAJournal,
    Op,
    SchemaMismatch,
    WrongRoot,
    _pages,
)

from ._util import run_child


def _snapshot(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _journal(jdir: Path, n: int = 20) -> None:
    with Journal.open(jdir, root="/srv/a", tracks=["t"]) as j:
        j.append([Entry(Op.CHANGE, b"f%d" % i) for i in range(n)])


def test_directory_with_other_files_is_not_a_journal(tmp_path: Path) -> None:
    """A non-empty directory without a journal is refused and left as it was."""
    d = tmp_path / "j"
    d.mkdir()
    (d / "notes.txt").write_bytes(b"keep me\n")
    before = _snapshot(d)
    for mode in ("agent", "client", "read"):
        with pytest.raises(NotAJournal):
            Journal.open(d, mode=mode)
    assert _snapshot(d) == before


def test_foreign_lmdb_is_not_a_journal(tmp_path: Path) -> None:
    """Another program's LMDB environment is refused before anything is written."""
    d = tmp_path / "j"
    env = lmdb.open(str(d), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"someone", b"else")
    env.close()
    (d / "lock.mdb").unlink()
    before = _snapshot(d)
    with pytest.raises(NotAJournal):
        Journal.open(d)
    assert _snapshot(d) == before


def test_file_instead_of_directory(tmp_path: Path) -> None:
    """A regular file where the journal should be is refused."""
    f = tmp_path / "j"
    f.write_bytes(b"x")
    with pytest.raises(NotAJournal):
        Journal.open(f)
    assert f.read_bytes() == b"x"


def test_missing_journal_in_read_mode(tmp_path: Path) -> None:
    """Read mode never creates a journal."""
    with pytest.raises(NotAJournal):
        Journal.open(tmp_path / "j", mode="read")
    assert not (tmp_path / "j").exists()


def test_other_root_is_refused(tmp_path: Path) -> None:
    """A journal made for one root refuses another, in every mode."""
    _journal(tmp_path / "j")
    before = _snapshot(tmp_path / "j")
    for mode in ("agent", "client", "read"):
        with pytest.raises(WrongRoot):
            Journal.open(tmp_path / "j", root="/srv/b", mode=mode)
    assert _snapshot(tmp_path / "j")["data.mdb"] == before["data.mdb"]
    with Journal.open(tmp_path / "j", root="/srv/a/") as j:
        assert j.last_seq() == 20


def test_future_schema_is_refused(tmp_path: Path) -> None:
    """A journal written by schema 99 raises SchemaMismatch and stays untouched."""
    _journal(tmp_path / "j")
    result = run_child("set_schema", str(tmp_path / "j"), "99")
    assert result.stdout.strip() == "ok", result.stderr
    before = _snapshot(tmp_path / "j")["data.mdb"]
    for mode in ("agent", "client", "read"):
        with pytest.raises(SchemaMismatch, match="99"):
            Journal.open(tmp_path / "j", mode=mode)
    assert _snapshot(tmp_path / "j")["data.mdb"] == before


@pytest.mark.parametrize("keep", [0, 100, 4096, 3 * 4096 + 10, -4096])
def test_truncated_data_file_is_corrupt(tmp_path: Path, keep: int) -> None:
    """A truncated data.mdb raises JournalCorrupt (no SIGBUS) and is not modified."""
    _journal(tmp_path / "j", n=2000)
    data = tmp_path / "j" / "data.mdb"
    raw = data.read_bytes()
    cut = raw[:keep]
    assert len(cut) < len(raw)
    data.write_bytes(cut)
    for mode in ("agent", "client", "read"):
        with pytest.raises(JournalCorrupt):
            Journal.open(tmp_path / "j", mode=mode)
    assert data.read_bytes() == cut


def test_unwritten_free_tail_is_not_truncation(tmp_path: Path) -> None:
    """LMDB may end the file before ``last_pgno`` when the pages past its end
    are free (allocated and freed in one transaction, never written): such a
    journal opens and reads in every mode; cutting a page in use is damage.

    Which layout compaction leaves varies from run to run (set order follows
    the hash seed), so the tail is made the way LMDB makes it: the free pages
    at the end of the file are cut off. A reader in a child process then
    reads everything: had a cut page been in use, it would die of SIGBUS."""
    jdir = tmp_path / "j"
    data = jdir / "data.mdb"
    with Journal.open(jdir, root="/srv/a", tracks=["t"]) as j:
        for round_ in range(20):
            base = j.last_seq()
            j.append([Entry(Op.CHANGE, b"c/f%d" % (i + round_)) for i in range(4196)])
            j.mark_done("t", range(1, base + 4137 + round_))
            assert j.compact(retention_ns=0, now_ns=10**9) > 0  # rewrites a cut record
            info = j._env.info()
            if _free_tail(data, info["last_txnid"], info["last_pgno"]):
                break
        else:
            pytest.fail("compaction never freed the last page: this test needs another recipe")
        waiting = [r.seq for r in j.pending("t")]
    need = _free_tail(data, info["last_txnid"], info["last_pgno"])
    with data.open("r+b") as f:
        f.truncate(need)
    assert need < (info["last_pgno"] + 1) * 4096
    for mode in ("agent", "client", "read"):
        with Journal.open(jdir, mode=mode) as j:
            assert [r.seq for r in j.pending("t")] == waiting
    result = run_child("read_all", str(jdir))
    assert result.returncode == 0 and result.stdout.split() == ["read", str(waiting[-1])], result.stderr
    with data.open("r+b") as f:
        f.truncate(need - 4096)
    for mode in ("agent", "client", "read"):
        with pytest.raises(JournalCorrupt):
            Journal.open(jdir, mode=mode)
    assert data.stat().st_size == need - 4096


def _free_tail(data: Path, txnid: int, last_pgno: int) -> int:
    """The file size without its trailing free pages, or 0 when the last page is in use."""
    fd = os.open(data, os.O_RDONLY)
    try:
        need = _pages.required_size(fd, txnid)
    finally:
        os.close(fd)
    return need if need < (last_pgno + 1) * 4096 else 0


def _unshare_available(mnt: Path) -> str | None:
    if not shutil.which("unshare"):
        return "unshare is not installed"
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=1M",
            "tmpfs",
            str(mnt),
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        return f"cannot mount a tmpfs in a private mount namespace: {probe.stderr.strip()}"
    return None


def test_disk_full_raises_journal_full_and_keeps_acknowledged(tmp_path: Path) -> None:
    """On a full filesystem append raises JournalFull; everything acknowledged
    before stays intact, and appends work again once space returns."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    reason = _unshare_available(mnt)
    if reason:
        pytest.skip(reason)
    result = run_child("fill_tmpfs", str(mnt), "4M", prefix=("unshare", "-m", "--propagation", "private"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["full"] == "JournalFull"
    assert report["fresh"] == "JournalFull"  # creating a journal on a full disk
    assert report["acked"] > 0
    assert report["after"] == [report["acked"] + 1, report["acked"] + 40]
    assert report["n"] == report["acked"] + 40
    assert report["intact"] is True
    # set by the refused append, kept even where a later small write fits: each
    # kind of write clears only its own refusal, when it next succeeds
    assert report["space_refused"] == [True, True, False]
    assert list(mnt.iterdir()) == []  # the tmpfs lived only in the child's namespace


def test_read_mode_cannot_write(tmp_path: Path) -> None:
    """A read-mode journal refuses writes with a JournalError."""
    _journal(tmp_path / "j")
    with Journal.open(tmp_path / "j", mode="read") as j:
        with pytest.raises(JournalError):
            j.append([Entry(Op.CHANGE, b"x")])
        assert j.last_seq() == 20


def test_bad_track_names_are_refused(tmp_path: Path) -> None:
    """Unregistered or malformed track names raise instead of hiding entries from compaction."""
    with Journal.open(tmp_path / "j", tracks=["t"]) as j:
        with pytest.raises(ValueError, match="unregistered"):
            j.append([Entry(Op.CHANGE, b"x")], tracks=["nope"])
        with pytest.raises(TypeError):
            j.append([Entry(Op.CHANGE, b"x")], tracks="t")
        for bad in ("", "a\nb", "a\0b", "x" * 300):
            with pytest.raises(ValueError):
                j.pending(bad)
        assert j.last_seq() == 0
    for bad in ("", "a\nb"):
        with pytest.raises(ValueError):
            Journal.open(tmp_path / "j", tracks=[bad])
