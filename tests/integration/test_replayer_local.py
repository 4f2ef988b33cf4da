"""The replayer with the real LocalShipper: real journal, real files, real
mirror directory; the mirror must end byte-for-byte equal to the source."""

from __future__ import annotations

import os
import random
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.operate.config import LocalTarget
from agent.ship.local import shipper as local
from agent.ship.replayer import Replayer
from journal import IS_DIR, Entry, Journal, Op
from tests.helpers.wait import wait_until

TRACK = "copy"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    root: bytes
    mirror: bytes
    journal: Journal
    replayer: Replayer
    clock: Clock

    def path(self, rel: bytes) -> bytes:
        return self.root + b"/" + rel

    def log(self, *entries: tuple[Op, bytes] | tuple[Op, bytes, bytes] | Entry) -> None:
        batch = []
        for e in entries:
            if isinstance(e, Entry):
                batch.append(e)
                continue
            op, path, *dest = e
            full = self.path(dest[0] if dest else path)
            is_dir = os.path.isdir(full) and not os.path.islink(full)
            batch.append(Entry(op, path, dest[0] if dest else b"", time.time_ns(), IS_DIR if is_dir else 0))
        self.journal.append(batch)

    def drain(self, steps: int = 100) -> None:
        for _ in range(steps):
            report = self.replayer.step()
            if report.idle and report.wait_s is None:
                return
            self.clock.now += report.wait_s or 0.0
        raise AssertionError("replayer did not settle")

    def pending(self) -> list[Entry]:
        return [r.entry for r in self.journal.pending(TRACK)]


def snapshot(top: bytes) -> dict[bytes, tuple]:
    """Every entry below ``top``: type, mode, and content or link target."""
    out: dict[bytes, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            try:
                out[os.path.relpath(full, top)] = describe(full)
            except FileNotFoundError:  # a temp file the shipper just renamed: not part of the tree
                continue
    return out


def describe(full: bytes) -> tuple:
    st = os.lstat(full)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(full))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", stat.S_IMODE(st.st_mode))
    with open(full, "rb") as f:
        return ("file", stat.S_IMODE(st.st_mode), f.read())


def make_rig(tmp_path: Path, mirror: Path) -> Iterator[Rig]:
    root = tmp_path / "root"
    root.mkdir()
    journal = Journal.open(tmp_path / "journal", root=str(root), tracks=[TRACK])
    shipper = local.LocalShipper(LocalTarget(TRACK, mirror), root)
    clock = Clock()
    replayer = Replayer(journal, shipper, root, settle_s=0.0, clock=clock, rng=random.Random(3))
    try:
        yield Rig(os.fsencode(root), os.fsencode(mirror), journal, replayer, clock)
    finally:
        shipper.close()
        journal.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from make_rig(tmp_path, tmp_path / "mirror")


def write(rig: Rig, rel: bytes, data: bytes, mode: int = 0o644) -> None:
    with open(rig.path(rel), "wb") as f:
        f.write(data)
    os.chmod(rig.path(rel), mode)


HOSTILE = [b"-rf", b"$(touch pwned)", b"new\nline", b"\xff\xfe-not-utf8", b"sp ace", b"x" * 200]


def test_hostile_names_and_long_paths_arrive_exactly(rig):
    """Files, directories and a symlink with hostile names and a path longer
    than an LMDB key are shipped byte-for-byte, and are done in the journal."""
    entries: list[tuple[Op, bytes]] = []
    deep = b"/".join([b"d" * 100] * 6)
    os.makedirs(rig.path(deep))
    for i in range(1, 7):
        entries.append((Op.CHANGE, b"/".join([b"d" * 100] * i)))
    for name in HOSTILE:
        write(rig, name, b"data:" + name, 0o600)
        entries.append((Op.CHANGE, name))
    write(rig, deep + b"/\xff", b"deep", 0o640)
    os.symlink(b"../somewhere\n", rig.path(b"link-\xfe"))
    entries += [(Op.CHANGE, deep + b"/\xff"), (Op.CHANGE, b"link-\xfe")]
    rig.log(*entries)
    rig.drain()
    assert snapshot(rig.mirror) == snapshot(rig.root)
    assert rig.pending() == [] and rig.journal.dead_letters() == []
    assert rig.journal.manifest_get(deep + b"/\xff").size == 4


def test_moves_deletes_and_recreated_directories(rig):
    """Directory moves, rm -r followed by a new directory of the same name,
    a move out of the tree and an atomic-rename save all converge."""
    for d in (b"a", b"a/sub", b"c", b"d"):
        os.mkdir(rig.path(d))
    for f in (b"a/sub/f", b"a/g", b"c/old", b"d/x", b"keep"):
        write(rig, f, f)
    rig.log(
        *[(Op.CHANGE, p) for p in (b"a", b"a/sub", b"c", b"d", b"a/sub/f", b"a/g", b"c/old", b"d/x", b"keep")]
    )
    rig.drain()
    assert snapshot(rig.mirror) == snapshot(rig.root)

    os.rename(rig.path(b"a"), rig.path(b"b"))
    rig.log((Op.MOVE, b"a", b"b"))
    write(rig, b"b/sub/f", b"changed after the move")
    rig.log((Op.CHANGE, b"b/sub/f"))
    shutil.rmtree(rig.path(b"c"))
    rig.log(Entry(Op.DELETE, b"c/old"), Entry(Op.DELETE, b"c", flags=IS_DIR))
    os.mkdir(rig.path(b"c"))
    write(rig, b"c/new", b"new")
    rig.log((Op.CHANGE, b"c"), (Op.CHANGE, b"c/new"))
    shutil.move(rig.path(b"d"), rig.path(b"../outside-d"))
    rig.log(Entry(Op.DELETE, b"d", flags=IS_DIR))
    write(rig, b".keep.tmp", b"saved atomically")
    os.rename(rig.path(b".keep.tmp"), rig.path(b"keep"))
    rig.log((Op.CHANGE, b".keep.tmp"), (Op.MOVE, b".keep.tmp", b"keep"))
    rig.drain()
    assert snapshot(rig.mirror) == snapshot(rig.root)
    assert rig.pending() == []
    assert rig.journal.manifest_get(b"b/sub/f") is not None and rig.journal.manifest_get(b"c/old") is None


