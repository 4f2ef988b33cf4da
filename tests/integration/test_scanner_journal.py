"""Scanner against a real tree and a real LMDB journal: only real differences
between the tree and the manifest are enqueued, and unchanged files are not read."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.scan.scanner import Scanner, ScanProgress, ScanReport
from agent.tree.excludes import Excludes
from agent.tree.fsstate import capture
from journal import IS_DIR, Entry, FileState, Journal, Op
from tests.helpers.wait import wait_until


@dataclass
class Env:
    root: Path
    journal: Journal
    probe: Path

    @property
    def rootb(self) -> bytes:
        return os.fsencode(self.root)

    def path(self, rel: bytes) -> bytes:
        return self.rootb + b"/" + rel

    def write(self, rel: bytes, data: bytes) -> None:
        with open(self.path(rel), "wb") as f:
            f.write(data)

    def mirror(self) -> None:
        """Seed the manifest as if the whole tree had been shipped."""
        self.journal.manifest_put(tree_states(self.rootb))

    def settle(self) -> int:
        """A checkpoint time: every change so far has a ctime before it, every
        later change a ctime at or after it (the kernel's clock is coarse)."""
        since = time.time_ns()

        def ticked() -> bool:
            os.utime(self.probe)
            return os.stat(self.probe).st_ctime_ns > since

        wait_until(ticked, timeout=5, interval=0.001)
        return since

    def scan(
        self, since: int | None, excludes: tuple[str, ...] = (), **kw: object
    ) -> tuple[ScanReport, list[Entry]]:
        first = self.journal.last_seq() + 1
        scanner = Scanner(self.root, self.journal, Excludes(excludes), slack_ns=0, **kw)  # type: ignore[arg-type]
        report = scanner.scan(since_ns=since)
        return report, [r.entry for r in self.journal.since(seq=first)]


def tree_states(rootb: bytes) -> dict[bytes, FileState]:
    out: dict[bytes, FileState] = {}
    for dirpath, dirnames, filenames in os.walk(rootb):
        for name in dirnames + filenames:
            abspath = os.path.join(dirpath, name)
            state = capture(abspath)
            assert state is not None
            out[os.path.relpath(abspath, rootb)] = state
    return out


def paths(entries: list[Entry], op: Op) -> list[bytes]:
    return [e.path for e in entries if e.op == op]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "probe").write_bytes(b"")
    journal = Journal.open(tmp_path / "journal", root=root, tracks=["t"])
    try:
        e = Env(root, journal, tmp_path / "probe")
        os.makedirs(e.path(b"docs/deep"))
        e.write(b"a.txt", b"alpha\n")
        e.write(b"docs/b.txt", b"bravo\n")
        e.write(b"docs/deep/c.bin", os.urandom(3000))
        os.symlink(b"a.txt", e.path(b"link"))
        e.mirror()
        yield e
    finally:
        journal.close()


@pytest.mark.parametrize("full", [False, True])
def test_nothing_changed_reads_nothing_and_enqueues_nothing(env: Env, full: bool) -> None:
    """A scan after a clean shutdown hashes no file and appends no entry."""
    since = env.settle()
    report, entries = env.scan(None if full else since)
    assert entries == []
    assert (report.hashed, report.suspects, report.enqueued_changes, report.enqueued_deletes) == (0, 0, 0, 0)
    assert (report.files_seen, report.dirs_seen) == (4, 2)


@pytest.mark.parametrize("full", [False, True])
def test_same_size_change_with_restored_mtime_is_found(env: Env, full: bool) -> None:
    """ctime cannot be restored, so a content change hidden behind the old mtime is still found."""
    since = env.settle()
    before = os.stat(env.path(b"docs/b.txt"))
    env.write(b"docs/b.txt", b"BRAVO\n")
    os.utime(env.path(b"docs/b.txt"), ns=(before.st_atime_ns, before.st_mtime_ns))
    report, entries = env.scan(None if full else since)
    assert entries == [Entry(Op.CHANGE, b"docs/b.txt", time_ns=entries[0].time_ns)]
    assert (report.hashed, report.enqueued_changes) == (1, 1)


