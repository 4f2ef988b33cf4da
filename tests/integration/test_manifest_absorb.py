"""One manifest serves every track. A track that ships late captures the tree
as it is then, possibly after a change whose event was lost (an overflow, a
kill); if the manifest took that state, the scan after the loss would see no
difference, and a track that shipped earlier would keep the old path for
ever. The manifest keeps its state instead, and the scan ships the change to
every track."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from agent.operate.config import LocalTarget, RsyncTarget
from agent.scan.scanner import Scanner
from agent.ship.actions import Plan
from agent.ship.base import ShipResult
from agent.ship.local.shipper import LocalShipper
from agent.ship.replayer import Replayer
from agent.ship.rsync.shipper import RsyncShipper
from agent.tree.excludes import Excludes
from journal import IS_DIR, Entry, Journal, Op


def _drain(replayer: Replayer, journal: Journal, track: str) -> None:
    for _ in range(50):
        replayer.step()
        if not journal.pending(track):
            return
    raise AssertionError(f"{track} did not drain")


def _two_mirrors(tmp_path: Path) -> dict[str, Path]:
    """An early and a late track's mirror directories."""
    mirrors = {t: tmp_path / t for t in ("early", "late")}
    for m in mirrors.values():
        m.mkdir()
    return mirrors


def _replayers(journal: Journal, mirrors: dict[str, Path], root: Path, **kw: object) -> dict[str, Replayer]:
    """One replayer per track, each shipping to its local mirror."""
    return {
        t: Replayer(
            journal, LocalShipper(LocalTarget(t, m), root), root, settle_s=0.0, rng=random.Random(1), **kw
        )  # type: ignore[arg-type]
        for t, m in mirrors.items()
    }


def test_a_late_track_does_not_hide_a_lost_move_from_an_early_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"moved away while its event was lost\n")
    mirrors = _two_mirrors(tmp_path)
    with Journal.open(tmp_path / "journal", root=str(root), tracks=list(mirrors)) as journal:
        replayers = _replayers(journal, mirrors, root)
        now = time.time_ns()
        journal.append([Entry(Op.CHANGE, b"d", time_ns=now, flags=1), Entry(Op.CHANGE, b"d/f", time_ns=now)])
        _drain(replayers["early"], journal, "early")
        assert (mirrors["early"] / "d" / "f").exists()
        os.rename(root / "d", root / "e")  # its MOVE is never journaled: the event was lost
        _drain(replayers["late"], journal, "late")  # ships what it finds: d gone
        Scanner(root, journal, Excludes(())).scan(since_ns=None)  # the scan that follows a loss
        for t in mirrors:
            _drain(replayers[t], journal, t)
        for t, m in mirrors.items():
            assert not (m / "d").exists(), f"{t} keeps the path the tree lost"
            assert (m / "e" / "f").read_bytes() == b"moved away while its event was lost\n", t


class _WriteBeforeShip:
    """A shipper that lets the tree change between the replayer's capture
    and the copy: ``change`` runs at the start of every ship."""

    def __init__(self, inner: LocalShipper | RsyncShipper, change: Callable[[], None]) -> None:
        self._inner, self._change = inner, change

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def ship(self, plan: Plan) -> Sequence[ShipResult]:
        self._change()
        return self._inner.ship(plan)


def _local(mirror: Path, root: Path) -> LocalShipper:
    return LocalShipper(LocalTarget("m", mirror), root)


def _rsync(mirror: Path, root: Path) -> RsyncShipper:
    return RsyncShipper(RsyncTarget("m", str(mirror), timeout_s=60), root)


@pytest.mark.parametrize("make", [_local, _rsync], ids=["local", "rsync"])
def test_a_name_made_during_a_recursive_put_never_outlives_its_source_on_the_mirror(
    tmp_path: Path, make: Callable[[Path, Path], LocalShipper | RsyncShipper]
) -> None:
    """A directory moved within the tree goes out recursively. A file made in it after the
    capture, whose event is then lost (a kill, an overflow) and which is
    removed while nobody watches, must not stay on the mirror: the mirror may
    hold only names the manifest knows, or the scan that follows the loss has
    nothing to compare."""
    root, mirror = tmp_path / "root", tmp_path / "mirror"
    (root / "d").mkdir(parents=True)
    (root / "d" / "a").write_bytes(b"captured\n")
    mirror.mkdir()
    made = []

    def make_late_file() -> None:
        if not made:
            (root / "d" / "late").write_bytes(b"made after the capture\n")
            made.append(True)

    with Journal.open(tmp_path / "journal", root=str(root), tracks=["m"]) as journal:
        shipper = _WriteBeforeShip(make(mirror, root), make_late_file)
        replayer = Replayer(journal, shipper, root, settle_s=0.0, rng=random.Random(1))
        journal.append([Entry(Op.MOVE, b"old", b"d", time_ns=time.time_ns(), flags=IS_DIR)])
        _drain(replayer, journal, "m")
        assert (mirror / "d" / "late").exists()  # the copy took what it found
        (root / "d" / "late").unlink()  # its CREATE and DELETE are never journaled: lost
        Scanner(root, journal, Excludes(())).scan(since_ns=None)
        _drain(replayer, journal, "m")
        assert (mirror / "d" / "a").read_bytes() == b"captured\n"
        assert not (mirror / "d" / "late").exists(), "the mirror keeps a name the source lost"


