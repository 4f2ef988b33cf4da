"""The watcher with real inotify and a real journal: every row of docs/design.md §4."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import termios
import threading
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from agent.watch.specials import Specials
from journal import IS_DIR, Op
from tests.helpers.wait import wait_until
from tests.integration.conftest import WatcherRig

C, A, D, M = Op.CHANGE, Op.ATTR, Op.DELETE, Op.MOVE


def test_file_created_written_closed(watcher_rig: WatcherRig) -> None:
    """A new file and a rewrite of it are CHANGE entries."""
    (watcher_rig.root / "f").write_bytes(b"one")
    watcher_rig.wait_for([(C, b"f", b"")])
    with open(watcher_rig.root / "f", "ab") as fh:
        fh.write(b"two")
    watcher_rig.barrier()
    assert watcher_rig.seen().count((C, b"f", b"")) >= 2


def test_chmod_chown_utime_are_attr(watcher_rig: WatcherRig) -> None:
    """Metadata changes, including an mtime set into the past, are ATTR."""
    p = watcher_rig.root / "f"
    p.write_bytes(b"x")
    watcher_rig.barrier()
    start = len(watcher_rig.seen())
    os.chmod(p, 0o600)
    watcher_rig.barrier()
    owner = 1234 if os.geteuid() == 0 else os.getuid()  # unprivileged: chown to oneself
    os.chown(p, owner, owner if os.geteuid() == 0 else os.getgid())
    watcher_rig.barrier()
    os.utime(p, ns=(10**9, 10**9))  # like touch -d 1970-01-01T00:00:01
    keys = watcher_rig.barrier()[start:]
    assert keys.count((A, b"f", b"")) == 3


def test_deletes(watcher_rig: WatcherRig) -> None:
    """Deleting a file or a directory journals DELETE (IS_DIR for the directory)."""
    (watcher_rig.root / "d").mkdir()
    (watcher_rig.root / "f").write_bytes(b"x")
    watcher_rig.wait_for([(C, b"d", b""), (C, b"f", b"")])
    os.unlink(watcher_rig.root / "f")
    os.rmdir(watcher_rig.root / "d")
    watcher_rig.wait_for([(D, b"f", b""), (D, b"d", b"")])
    dirs = [e for e in watcher_rig.entries() if e.op == D and e.path == b"d"]
    assert dirs[0].flags & IS_DIR


def test_move_inside_and_rename_chain(watcher_rig: WatcherRig) -> None:
    """a->b->c in quick succession gives two paired MOVEs, in order."""
    (watcher_rig.root / "a").write_bytes(b"x")
    watcher_rig.barrier()
    os.rename(watcher_rig.root / "a", watcher_rig.root / "b")
    os.rename(watcher_rig.root / "b", watcher_rig.root / "c")
    keys = watcher_rig.wait_for([(M, b"a", b"b"), (M, b"b", b"c")])
    assert (D, b"a", b"") not in keys and (C, b"c", b"") not in keys


def test_moved_out_file_and_tree(watcher_rig: WatcherRig) -> None:
    """Moved out of the root: DELETE after the wait; the tree's watches go away,
    and writes in its new place outside are not journaled."""
    tree = watcher_rig.root / "t"
    (tree / "sub").mkdir(parents=True)
    (watcher_rig.root / "f").write_bytes(b"x")
    watcher_rig.wait_for([(C, b"t", b""), (C, b"t/sub", b""), (C, b"f", b"")])
    shutil.move(tree, watcher_rig.outside / "t")
    os.rename(watcher_rig.root / "f", watcher_rig.outside / "f")
    watcher_rig.wait_for([(D, b"t", b""), (D, b"f", b"")])
    (watcher_rig.outside / "t" / "sub" / "late").write_bytes(b"y")
    keys = watcher_rig.barrier()
    assert not any(k[1].startswith(b"t/") and k[1] != b"t/sub" for k in keys), keys
    wait_until(lambda: watcher_rig.watcher.watches == 1)  # only the root is left


def test_tree_moved_in_is_scanned(watcher_rig: WatcherRig) -> None:
    """A directory tree moved in from outside: CHANGE for it and everything inside,
    and new files in it are seen afterwards."""
    src = watcher_rig.outside / "in"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_bytes(b"x")
    (src / "g").write_bytes(b"y")
    os.rename(src, watcher_rig.root / "in")
    watcher_rig.wait_for([(C, b"in", b"")])
    watcher_rig.wait_for([(C, b"in/a", b""), (C, b"in/a/b", b""), (C, b"in/a/b/f", b"")])
    watcher_rig.wait_for([(C, b"in/g", b"")])
    (watcher_rig.root / "in" / "a" / "b" / "new").write_bytes(b"z")
    watcher_rig.wait_for([(C, b"in/a/b/new", b"")])


def test_new_directories_are_journaled_completely(watcher_rig: WatcherRig) -> None:
    """mkdir -p a/b/c && echo x > a/b/c/f, repeated: every level and the file, every time."""
    for i in range(30):
        top = f"n{i}"
        os.makedirs(watcher_rig.root / top / "b" / "c")
        (watcher_rig.root / top / "b" / "c" / "f").write_bytes(b"x\n")
    have = set(watcher_rig.barrier())
    for i in range(30):
        for rel in (f"n{i}", f"n{i}/b", f"n{i}/b/c", f"n{i}/b/c/f"):
            assert (C, rel.encode(), b"") in have, rel


def test_dir_renamed_inside_then_written(watcher_rig: WatcherRig) -> None:
    """After a rename, later entries below the directory use its new name."""
    (watcher_rig.root / "old" / "deep").mkdir(parents=True)
    watcher_rig.barrier()
    os.rename(watcher_rig.root / "old", watcher_rig.root / "new")
    (watcher_rig.root / "new" / "deep" / "f").write_bytes(b"x")
    (watcher_rig.root / "new" / "g").write_bytes(b"y")
    keys = watcher_rig.wait_for([(M, b"old", b"new"), (C, b"new/deep/f", b""), (C, b"new/g", b"")])
    after_move = keys[keys.index((M, b"old", b"new")) + 1 :]
    assert not any(k[1].startswith(b"old") for k in after_move)


def test_editor_atomic_save(watcher_rig: WatcherRig) -> None:
    """Write a temp file, rename it over the original: MOVE(temp, original)."""
    (watcher_rig.root / "doc.txt").write_bytes(b"v1")
    watcher_rig.barrier()
    (watcher_rig.root / ".doc.txt.swp").write_bytes(b"v2")
    os.rename(watcher_rig.root / ".doc.txt.swp", watcher_rig.root / "doc.txt")
    watcher_rig.wait_for([(C, b".doc.txt.swp", b""), (M, b".doc.txt.swp", b"doc.txt")])


def test_hard_links(watcher_rig: WatcherRig) -> None:
    """A new hard link is a new path: CHANGE; writing through either name is seen."""
    (watcher_rig.root / "a").write_bytes(b"x")
    os.link(watcher_rig.root / "a", watcher_rig.root / "b")
    watcher_rig.wait_for([(C, b"a", b""), (C, b"b", b"")])
    start = len(watcher_rig.seen())
    with open(watcher_rig.root / "b", "ab") as fh:
        fh.write(b"more")
    assert (C, b"b", b"") in watcher_rig.barrier()[start:]


def test_symlinks_are_recorded_never_followed(watcher_factory: Callable[..., WatcherRig]) -> None:
    """Symlinks (also to a directory outside the root) are CHANGE of the link; the
    target is never watched, so writes there are not journaled."""

    def prepare(root: Path) -> None:
        os.symlink(root.parent / "outside", root / "early")

    rig = watcher_factory(prepare=prepare)
    assert rig.watcher.watches == 1
    os.symlink(rig.outside, rig.root / "out")
    os.symlink("missing", rig.root / "dangling")
    rig.wait_for([(C, b"out", b""), (C, b"dangling", b"")])
    os.symlink("elsewhere", rig.root / ".tmp-link")
    os.rename(rig.root / ".tmp-link", rig.root / "out")  # ln -sfn style retarget
    rig.wait_for([(M, b".tmp-link", b"out")])
    (rig.outside / "written").write_bytes(b"x")
    keys = rig.barrier()
    assert not any(b"written" in k[1] for k in keys)
    assert rig.watcher.watches == 1


def test_hostile_names(watcher_rig: WatcherRig) -> None:
    """Non-UTF-8 bytes, newlines and leading dashes survive as raw bytes."""
    names = [b"\xff\xfe-bin", b"new\nline", b"-rf", b"$(reboot)"]
    for name in names:
        with open(watcher_rig.abs(name), "wb") as fh:
            fh.write(b"x")
    os.mkdir(watcher_rig.abs(b"dir\x80"))
    with open(watcher_rig.abs(b"dir\x80/in\nside"), "wb"):
        pass
    watcher_rig.wait_for([(C, n, b"") for n in names])
    watcher_rig.wait_for([(C, b"dir\x80/in\nside", b"")])


def test_special_files_are_skipped_with_a_log_line(watcher_rig: WatcherRig) -> None:
    """A FIFO gets no entry and one log line."""
    with capture_logs() as logs:
        os.mkfifo(watcher_rig.root / "pipe")
        watcher_rig.barrier()
        os.chmod(watcher_rig.root / "pipe", 0o600)
        keys = watcher_rig.barrier()
    assert not any(k[1] == b"pipe" for k in keys)
    skipped = [e for e in logs if e["event"] == "watch.special_skipped"]
    assert [e["path"] for e in skipped] == [b"pipe"]  # logs render bytes paths readably


def _queued_bytes(fd: int) -> int:
    """Bytes of events the kernel holds for the inotify ``fd``, not read yet."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_a_written_file_needs_no_type_lookup(watcher_rig: WatcherRig, monkeypatch) -> None:
    """A file whose write was read is journaled without an ``lstat`` (no
    write is reported for a fifo or socket); a path only created or touched
    is still looked up, and a fifo is still skipped. The watcher is held inside the
    lookup of a first file while the others are made, so their events are
    read, and decoded, together."""
    rig = watcher_rig
    looked: list[bytes] = []
    holding, release = threading.Event(), threading.Event()
    real = Specials._lstat

    def lstat(self: Specials, rel: bytes) -> os.stat_result:
        looked.append(rel)
        if rel == b"first":
            holding.set()
            release.wait(30)
        return real(self, rel)

    monkeypatch.setattr(Specials, "_lstat", lstat)
    (rig.root / "first").touch()
    assert holding.wait(30), "the watcher never looked up the first file"
    written = [f"written-{i}" for i in range(20)]
    for name in written:
        (rig.root / name).write_bytes(b"content\n")
    os.mkfifo(rig.root / "pipe")
    (rig.root / "touched").touch()
    # the reader takes everything from the kernel before the watcher goes on,
    # so no file's events are split between two batches
    wait_until(lambda: _queued_bytes(rig.watcher.watchset.fileno()) == 0, timeout=30)
    release.set()
    keys = rig.wait_for([(C, name.encode(), b"") for name in [*written, "touched"]])
    assert not any(k[1] == b"pipe" for k in keys)
    assert not [p for p in looked if p.startswith(b"written-")]
    assert b"pipe" in looked and b"touched" in looked


