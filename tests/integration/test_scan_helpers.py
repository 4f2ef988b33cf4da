"""A scan shared with helper processes (agent.scan.team) journals exactly what
the same scan in one process does: every real difference once, nothing else;
what is found about a directory before anything found below it; nothing lost
when a helper dies or cannot start; and no helper outlives its scan or the
process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from agent.scan import team as team_mod
from agent.scan.scanner import Scanner, ScanReport
from agent.scan.team import Team, start_helpers
from agent.tree.excludes import Excludes
from agent.tree.fsstate import capture
from agent.tree.walk import Walk
from journal import Journal, JournalFull, Op
from tests.helpers.descendants import descendants, running
from tests.helpers.pipes import line_of
from tests.helpers.wait import wait_until
from tests.integration.test_scanner_props import mutated, mutation, tick_past

REPO = Path(__file__).resolve().parents[2]
Found = list[tuple[int, bytes, int]]  # (op, path, flags) in journal order


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, int]]]:
    """Helpers take part from the first listing on (the scan waits until they
    are ready, which a scan of a tiny tree would otherwise finish before);
    yields the helpers' summed counts of each scan that used them, with
    ``given``: how many directories were handed to them."""
    enlist, close, write = Team._enlist, Team.close, team_mod.write_frame
    counts: list[dict[str, int]] = []
    given = [0]

    def counting_write(fd: int, message: tuple[object, ...]) -> None:
        if message[0] == "walk":
            given[0] += len(message[1])  # type: ignore[arg-type]
        write(fd, message)

    def ready_enlist(self: Team, helpers: list[team_mod.Helper]) -> None:
        enlist(self, helpers)
        deadline = time.monotonic() + 60
        while any(h.alive and not h.ready for h in self.helpers):
            assert time.monotonic() < deadline, "helpers did not start"
            self._read(1.0)

    def counting_close(self: Team) -> None:
        close(self)
        counts.append(self.counts() | {"given": given[0]})
        given[0] = 0

    monkeypatch.setattr(team_mod, "write_frame", counting_write)
    monkeypatch.setattr(Team, "_enlist", ready_enlist)
    monkeypatch.setattr(Team, "close", counting_close)
    yield counts


def scan(root: bytes, journal: Journal, helpers: int, since: int | None = None) -> tuple[Found, ScanReport]:
    first = journal.last_seq() + 1
    scanner = Scanner(Path(os.fsdecode(root)), journal, Excludes(()), slack_ns=0, helpers=helpers)
    scanner.prepare()
    report = scanner.scan(since_ns=since)
    return [(int(r.entry.op), r.entry.path, r.entry.flags) for r in journal.since(seq=first)], report


def ancestors(path: bytes) -> Iterator[bytes]:
    while b"/" in path:
        path = path.rpartition(b"/")[0]
        yield path


def assert_parents_first(found: Found) -> None:
    """A CHANGE below a directory lands after that directory's CHANGE; a
    DELETE below one lands before that directory's DELETE."""
    changes = {p: i for i, (op, p, _) in enumerate(found) if op == Op.CHANGE}
    deletes = {p: i for i, (op, p, _) in enumerate(found) if op == Op.DELETE}
    for path, i in changes.items():
        assert all(changes[a] < i for a in ancestors(path) if a in changes), path
    for path, i in deletes.items():
        assert all(deletes[a] > i for a in ancestors(path) if a in deletes), path


def subdirs_of(root: bytes) -> int:
    return sum(1 for e in os.scandir(root) if e.is_dir(follow_symlinks=False))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mutations=st.lists(mutation, max_size=8))
def test_helpers_journal_what_one_process_does(
    shared: list[dict[str, int]], mutations: list[tuple[str, int, bytes]]
) -> None:
    """Random changes to a mirrored tree: the scan with a helper journals the
    same entries, in an order as safe, as the scan alone; both equal the
    real differences."""
    with mutated(mutations) as (root, journal, before, after, since):
        alone, _ = scan(root, journal, 0, since)
        together, report = scan(root, journal, 1, since)
        tops = subdirs_of(root)
    changed = {p for p, v in after.items() if before.get(p) != v}
    deleted = set(before) - set(after)
    assert sorted(together) == sorted(alone)
    assert {p for op, p, _ in together if op == Op.CHANGE} == changed
    assert {p for op, p, _ in together if op == Op.DELETE} == deleted
    assert len(together) == len(changed) + len(deleted)
    assert_parents_first(alone)
    assert_parents_first(together)
    assert report.helpers == 1 and report.files_seen + report.dirs_seen == len(after)
    if tops >= 2:  # the root's listing left two directories pending: one went to the helper
        assert shared[-1]["given"] >= 1