def test_file_vanished_before_shipping_is_deleted(rig):
    """A CHANGE whose file is gone at ship time deletes it on the mirror."""
    write(rig, b"f", b"x")
    rig.log((Op.CHANGE, b"f"))
    rig.drain()
    os.unlink(rig.path(b"f"))
    rig.log(Entry(Op.CHANGE, b"f"))
    rig.drain()
    assert not os.path.lexists(rig.mirror + b"/f") and rig.pending() == []


def test_target_down_then_up(tmp_path):
    """While the mirror cannot be reached everything stays pending and backs
    off (never dead); once it is back the queue drains completely."""
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"a file where the mirror's parent should be")
    for rig in make_rig(tmp_path, blocker / "mirror"):
        for i in range(20):
            write(rig, b"f%d" % i, b"%d" % i)
        rig.log(*[(Op.CHANGE, b"f%d" % i) for i in range(20)])
        for _ in range(10):
            rig.replayer.step()
            rig.clock.now += 7.0
        assert len(rig.pending()) == 20 and rig.journal.dead_letters() == []
        assert rig.replayer.retries >= 20
        blocker.unlink()
        blocker.mkdir()
        rig.drain()
        assert rig.pending() == []
        assert snapshot(rig.mirror) == snapshot(rig.root)


def test_end_to_end_with_the_watcher(tmp_path):
    """Real inotify -> journal -> replayer loop -> local mirror, with the real
    clock: the mirror converges to the tree after a burst of changes."""
    from agent.tree.excludes import Excludes
    from agent.watch import watcher as watcher_mod

    for rig in make_rig(tmp_path, tmp_path / "mirror"):
        converged = _converged(rig)
        replayer = Replayer(rig.journal, rig.replayer.shipper, os.fsdecode(rig.root), settle_s=0.05)
        watcher = watcher_mod.Watcher(Path(os.fsdecode(rig.root)), rig.journal, Excludes([]))
        watcher.start()
        stop = threading.Event()
        threads = [
            threading.Thread(target=watcher.run, args=(stop,), daemon=True),
            threading.Thread(target=replayer.run, args=(stop,), daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            burst(rig)
            wait_until(converged, timeout=30, message="mirror did not converge")
        finally:
            stop.set()
            rig.journal.wake()
            for t in threads:
                t.join(timeout=15)
            watcher.close()
        assert not any(t.is_alive() for t in threads)
        assert snapshot(rig.mirror) == snapshot(rig.root)


def _converged(rig: Rig):
    return lambda: snapshot(rig.mirror) == snapshot(rig.root) and not rig.pending()


def burst(rig: Rig) -> None:
    os.makedirs(rig.path(b"p/q"))
    for i in range(30):
        write(rig, b"p/q/f%d" % i, os.urandom(64))
    for name in HOSTILE[:4]:
        write(rig, name, name)
    os.rename(rig.path(b"p"), rig.path(b"moved"))
    write(rig, b"moved/q/f0", b"rewritten")
    os.unlink(rig.path(b"moved/q/f1"))
    os.mkdir(rig.path(b"p"))
    write(rig, b"p/again", b"again")
    os.chmod(rig.path(b"-rf"), 0o700)


def test_a_moved_directory_goes_out_without_its_excluded_entries(tmp_path: Path) -> None:
    """Built by ``build_replayers`` as ``agent run`` and ``agent replay`` build
    it: the mirror never gets an excluded entry of a directory moved within
    the tree, and the manifest records none (a scan would otherwise chase it)."""
    from agent.operate.config import Config
    from agent.ship.backends import build_replayers

    root, mirror = tmp_path / "root", tmp_path / "mirror"
    (root / "d" / "cache").mkdir(parents=True)
    (root / "d" / "page.html").write_bytes(b"carried")
    (root / "d" / "draft.tmp").write_bytes(b"excluded")
    (root / "d" / "cache" / "blob").write_bytes(b"excluded with its directory")
    mirror.mkdir()
    target = LocalTarget(TRACK, mirror)
    config = Config(root=root, journal=tmp_path / "journal", targets=(target,), exclude=("*.tmp", "cache/"))
    with Journal.open(tmp_path / "journal", root=str(root), tracks=[TRACK]) as journal:
        (replayer,) = build_replayers(journal, config, [target], settle_s=0.0, quiet_s=0.0)
        journal.append([Entry(Op.MOVE, b"old", b"d", time_ns=time.time_ns(), flags=IS_DIR)])
        for _ in range(10):
            if replayer.step().idle:
                break
        assert sorted(os.listdir(mirror / "d")) == ["page.html"]
        assert journal.manifest_get(b"d/page.html") is not None
        assert journal.manifest_get(b"d/draft.tmp") is None
        assert journal.manifest_get(b"d/cache") is None