def test_excluded_paths_are_not_watched_or_journaled(watcher_factory: Callable[..., WatcherRig]) -> None:
    """Excluded directories are not watched; excluded names give no entries."""
    rig = watcher_factory(excludes=["*.tmp", "/cache/"], prepare=lambda r: (r / "cache").mkdir())
    assert rig.watcher.watches == 1
    (rig.root / "cache" / "f").write_bytes(b"x")
    (rig.root / "a.tmp").write_bytes(b"x")
    (rig.root / "keep").write_bytes(b"x")
    os.rename(rig.root / "a.tmp", rig.root / "a")
    keys = rig.wait_for([(C, b"keep", b""), (C, b"a", b"")])
    assert not any(k[1].endswith(b".tmp") or k[1].startswith(b"cache") for k in keys)


def test_checkpoint_advances_only_without_holds(watcher_rig: WatcherRig) -> None:
    """The checkpoint moves with appends, and not while a hold is active."""
    watcher_rig.barrier()
    wait_until(watcher_rig.journal.checkpoint)
    watcher_rig.watcher.hold_checkpoint()
    watcher_rig.barrier()  # an append that raced with the hold is over now
    held = watcher_rig.journal.checkpoint()
    watcher_rig.barrier()
    watcher_rig.barrier()
    assert watcher_rig.journal.checkpoint() == held
    assert held.seq < watcher_rig.journal.last_seq()
    watcher_rig.watcher.release_checkpoint()
    watcher_rig.barrier()
    after = wait_until(lambda: (c := watcher_rig.journal.checkpoint()) and c.time_ns > held.time_ns and c)
    assert after.seq == watcher_rig.journal.last_seq()


