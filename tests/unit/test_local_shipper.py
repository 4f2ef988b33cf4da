"""LocalShipper details the contract suite does not reach: races with the
source, ownership, path validation and track selection."""

from __future__ import annotations

import os

from agent.operate.config import LocalTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome
from agent.ship.local.shipper import LocalShipper, classify_oserror
from agent.tree.walk import relpath_problem
from tests.helpers.trees import assert_trees_equal, snapshot


def put(path: bytes, recursive: bool = False, tracks: frozenset[str] = frozenset()) -> Action:
    return Action(ActionKind.PUT, path, recursive, tracks)


class AppendDuringCopy(LocalShipper):
    """Fault injection: the source grows just as its copy starts, once."""

    def __init__(self, *args, victim, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.victim = victim

    def _fill(self, sfd, tfd, st):
        if self.victim is not None:
            with open(self.victim, "ab") as f:
                f.write(b" and more")
            self.victim = None
        return super()._fill(sfd, tfd, st)


class VanishBeforeOpen(LocalShipper):
    """Fault injection: the source file is deleted between lstat and open."""

    def _put_file(self, sdir, mdir, name):
        os.unlink(name, dir_fd=sdir)
        return super()._put_file(sdir, mdir, name)


def test_file_changing_during_copy_retries(tmp_path) -> None:
    """A file that changes while copied RETRYs, leaves no temp file, and the
    next ship carries the final content."""
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    src.mkdir()
    (src / "f").write_bytes(b"start")
    shipper = AppendDuringCopy(LocalTarget("t", mirror), src, victim=src / "f")
    [r] = shipper.ship(Plan((put(b"f"),)))
    assert r.outcome is Outcome.RETRY and "changed during copy" in r.reason
    assert list(snapshot(mirror)) == [b""]  # no temp file, no half copy
    [r] = shipper.ship(Plan((put(b"f"),)))
    assert r.outcome is Outcome.OK
    assert (mirror / "f").read_bytes() == b"start and more"


def test_file_vanishing_mid_ship_is_deleted(tmp_path) -> None:
    """A file gone between lstat and open ends deleted on the mirror, OK."""
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    src.mkdir()
    mirror.mkdir()
    (src / "f").write_bytes(b"new")
    (mirror / "f").write_bytes(b"old")
    [r] = VanishBeforeOpen(LocalTarget("t", mirror), src).ship(Plan((put(b"f"),)))
    assert r.outcome is Outcome.OK
    assert not (mirror / "f").exists()


def test_ownership_and_times_follow_source(tmp_path) -> None:
    """As root, uid/gid are carried; mtimes to the nanosecond, dirs included."""
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x")
    os.symlink("f", src / "d" / "l")
    for p in (src / "d" / "f", src / "d"):
        os.chown(p, 1234, 5678)
    os.lchown(src / "d" / "l", 4321, 8765)
    os.utime(src / "d" / "f", ns=(1, 1_234_567_891))
    [r] = LocalShipper(LocalTarget("t", mirror), src).ship(Plan((put(b"d", True),)))
    assert r.outcome is Outcome.OK
    assert_trees_equal(src, mirror, mtime=True, owner=os.geteuid() == 0)


def test_bad_paths_fail_without_touching_anything(tmp_path) -> None:
    """Absolute, '..', empty-component and empty paths are FAILED, nothing written."""
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    src.mkdir()
    (tmp_path / "escape").write_bytes(b"keep")
    bad = [b"../escape", b"/etc/passwd", b"a//b", b"", b"a/./b"]
    results = LocalShipper(LocalTarget("t", mirror), src).ship(
        Plan(tuple(Action(ActionKind.DELETE, p) for p in bad))
    )
    assert [r.outcome for r in results] == [Outcome.FAILED] * len(bad)
    assert all(relpath_problem(p) for p in bad)
    assert (tmp_path / "escape").read_bytes() == b"keep"


def test_long_names_and_tracks(tmp_path) -> None:
    """A 255-byte name ships (temp names stay short); actions for other
    tracks are not this shipper's; actions naming no track are."""
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    src.mkdir()
    name = b"n" * 255
    with open(os.fsencode(src) + b"/" + name, "wb") as f:
        f.write(b"long")
    shipper = LocalShipper(LocalTarget("t", mirror), src)
    results = shipper.ship(Plan((put(name), put(b"other", tracks=frozenset({"elsewhere"})))))
    assert [(r.track, r.path, r.outcome) for r in results] == [("t", name, Outcome.OK)]
    assert_trees_equal(src, mirror)


def test_errno_classification() -> None:
    """Names the mirror cannot hold are permanent; a sick mirror is transient."""
    assert classify_oserror(OSError(36, "File name too long"))[0] is Outcome.FAILED
    for code in (30, 28, 13, 1, 20, 5, 122):
        outcome, reason = classify_oserror(OSError(code, os.strerror(code)))
        assert outcome is Outcome.RETRY and reason.startswith("target down")


def test_stale_temp_files_are_swept(tmp_path) -> None:
    """A temp file left by a killed ship disappears with the next ship into
    that directory; a source file that merely looks like one is kept."""
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    (src / "d").mkdir(parents=True)
    (mirror / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"f")
    look_alike = ".msync-agent.0123456789abcdef.tmp"
    (src / "d" / look_alike).write_bytes(b"user data")
    (mirror / "d" / ".msync-agent.deadbeefdeadbeef.tmp").write_bytes(b"half a cop")
    shipper = LocalShipper(LocalTarget("t", mirror), src)
    results = shipper.ship(Plan((put(b"d/f"), put(b"d/" + look_alike.encode()))))
    assert all(r.outcome is Outcome.OK for r in results)
    assert_trees_equal(src, mirror)