def make_tree(root: Path, tops: int = 8, subs: int = 4, files: int = 25) -> set[bytes]:
    paths: set[bytes] = set()
    for t in range(tops):
        for s in range(subs):
            d = root / f"t{t}" / f"s{s}"
            d.mkdir(parents=True)
            paths |= {f"t{t}".encode(), f"t{t}/s{s}".encode()}
            for f in range(files):
                (d / f"f{f}").write_bytes(b"%d" % f)
                paths.add(f"t{t}/s{s}/f{f}".encode())
    return paths


def test_a_first_scan_with_helpers_journals_every_path_once_parents_first(
    tmp_path: Path, shared: list[dict[str, int]]
) -> None:
    root = tmp_path / "root"
    expected = make_tree(root)
    with Journal.open(tmp_path / "journal", root=str(root), tracks=["t"]) as journal:
        found, report = scan(os.fsencode(root), journal, 2)
    assert sorted(p for _, p, _ in found) == sorted(expected)
    assert all(op == Op.CHANGE for op, _, _ in found)
    assert_parents_first(found)
    assert report.helpers == 2 and report.files_seen + report.dirs_seen == len(expected)
    assert shared[-1]["given"] >= 1 and shared[-1]["files_seen"] > 0


def signal_first_helper(monkeypatch: pytest.MonkeyPatch, signum: int) -> list[int]:
    """Send ``signum`` to the first helper as soon as it is given subtrees;
    returns the list its pid is put in."""
    feed, hit = Team._feed, []

    def feed_then_signal(self: Team, walk: object) -> None:
        feed(self, walk)  # type: ignore[arg-type]
        for h in self.helpers:
            if h.units and not hit:
                hit.append(h.proc.pid)
                os.kill(h.proc.pid, signum)

    monkeypatch.setattr(Team, "_feed", feed_then_signal)
    return hit


def scan_logged(tmp_path: Path, helpers: int) -> tuple[set[bytes], Found, list[dict], ScanReport]:
    """A first scan of a fresh tree: (its paths, what was journaled, the log, the report)."""
    root = tmp_path / "root"
    expected = make_tree(root)
    with capture_logs() as logs, Journal.open(tmp_path / "journal", root=str(root), tracks=["t"]) as journal:
        found, report = scan(os.fsencode(root), journal, helpers)
    return expected, found, logs, report