def test_counters(watcher_rig: WatcherRig) -> None:
    """Counters move only after entries are journaled."""
    (watcher_rig.root / "x").write_bytes(b"x")
    watcher_rig.barrier()
    w = watcher_rig.watcher
    wait_until(lambda: w.entries_journaled == len(watcher_rig.entries()))
    assert w.events_read >= w.entries_journaled >= 2
    assert w.batches >= 1 and w.overflows == 0


def test_a_special_file_made_in_a_directory_journals_the_directory(watcher_rig: WatcherRig) -> None:
    """A fifo itself is not replicated, but making or removing one moves its
    directory's mtime, which is: the directory is journaled once per mtime it
    gets, not once per write to the fifo."""
    (watcher_rig.root / "d").mkdir()
    watcher_rig.wait_for([(C, b"d", b"")])
    start = len(watcher_rig.seen())
    os.mkfifo(watcher_rig.root / "d" / "pipe")
    keys = watcher_rig.barrier()[start:]
    assert (C, b"d", b"") in keys and not any(k[1] == b"d/pipe" for k in keys)
    start = len(keys) + start
    os.chmod(watcher_rig.root / "d" / "pipe", 0o600)  # the directory's mtime does not move
    keys = watcher_rig.barrier()[start:]
    assert (C, b"d", b"") not in keys


