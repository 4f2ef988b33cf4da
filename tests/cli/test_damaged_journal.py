"""Journals damaged on disk, through the real CLI: the damage is reported
(exit 2, ``error:`` + ``hint:``), the agent refuses to run on it, ``status``
and ``verify`` say so, and the damaged bytes are never rewritten.

Bytes are flipped where they live: a stored value is found in ``data.mdb`` by
its exact content (its key followed by its value, which must occur once), so
only the live copy is touched (``tests.journal._util.flip_value``).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from journal import Journal
from journal._intake import NAME as INTAKE
from tests.cli.conftest import AGENT, Site, agent
from tests.journal._util import flip_once, flip_value, live_value

HINT = b"hint: move the journal directory aside"

APPEND_AND_HANG = """
import sys
from journal import Entry, Journal, Op
j = Journal.open(sys.argv[1], root=sys.argv[2], tracks=["local"], fold_delay=3600)
for name in sys.argv[3:]:
    j.append([Entry(Op.CHANGE, name.encode())])
print("appended", flush=True)
sys.stdin.read()
"""


def _files(jdir: Path) -> dict[str, bytes]:
    """The journal's data (lock files and the runtime counters aside)."""
    return {p.name: p.read_bytes() for p in jdir.iterdir() if p.name in ("data.mdb", INTAKE)}


def _refused(res: subprocess.CompletedProcess[bytes], *words: bytes) -> None:
    assert res.returncode == 2, res
    assert re.search(rb"(?m)^error: ", res.stderr), res.stderr
    assert HINT in res.stderr and b"startup scan rebuilds" in res.stderr, res.stderr
    assert b"Traceback" not in res.stderr
    for word in words:
        assert word in res.stderr, res.stderr


def _run_until_exit(site: Site, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """``agent run`` expected to stop by itself (it found damage)."""
    return subprocess.run(
        [str(AGENT), "run", *site.flags], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _everyone_refuses(site: Site, *words: bytes) -> None:
    """status, verify and a new run all report the damage."""
    _refused(agent("status", *site.flags), *words)
    _refused(agent("verify", *site.flags), *words)
    _refused(_run_until_exit(site), *words)


@pytest.fixture
def shipped(site: Site) -> Site:
    site.journal_tree()
    site.ship_all()
    return site


def test_state_damaged_in_its_stat_fields(shipped: Site) -> None:
    """A flipped mtime byte in a stored state: the startup scan meets it and
    the agent stops with exit 2 instead of taking it for a changed file and
    writing a fresh state over it."""
    damaged = flip_value(shipped.journal, b"manifest", b"index.html", 24)  # inside mtime_ns
    before = _files(shipped.journal)
    res = _run_until_exit(shipped)
    _refused(res, b"damaged manifest state")
    assert b"journal.damaged" in res.stderr  # the log says it too
    assert _files(shipped.journal) == before
    assert live_value(shipped.journal, b"manifest", b"index.html") == damaged
    assert (shipped.journal / "DAMAGED").exists()
    _everyone_refuses(shipped, b"damaged manifest state")
    assert _files(shipped.journal) == before


def test_state_damaged_in_its_digest(shipped: Site) -> None:
    """A flipped digest byte hides from the scan's stat comparison: verify
    reports it; the agent stops when it would overwrite it, keeping it."""
    damaged = flip_value(shipped.journal, b"manifest", b"index.html", 70)  # inside the content digest
    before = _files(shipped.journal)
    _refused(agent("verify", *shipped.flags), b"damaged manifest state")
    assert _files(shipped.journal) == before
    proc = subprocess.Popen(
        [str(AGENT), "run", *shipped.flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while not (shipped.journal / "runtime.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        (shipped.root / "index.html").write_bytes(b"new content\n")
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, out
    assert b"journal.damaged" in out and b"index.html" in out
    assert live_value(shipped.journal, b"manifest", b"index.html") == damaged
    _everyone_refuses(shipped, b"damaged manifest state")


def test_log_record_damaged(site: Site) -> None:
    """A flipped byte in a pending entry's path: the replayer would ship
    another name; instead the agent stops and status/verify refuse."""
    path = b"docs/a.txt"
    site.journal_tree([path])
    with site.open() as j:
        assert [r.entry.path for r in j.pending("local")] == [path]
    flip_once(site.journal / "data.mdb", b"\x00" * 4 + path, 4 + 2)  # dest length 0, then the path
    before = _files(site.journal)
    res = _run_until_exit(site)
    _refused(res, b"log record")
    assert _files(site.journal) == before
    _everyone_refuses(site, b"log record")
    assert not (site.mirror / "docs").exists()


def _hang_after_appends(site: Site, names: list[str]) -> subprocess.Popen[bytes]:
    """An agent-mode process that appended one small batch per name (each
    acknowledged in the intake, none folded) and then waits to be killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", APPEND_AND_HANG, str(site.journal), str(site.root), *names],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"appended\n"
    return proc


def _crash_with_intake(site: Site, names: list[str]) -> None:
    with site.open():
        pass  # the journal and its track exist
    proc = _hang_after_appends(site, names)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Journal.open(site.journal, mode="read") as j:
        assert j.last_seq() == 0  # every batch is in the intake only


def test_intake_damaged_mid_chain(site: Site) -> None:
    """Acknowledged batches follow a damaged intake record: starting would
    drop them silently; every command refuses, and nothing is folded."""
    _crash_with_intake(site, ["first", "second", "third"])
    flip_once(site.journal / INTAKE, b"second", 2)
    before = _files(site.journal)
    _everyone_refuses(site, b"intake", b"would be lost")
    assert _files(site.journal) == before


def test_intake_torn_last_record_opens_quietly(site: Site) -> None:
    """The last record half written (a crash mid-append, never acknowledged):
    the agent starts, keeps the batches before it and says what it dropped."""
    _crash_with_intake(site, ["first", "second", "third"])
    flip_once(site.journal / INTAKE, b"third", 1)
    res = agent("status", "--json", *site.flags)
    assert res.returncode == 0, res.stderr
    proc = subprocess.Popen(
        [str(AGENT), "run", *site.flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while not (site.mirror / "index.html").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with Journal.open(site.journal, mode="read") as j:
            assert [r.entry.path for r in j.since(seq=1)][:2] == [b"first", b"second"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert b"journal.intake_torn_tail" in out and b"seqs 3..3" in out
    assert not (site.journal / "DAMAGED").exists()


def test_folded_intake_record_damaged_is_harmless(site: Site) -> None:
    """Records left in the intake after they were folded are superseded: a
    flip there loses nothing, and nothing refuses the journal."""
    _crash_with_intake(site, ["first", "second"])
    with site.open() as j:  # folds the intake
        assert j.last_seq() == 2
    flip_once(site.journal / INTAKE, b"first", 1)  # a record already folded: harmless
    res = agent("status", *site.flags)
    assert res.returncode == 0, res.stderr