@pytest.mark.parametrize("full", [False, True])
def test_touch_d_is_enqueued_without_reading(env: Env, full: bool) -> None:
    """Another mtime on identical content (``touch``, ``touch -d`` in the past)
    is shipped state that differs: enqueued, for a file, a directory and a
    symlink, without reading anything."""
    since = env.settle()
    os.utime(env.path(b"a.txt"))
    os.utime(env.path(b"docs/deep/c.bin"), ns=(1, 1))  # like touch -d in the past
    os.utime(env.path(b"docs"), ns=(981158400 * 10**9, 981158400 * 10**9))  # touch -d 2001-02-03
    os.utime(env.path(b"link"), ns=(2, 2), follow_symlinks=False)
    report, entries = env.scan(None if full else since)
    assert sorted((e.op, e.path, e.flags) for e in entries) == [
        (Op.CHANGE, b"a.txt", 0),
        (Op.CHANGE, b"docs", IS_DIR),
        (Op.CHANGE, b"docs/deep/c.bin", 0),
        (Op.CHANGE, b"link", 0),
    ]
    assert report.hashed == 0


@pytest.mark.parametrize("full", [False, True])
def test_chmod_undone_and_same_mtime_copy_are_not_enqueued(env: Env, full: bool) -> None:
    """ctime and inode are not shipped: a chmod undone on directories, a
    symlink chowned to its owner, a file replaced by an identical copy with
    its mtime (its directory's mtime put back), leave nothing to ship (the
    file is read to know)."""
    since = env.settle()
    for rel in (b"docs", b"docs/deep"):
        mode = os.stat(env.path(rel)).st_mode
        os.chmod(env.path(rel), 0o700)
        os.chmod(env.path(rel), mode)
    os.lchown(env.path(b"link"), os.getuid(), os.getgid())
    old = os.stat(env.path(b"docs/b.txt"))
    env.write(b"docs/b.tmp", b"bravo\n")
    os.chmod(env.path(b"docs/b.tmp"), old.st_mode & 0o7777)
    os.utime(env.path(b"docs/b.tmp"), ns=(old.st_atime_ns, old.st_mtime_ns))
    os.rename(env.path(b"docs/b.tmp"), env.path(b"docs/b.txt"))
    shipped = env.journal.manifest_get(b"docs")
    assert shipped is not None
    os.utime(env.path(b"docs"), ns=(shipped.mtime_ns, shipped.mtime_ns))  # as the rename left it: not
    report, entries = env.scan(None if full else since)
    assert entries == []
    assert report.hashed == 1


def test_chmod_is_enqueued_without_reading(env: Env) -> None:
    """A permission change is a real difference; the content need not be read."""
    since = env.settle()
    os.chmod(env.path(b"a.txt"), 0o600)
    os.chmod(env.path(b"docs"), 0o700)
    report, entries = env.scan(since)
    assert sorted((e.op, e.path, e.flags) for e in entries) == [
        (Op.CHANGE, b"a.txt", 0),
        (Op.CHANGE, b"docs", IS_DIR),
    ]
    assert report.hashed == 0


def test_deleted_file_and_tree_become_deletes_children_first(env: Env) -> None:
    """Every manifest path absent on disk gets a DELETE, children before parents."""
    since = env.settle()
    os.unlink(env.path(b"a.txt"))
    for rel in (b"docs/deep/c.bin", b"docs/b.txt"):
        os.unlink(env.path(rel))
    os.rmdir(env.path(b"docs/deep"))
    os.rmdir(env.path(b"docs"))
    report, entries = env.scan(since)
    deletes = [(e.path, e.flags) for e in entries if e.op == Op.DELETE]
    assert sorted(deletes) == [
        (b"a.txt", 0),
        (b"docs", IS_DIR),
        (b"docs/b.txt", 0),
        (b"docs/deep", IS_DIR),
        (b"docs/deep/c.bin", 0),
    ]
    order = [p for p, _ in deletes]
    assert order.index(b"docs/deep/c.bin") < order.index(b"docs/deep") < order.index(b"docs")
    assert paths(entries, Op.CHANGE) == []
    assert report.enqueued_deletes == 5