def test_a_directory_made_just_before_its_parent_moved_is_watched(
    watcher_factory: Callable[..., WatcherRig],
) -> None:
    """``mkdir a/b/new; mv a/b a/c`` read together: when the watcher comes to
    watch ``a/b/new``, that path is gone. The move of its watched parent must
    still bring it under watch at ``a/c/new``, or every later change in it
    is lost with nothing journaled."""
    rig = watcher_factory(start=False, prepare=lambda root: (root / "a" / "b").mkdir(parents=True))
    rig.watcher.start()  # watches set, nothing read yet
    (rig.root / "a" / "b" / "new").mkdir()
    (rig.root / "a" / "b" / "new" / "early").write_bytes(b"made before the move")
    os.rename(rig.root / "a" / "b", rig.root / "a" / "c")
    rig.run()
    rig.wait_for([(M, b"a/b", b"a/c"), (C, b"a/c/new/early", b"")])
    (rig.root / "a" / "c" / "new" / "late").write_bytes(b"made after the move")
    rig.wait_for([(C, b"a/c/new/late", b"")])


def test_a_new_directory_whose_parent_moved_twice_is_watched_where_it_ends(
    watcher_factory: Callable[..., WatcherRig],
) -> None:
    rig = watcher_factory(start=False, prepare=lambda root: (root / "a" / "b").mkdir(parents=True))
    rig.watcher.start()
    (rig.root / "a" / "b" / "new" / "deeper").mkdir(parents=True)
    os.rename(rig.root / "a" / "b", rig.root / "a" / "c")
    os.rename(rig.root / "a", rig.root / "z")
    rig.run()
    rig.wait_for([(M, b"a/b", b"a/c"), (M, b"a", b"z"), (C, b"z/c/new/deeper", b"")])
    (rig.root / "z" / "c" / "new" / "deeper" / "late").write_bytes(b"after both moves")
    rig.wait_for([(C, b"z/c/new/deeper/late", b"")])