def test_a_killed_helper_loses_nothing(
    tmp_path: Path, shared: list[dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper is killed as soon as it is given subtrees: they are scanned again."""
    killed = signal_first_helper(monkeypatch, signal.SIGKILL)
    expected, found, logs, report = scan_logged(tmp_path, 1)
    assert killed
    failed = [e for e in logs if e["event"] == "scan.helper_failed"]
    assert failed and failed[0]["helper"] == killed[0] and failed[0]["requeued"] >= 1
    assert {p for _, p, _ in found} == expected  # a path the helper sent before dying may come twice
    assert_parents_first(found)
    assert report.helpers == 1


@pytest.mark.parametrize("executable", ["/nonexistent/python3", "/bin/true"])
def test_a_helper_that_cannot_start_leaves_the_scan_to_itself(
    tmp_path: Path, shared: list[dict[str, int]], monkeypatch: pytest.MonkeyPatch, executable: str
) -> None:
    monkeypatch.setattr(sys, "executable", executable)
    root = tmp_path / "root"
    expected = make_tree(root, tops=3)
    with capture_logs() as logs, Journal.open(tmp_path / "journal", root=str(root), tracks=["t"]) as journal:
        found, _ = scan(os.fsencode(root), journal, 1)
    assert sorted(p for _, p, _ in found) == sorted(expected)
    events = {e["event"] for e in logs}
    assert (
        "scan.helper_unavailable" if executable.startswith("/nonexistent") else "scan.helper_failed"
    ) in events


def test_no_helper_outlives_its_scan(tmp_path: Path, shared: list[dict[str, int]]) -> None:
    root = tmp_path / "root"
    make_tree(root, tops=3)
    before = set(descendants(os.getpid()))
    with Journal.open(tmp_path / "journal", root=str(root), tracks=["t"]) as journal:
        scanner = Scanner(root, journal, Excludes(()), helpers=2)
        scanner.prepare()
        started = {h.proc.pid for h in scanner._prepared}
        report = scanner.scan(since_ns=None)
        unused = Scanner(root, journal, Excludes(()), helpers=1)
        unused.prepare()  # prepared for a scan that never runs: ended by close
        started |= {h.proc.pid for h in unused._prepared}
        unused.close()
    assert report.helpers == 2 and len(started) == 3
    left = {pid for pid, _ in set(descendants(os.getpid())) - before}
    assert not left & started


def test_a_helper_exits_when_its_scan_drops_it() -> None:
    (helper,) = start_helpers(1)
    assert helper.proc.stdin is not None
    helper.proc.stdin.close()  # no spec will ever come
    assert helper.proc.wait(30) == 0
    assert helper.proc.stdout is not None
    helper.proc.stdout.close()


CHILD = r"""
import sys, time
from agent.scan.scanner import Scanner
from agent.tree.excludes import Excludes
from journal import Journal
journal = Journal.open(sys.argv[2], root=sys.argv[1], tracks=["t"])
scanner = Scanner(sys.argv[1], journal, Excludes(()), helpers=2)
scanner.prepare()
print(" ".join(str(h.proc.pid) for h in scanner._prepared), flush=True)
time.sleep(600)
"""


def test_helpers_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(tmp_path / "journal")],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in line_of(proc.stdout).split()]
        assert len(pids) == 2
        proc.kill()
        proc.wait(30)

        def gone() -> bool:
            return not any(running(pid) for pid in pids)

        wait_until(gone, timeout=30, message="helpers outlived the scanning process")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_subtrees_a_helper_gives_up_are_journaled_after_what_it_found_above_them(
    tmp_path: Path, shared: list[dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan hands everything to the helper at once, so it is idle at once
    and asks the helper to give half back: the helper sends what it found so
    far before the subtrees, and the scan's finds below them land after."""
    split, handle, gave = Walk.split, Team._handle, []

    def split_all(self: Walk) -> list[tuple[bytes, int]]:
        taken = split(self)
        rest, self.pending[:] = list(self.pending), []
        return taken + [(rel, ino) for rel, ino in rest if ino is not None]

    def recording_handle(self: Team, h: team_mod.Helper, message: tuple[object, ...]) -> None:
        if message[0] == "give" and message[1]:
            gave.append(len(message[1]))  # type: ignore[arg-type]
        handle(self, h, message)

    monkeypatch.setattr(Walk, "split", split_all)  # in this process only: the helper splits in half
    monkeypatch.setattr(Team, "_handle", recording_handle)
    root = tmp_path / "root"
    expected = make_tree(root, tops=2, subs=12, files=40)
    with Journal.open(tmp_path / "journal", root=str(root), tracks=["t"]) as journal:
        found, report = scan(os.fsencode(root), journal, 1)
    assert gave, "the helper never gave a subtree back"
    assert sorted(p for _, p, _ in found) == sorted(expected)
    assert_parents_first(found)
    assert report.files_seen + report.dirs_seen == len(expected)


def test_a_hung_helper_is_given_up_and_its_subtrees_scanned_again(
    tmp_path: Path, shared: list[dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper that stops answering (SIGSTOP here) holds the scan up for
    ``SILENCE_S`` at most; then it is killed and its subtrees are redone."""
    monkeypatch.setattr(team_mod, "SILENCE_S", 1.0)
    stopped = signal_first_helper(monkeypatch, signal.SIGSTOP)
    expected, found, logs, _ = scan_logged(tmp_path, 1)
    assert stopped
    failed = [e for e in logs if e["event"] == "scan.helper_failed"]
    assert failed and failed[0]["helper"] == stopped[0] and "silent" in failed[0]["error"]
    assert {p for _, p, _ in found} == expected
    assert not running(stopped[0])


def test_a_scan_done_before_its_helper_started_does_not_wait_for_it(tmp_path: Path) -> None:
    """A small tree is scanned before the prepared helper's interpreter has
    started: the helper is ended, not waited for, and nothing is left."""
    root = tmp_path / "root"
    expected = make_tree(root, tops=2, subs=1, files=2)
    before = set(descendants(os.getpid()))
    with Journal.open(tmp_path / "journal", root=str(root), tracks=["t"]) as journal:
        scanner = Scanner(root, journal, Excludes(()), helpers=1)
        scanner.prepare()
        (helper,) = scanner._prepared
        found, report = scan_prepared(scanner, journal)
    assert sorted(p for _, p, _ in found) == sorted(expected)
    assert report.helpers == 1 and helper.proc.returncode == -signal.SIGKILL  # ended while starting
    assert not {pid for pid, _ in set(descendants(os.getpid())) - before} & {helper.proc.pid}


def scan_prepared(scanner: Scanner, journal: Journal) -> tuple[Found, ScanReport]:
    first = journal.last_seq() + 1
    report = scanner.scan(since_ns=None)
    return [(int(r.entry.op), r.entry.path, r.entry.flags) for r in journal.since(seq=first)], report


def test_a_journal_that_refuses_the_entries_fails_the_scan_and_ends_its_helpers(
    tmp_path: Path, shared: list[dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full journal is the scan's failure, not a helper's: it is raised,
    as without helpers, and no helper is left running."""
    root = tmp_path / "root"
    make_tree(root)
    before = set(descendants(os.getpid()))
    with Journal.open(tmp_path / "journal", root=str(root), tracks=["t"]) as journal:

        def refuse(*_args: object, **_kw: object) -> None:
            raise JournalFull("no space left for the test", path=str(tmp_path))

        monkeypatch.setattr(journal, "append", refuse)
        scanner = Scanner(root, journal, Excludes(()), helpers=1, batch=10)
        scanner.prepare()
        started = {h.proc.pid for h in scanner._prepared}
        with pytest.raises(JournalFull):
            scanner.scan(since_ns=None)
    assert not {pid for pid, _ in set(descendants(os.getpid())) - before} & started


def test_paths_too_long_for_a_journal_key_are_compared_in_the_helpers_subtrees(
    tmp_path: Path, shared: list[dict[str, int]]
) -> None:
    """Long paths are stored apart (hashed keys); a helper reads those below
    its subtrees: a change and a delete among them are found, as in one
    process."""
    root = tmp_path / "root"
    long_dir, long_file = "L" * 250, "F" * 250
    for t in range(4):
        (root / f"t{t}" / long_dir).mkdir(parents=True)
        for name in (long_file, long_file[:-1] + "G"):
            (root / f"t{t}" / long_dir / name).write_bytes(b"long")
    with Journal.open(tmp_path / "journal", root=str(root), tracks=["t"]) as journal:
        everything = {os.fsencode(os.path.relpath(p, root)) for p in root.rglob("*")}
        journal.manifest_put({rel: capture(os.fsencode(root) + b"/" + rel) for rel in everything})
        since = time.time_ns()
        (tmp_path / "probe").write_bytes(b"")
        tick_past(os.fsencode(tmp_path) + b"/probe", since)
        (root / "t1" / long_dir / long_file).write_bytes(b"LONG")
        (root / "t2" / long_dir / (long_file[:-1] + "G")).unlink()
        (root / "t3" / long_dir / long_file).unlink()
        alone, _ = scan(os.fsencode(root), journal, 0, since)
        together, _ = scan(os.fsencode(root), journal, 1, since)
    assert shared[-1]["given"] >= 1
    assert sorted(together) == sorted(alone)
    assert {(op, p.decode()) for op, p, _ in together} == {
        (Op.CHANGE, f"t1/{long_dir}/{long_file}"),
        (Op.CHANGE, f"t2/{long_dir}"),
        (Op.DELETE, f"t2/{long_dir}/{long_file[:-1]}G"),
        (Op.CHANGE, f"t3/{long_dir}"),
        (Op.DELETE, f"t3/{long_dir}/{long_file}"),
    }