def test_a_late_track_moving_a_directory_in_does_not_hide_names_an_early_track_holds(tmp_path: Path) -> None:
    """Both tracks ship the same directory move (a delete of the destination
    and a recursive put). The early track copies ``d/x``; ``d/x`` then goes
    while its event is lost; the late track's copy lacks it, and its delete
    of the destination must not make the manifest forget ``d/x``, or the scan
    that follows the loss never removes it from the early mirror."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "x").write_bytes(b"copied by the early track only\n")
    (root / "d" / "y").write_bytes(b"stays\n")
    mirrors = _two_mirrors(tmp_path)
    with Journal.open(tmp_path / "journal", root=str(root), tracks=list(mirrors)) as journal:
        replayers = _replayers(journal, mirrors, root)
        journal.append([Entry(Op.MOVE, b"old", b"d", time_ns=time.time_ns(), flags=IS_DIR)])
        _drain(replayers["early"], journal, "early")
        assert (mirrors["early"] / "d" / "x").exists()
        (root / "d" / "x").unlink()  # its DELETE is never journaled: the event was lost
        _drain(replayers["late"], journal, "late")
        Scanner(root, journal, Excludes(())).scan(since_ns=None)  # the scan that follows a loss
        for t in mirrors:
            _drain(replayers[t], journal, t)
        for t, m in mirrors.items():
            assert not (m / "d" / "x").exists(), f"{t} keeps a name the tree lost"
            assert (m / "d" / "y").read_bytes() == b"stays\n", t


def test_a_late_tracks_delete_does_not_hide_a_later_name_an_early_track_holds(tmp_path: Path) -> None:
    """``rm -r X; mkdir X; echo > X/y``: the early track ships all of it; the
    late track ships the delete of ``X`` alone first, and the manifest forgets
    ``X/y`` with it. ``X/y`` then goes while its event is lost: when the late
    track comes to ``X/y`` and finds it gone, every track must ship its
    removal, though the manifest no longer knows it."""
    root = tmp_path / "root"
    root.mkdir()
    mirrors = _two_mirrors(tmp_path)
    with Journal.open(tmp_path / "journal", root=str(root), tracks=list(mirrors)) as journal:
        replayers = _replayers(journal, mirrors, root, batch_limit=1)
        journal.append([Entry(Op.DELETE, b"X", time_ns=time.time_ns(), flags=IS_DIR)])
        (root / "X").mkdir()
        (root / "X" / "y").write_bytes(b"made after the delete\n")
        now = time.time_ns()
        journal.append(
            [Entry(Op.CHANGE, b"X", time_ns=now, flags=IS_DIR), Entry(Op.CHANGE, b"X/y", time_ns=now)]
        )
        _drain(replayers["early"], journal, "early")
        assert (mirrors["early"] / "X" / "y").exists()
        replayers["late"].step()  # the delete of X alone: the manifest forgets X/y
        (root / "X" / "y").unlink()  # its DELETE is never journaled: the event was lost
        _drain(replayers["late"], journal, "late")
        Scanner(root, journal, Excludes(())).scan(since_ns=None)
        for t in mirrors:
            _drain(replayers[t], journal, t)
        for t, m in mirrors.items():
            assert not (m / "X" / "y").exists(), f"{t} keeps a name the tree lost"


def test_a_move_away_drops_a_state_recorded_from_an_older_entry_still_pending(tmp_path: Path) -> None:
    """A put can be recorded while its entry stays pending (held behind an
    older removal above it); the path's removal then goes out with that
    entry coalesced in. The removal counts from its own entry (the MOVE), not
    from the oldest entry of the group: otherwise the manifest would keep a
    name that neither the tree nor any mirror holds, and verify would call a
    clean mirror drifted."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"one\n")
    mirrors = _two_mirrors(tmp_path)
    with Journal.open(tmp_path / "journal", root=str(root), tracks=list(mirrors)) as journal:
        replayers = _replayers(journal, mirrors, root)
        journal.append([Entry(Op.CHANGE, b"f", time_ns=time.time_ns())])
        for t in mirrors:
            _drain(replayers[t], journal, t)
        (root / "f").write_bytes(b"two\n")
        (seq, _last) = journal.append([Entry(Op.CHANGE, b"f", time_ns=time.time_ns())])
        journal.mark_done("early", [], {b"f": journal.manifest_get(b"f")}, origin={b"f": seq})
        os.rename(root / "f", root / "g")
        journal.append([Entry(Op.MOVE, b"f", b"g", time_ns=time.time_ns())])
        for t in mirrors:
            _drain(replayers[t], journal, t)
        assert journal.manifest_get(b"f") is None, "the manifest keeps a name nothing holds"
        for m in mirrors.values():
            assert not (m / "f").exists() and (m / "g").read_bytes() == b"two\n"