def test_new_file_and_new_directory_are_changes(env: Env) -> None:
    """Paths missing from the manifest are enqueued (dirs flagged), parents first."""
    since = env.settle()
    os.makedirs(env.path(b"new/sub"))
    env.write(b"new/sub/f", b"x")
    env.write(b"docs/n.txt", b"")
    report, entries = env.scan(since)
    got = [(e.op, e.path, e.flags) for e in entries]
    assert sorted(got) == sorted(
        [
            (Op.CHANGE, b"docs", IS_DIR),  # a new entry changed its mtime
            (Op.CHANGE, b"docs/n.txt", 0),
            (Op.CHANGE, b"new", IS_DIR),
            (Op.CHANGE, b"new/sub", IS_DIR),
            (Op.CHANGE, b"new/sub/f", 0),
        ]
    )
    order = [p for _, p, _ in got]
    assert order.index(b"new") < order.index(b"new/sub") < order.index(b"new/sub/f")
    assert report.hashed == 0


def test_symlink_retarget_is_a_change_and_is_not_followed(env: Env, tmp_path: Path) -> None:
    """A symlink is compared by its target; a link to a directory is never walked."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    since = env.settle()
    os.unlink(env.path(b"link"))
    os.symlink(b"docs/b.txt", env.path(b"link"))
    os.symlink(os.fsencode(outside), env.path(b"out"))
    report, entries = env.scan(since)
    assert sorted(paths(entries, Op.CHANGE)) == [b"link", b"out"]
    assert report.hashed == 0


def test_symlink_recreated_with_same_target_and_mtime_is_not_enqueued(env: Env) -> None:
    """Same target, same mtime, new inode: not a real difference; another
    mtime is (a symlink's mtime is shipped where the target can carry it)."""
    since = env.settle()
    old = os.lstat(env.path(b"link"))
    os.unlink(env.path(b"link"))
    os.symlink(b"a.txt", env.path(b"link"))
    os.utime(env.path(b"link"), ns=(old.st_atime_ns, old.st_mtime_ns), follow_symlinks=False)
    _, entries = env.scan(since)
    assert entries == []
    os.unlink(env.path(b"link"))
    os.symlink(b"a.txt", env.path(b"link"))
    _, entries = env.scan(since)
    assert [(e.op, e.path) for e in entries] == [(Op.CHANGE, b"link")]


def test_excludes_are_respected(env: Env) -> None:
    """Excluded files are not enqueued, excluded dirs not descended, and
    excluded manifest paths are not deleted."""
    since = env.settle()
    env.write(b"a.txt", b"changed\n")
    env.write(b"x.swp", b"swap")
    os.makedirs(env.path(b"cache/inner"))
    env.write(b"cache/inner/f", b"f")
    os.chmod(env.path(b"docs/deep"), 0o700)  # excluded dir: its change is ignored too
    os.unlink(env.path(b"docs/deep/c.bin"))  # inside an excluded dir: not a delete
    report, entries = env.scan(since, excludes=("*.swp", "cache/", "deep"))
    assert [(e.op, e.path) for e in entries] == [(Op.CHANGE, b"a.txt")]
    assert report.dirs_seen == 1  # docs only; cache and docs/deep are not entered


def test_every_kind_of_pattern_excludes_exactly_what_match_says(env: Env) -> None:
    """Basename, directory-only, anchored and ``**`` patterns together, on
    new files and directories: the scan enqueues exactly the paths that
    neither they nor an excluded ancestor exclude."""
    since = env.settle()
    new = [
        b"n.swp",
        b"n~",
        b".#n",
        b"keep.txt",
        b"logs/a.gz",
        b"logs/d/a.gz",
        b"x/logs/a.gz",
        b"tmp/f",
        b"sub/tmp",
        b"sub/tmpdir/f",
        b"p/q/build/o",
        b"build",
        b"w/\xff.swp/f",
    ]
    for rel in new:
        parent = rel.rpartition(b"/")[0]
        if parent:
            os.makedirs(env.path(parent), exist_ok=True)
        env.write(rel, rel)
    pats = ("*.swp", "*~", ".#*", "logs/*.gz", "tmp/", "**/build/", "/build")
    _, entries = env.scan(since, excludes=pats)
    ex = Excludes(pats)
    on_disk = set(tree_states(env.rootb))
    shipped = set(env.journal.manifest_encoded())  # the scan never writes the manifest
    expected = {p for p in on_disk - shipped if not ex.match(p, os.path.isdir(env.path(p)))}
    assert set(paths(entries, Op.CHANGE)) == expected
    assert b"keep.txt" in expected and b"x/logs/a.gz" in expected and b"logs/d/a.gz" in expected
    assert b"build" not in expected and b"tmp/f" not in expected and b"w/\xff.swp/f" not in expected


HOSTILE = [b"caf\xe9\xff", b"new\nline", b"-rf", b"$(touch pwned)", b" lead", b"a\\b", b"x" * 255]


def test_hostile_names_survive_byte_for_byte(env: Env) -> None:
    """Non-UTF-8, newline and shell-looking names are enqueued exactly, as changes and deletes."""
    for name in HOSTILE:
        env.write(b"docs/" + name, name)
    os.makedirs(env.path(b"\xfe\xfedir\n"))
    env.write(b"\xfe\xfedir\n/f\xff", b"z")
    env.mirror()
    since = env.settle()
    for name in HOSTILE[:3]:
        env.write(b"docs/" + name, b"changed " + name)
    os.unlink(env.path(b"\xfe\xfedir\n/f\xff"))
    env.write(b"docs/" + b"\x80new", b"n")
    _, entries = env.scan(since)
    assert sorted(paths(entries, Op.CHANGE)) == sorted(
        [b"docs", b"\xfe\xfedir\n"] + [b"docs/" + n for n in HOSTILE[:3]] + [b"docs/\x80new"]
    )  # the directories' mtimes changed with their entries
    assert paths(entries, Op.DELETE) == [b"\xfe\xfedir\n/f\xff"]


def test_long_paths_beyond_path_max_are_walked(env: Env) -> None:
    """A tree deeper than PATH_MAX is reached component by component."""
    rel = b""
    fd = os.open(env.rootb, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(24):
            name = b"%02d" % i + b"d" * 200
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
            rel = rel + b"/" + name if rel else name
        wfd = os.open(b"leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(wfd, b"deep")
        os.close(wfd)
    finally:
        os.close(fd)
    assert len(env.rootb + rel) > 4096
    since = env.settle()
    _, entries = env.scan(since)
    changes = paths(entries, Op.CHANGE)
    assert len(changes) == 25
    assert changes[-1] == rel + b"/leaf"


def test_manifest_paths_longer_than_a_journal_key(env: Env) -> None:
    """Paths the journal stores under a hashed key compare, change and delete like short ones."""
    longdir, longfile = b"L" * 250, b"F" * 250
    os.mkdir(env.path(longdir))
    for name in (longfile, longfile[:-1] + b"G"):
        env.write(longdir + b"/" + name, b"long")
    env.mirror()
    since = env.settle()
    report, entries = env.scan(since)
    assert (entries, report.suspects) == ([], 0)
    env.write(longdir + b"/" + longfile, b"LONG")
    os.unlink(env.path(longdir + b"/" + longfile[:-1] + b"G"))
    expected = [
        (Op.CHANGE, longdir),  # its mtime changed with the delete
        (Op.CHANGE, longdir + b"/" + longfile),
        (Op.DELETE, longdir + b"/" + longfile[:-1] + b"G"),
    ]
    _, entries = env.scan(since)
    assert [(e.op, e.path) for e in entries] == expected
    first = env.journal.last_seq() + 1
    Scanner(env.root, env.journal, Excludes(()), slack_ns=0).scan_subtree(longdir)
    assert [(r.entry.op, r.entry.path) for r in env.journal.since(seq=first)] == expected
    first = env.journal.last_seq() + 1
    Scanner(env.root, env.journal, Excludes(()), slack_ns=0).scan_subtree(b"docs")
    assert list(env.journal.since(seq=first)) == []  # long paths elsewhere are not below docs


def test_root_given_through_a_symlink(env: Env, tmp_path: Path) -> None:
    """A root configured as a symlink to the tree is followed (only there)."""
    alias = tmp_path / "alias"
    alias.symlink_to(env.root)
    env.write(b"docs/new", b"n")
    first = env.journal.last_seq() + 1
    Scanner(alias, env.journal, Excludes(()), slack_ns=0).scan(since_ns=None)
    assert [(r.entry.op, r.entry.path) for r in env.journal.since(seq=first)] == [
        (Op.CHANGE, b"docs"),
        (Op.CHANGE, b"docs/new"),
    ]


def test_files_shipped_within_the_slack_are_hashed_but_not_enqueued(env: Env) -> None:
    """Files shipped within the slack before the checkpoint are suspects
    (timestamp granularity), read, and found equal."""
    since = time.time_ns()
    scanner = Scanner(env.root, env.journal, Excludes(()), slack_ns=600 * 10**9)  # all files are recent
    first = env.journal.last_seq() + 1
    report = scanner.scan(since_ns=since)
    assert list(env.journal.since(seq=first)) == []
    assert (report.hashed, report.enqueued_changes) == (3, 0)


def test_pending_paths_are_reenqueued_and_counted(env: Env) -> None:
    """A change still pending in the journal differs from the manifest: enqueued again, counted."""
    since = env.settle()
    env.write(b"a.txt", b"pending change\n")
    env.journal.append([Entry(Op.CHANGE, b"a.txt", time_ns=time.time_ns())])
    env.write(b"docs/b.txt", b"unjournaled\n")
    report, entries = env.scan(since)
    assert sorted(paths(entries, Op.CHANGE)) == [b"a.txt", b"docs/b.txt"]
    assert report.reenqueued_pending == 1


def test_batches_and_progress(env: Env) -> None:
    """Entries go out in transactions of ``batch``; progress ends with the final counts."""
    since = env.settle()
    for i in range(7):
        env.write(b"n%d" % i, b"x")
    seen: list[ScanProgress] = []
    last_before = env.journal.last_seq()
    report, entries = env.scan(since, batch=3, progress=seen.append)
    assert len(entries) == 7 and env.journal.last_seq() == last_before + 7
    assert seen and seen[-1].enqueued == 7 and seen[-1].files_seen == report.files_seen == 11


def test_scan_survives_a_tree_changing_under_it(env: Env) -> None:
    """Paths vanishing or changing type mid-scan are enqueued or skipped, never a crash;
    once the churn stops, a full scan leaves only what really exists."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            i = 0
            while not stop.is_set():
                d = env.path(b"churn%d" % (i % 5))
                os.makedirs(d + b"/sub", exist_ok=True)
                env.write(b"churn%d/sub/f" % (i % 5), os.urandom(64))
                os.symlink(b"x", d + b"/ln%d" % i)
                shutil.rmtree(env.path(b"churn%d" % ((i + 2) % 5)), ignore_errors=True)
                i += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        for _ in range(15):
            env.scan(None)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not errors and not worker.is_alive()
    env.mirror()
    report, entries = env.scan(None)
    assert entries == [] and report.errors == 0


class TestSubtree:
    def scan_sub(self, env: Env, rel: bytes) -> tuple[ScanReport, list[Entry]]:
        first = env.journal.last_seq() + 1
        report = Scanner(env.root, env.journal, Excludes(()), slack_ns=0).scan_subtree(rel)
        return report, [r.entry for r in env.journal.since(seq=first)]

    def test_only_the_subtree_is_scanned(self, env: Env) -> None:
        """Changes and deletes outside the subtree are left for other scans."""
        env.write(b"a.txt", b"outside change\n")
        env.write(b"docs/deep/new", b"n")
        os.unlink(env.path(b"docs/b.txt"))
        _, entries = self.scan_sub(env, b"docs")
        assert [(e.op, e.path) for e in entries] == [  # one directory at a time, its deletes last
            (Op.CHANGE, b"docs"),  # mtimes changed by the new and the deleted entry
            (Op.CHANGE, b"docs/deep"),
            (Op.DELETE, b"docs/b.txt"),
            (Op.CHANGE, b"docs/deep/new"),
        ]

    def test_new_directory(self, env: Env) -> None:
        """A directory that appeared is enqueued with everything in it."""
        os.makedirs(env.path(b"docs/deep/fresh/er"))
        env.write(b"docs/deep/fresh/er/f", b"f")
        _, entries = self.scan_sub(env, b"docs/deep/fresh")
        assert [e.path for e in entries] == [
            b"docs/deep/fresh",
            b"docs/deep/fresh/er",
            b"docs/deep/fresh/er/f",
        ]

    def test_start_below_a_symlink_is_not_followed(self, env: Env, tmp_path: Path) -> None:
        """A subtree reached through a symlink is outside the tree: nothing is walked or enqueued."""
        outside = tmp_path / "outside" / "deep"
        outside.mkdir(parents=True)
        (outside / "secret").write_bytes(b"s")
        os.symlink(os.fsencode(tmp_path / "outside"), env.path(b"out"))
        os.symlink(b"docs", env.path(b"docs2"))
        for start in (b"out/deep", b"docs2/deep", b"out"):
            report, entries = self.scan_sub(env, start)
            assert [(e.op, e.path) for e in entries] == ([(Op.CHANGE, b"out")] if start == b"out" else [])
            assert report.files_seen == (1 if start == b"out" else 0)

    def test_vanished_directory_and_single_file(self, env: Env) -> None:
        """A vanished start deletes what the manifest had below it; a file start compares the file."""
        for rel in (b"docs/deep/c.bin",):
            os.unlink(env.path(rel))
        os.rmdir(env.path(b"docs/deep"))
        _, entries = self.scan_sub(env, b"docs/deep")
        assert [(e.op, e.path) for e in entries] == [
            (Op.DELETE, b"docs/deep/c.bin"),
            (Op.DELETE, b"docs/deep"),
        ]
        env.write(b"a.txt", b"ALPHA\n")
        _, entries = self.scan_sub(env, b"a.txt")
        assert [(e.op, e.path) for e in entries] == [(Op.CHANGE, b"a.txt")]


@pytest.mark.parametrize("full", [False, True])
def test_shipped_file_replaced_by_a_fifo_is_enqueued_once(env: Env, full: bool) -> None:
    """A special file is not replicated: where the mirror holds a shipped file,
    its replacement by a fifo must reach the mirror (as an absence); once the
    manifest records the fifo, later scans stay quiet, and a new fifo that
    never had a shipped predecessor is not enqueued."""
    since = env.settle()
    os.unlink(env.path(b"a.txt"))
    os.mkfifo(env.path(b"a.txt"))
    os.mkfifo(env.path(b"docs/new.fifo"))
    _, entries = env.scan(None if full else since)
    assert sorted((e.op, e.path) for e in entries) == [(Op.CHANGE, b"a.txt"), (Op.CHANGE, b"docs")]
    shipped = {p: capture(env.path(p)) for p in (b"a.txt", b"docs")}  # what shipping them records
    env.journal.manifest_put(shipped)
    _, entries = env.scan(None if full else env.settle())
    assert entries == []
