"""A member cut off mid-send never holds the live ones: the double stalls a
minute (its timing model at scale 1) like makuosan retrying a dead member."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agent.operate.config import MsyncTarget, load_config
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome, ShipResult
from agent.ship.msync.shipper import MsyncShipper
from agent.ship.msync.stall import Suspects, idle_limit
from tests.doubles.fixtures import MsyncDouble, make_double
from tests.helpers.wait import wait_until

OLD = 1_700_000_000
NAMES = [b"a", b"b", b"c"]


@pytest.fixture
def dbl(tmp_path: Path) -> MsyncDouble:
    root = tmp_path / "root"
    root.mkdir()
    d = make_double(tmp_path / "dbl", base=root, jail=tmp_path)
    d.update(time_scale=1.0)  # real costs: a dead member stalls a call for 60 s
    for n in NAMES:
        (root / n.decode()).write_bytes(n)
        os.utime(root / n.decode(), (OLD, OLD))
    return d


def _shipper(dbl: MsyncDouble, **kw: object) -> MsyncShipper:
    target = MsyncTarget(name="c", members=("mk2", "mk3"), msync=str(dbl.msync), base=dbl.base, stall_s=2.0)
    return MsyncShipper(target, dbl.base, env=dbl.env(), **kw)


def _plan(*tracks: str) -> Plan:
    return Plan(tuple(Action(ActionKind.PUT, n, tracks=frozenset(tracks)) for n in NAMES))


def _by_track(results: list[ShipResult]) -> dict[str, set[Outcome]]:
    out: dict[str, set[Outcome]] = {}
    for r in results:
        out.setdefault(r.track, set()).add(r.outcome)
    return out


def _pairs(argv: list[bytes], a: bytes, b: bytes) -> bool:
    return any(argv[i : i + 2] == [a, b] for i in range(len(argv) - 1))


def _has_all(dbl: MsyncDouble, member: str) -> bool:
    return all((dbl.member_dir(member) / n.decode()).exists() for n in NAMES)


def test_live_member_is_current_while_the_other_is_cut_mid_send(dbl: MsyncDouble) -> None:
    """mk3 stops answering: mk2 gets every path within seconds and is OK; the
    ship returns long before makuosan's minute; mk3 stays pending."""
    dbl.set_member("mk3", state="timeout", timeout_after=1, update_then_timeout=True)
    shipper = _shipper(dbl)
    got: list[list[ShipResult]] = []
    worker = threading.Thread(target=lambda: got.append(list(shipper.ship(_plan("c/mk2", "c/mk3")))))
    worker.start()
    try:
        wait_until(lambda: _has_all(dbl, "mk2"), timeout=10, message="mk2 held up by the cut mk3")
        worker.join(45)  # makuosan would hold the call 60 s
        assert not worker.is_alive(), "the ship waited for the dead member"
    finally:
        worker.join()
    assert _by_track(got[0]) == {"c/mk2": {Outcome.OK}, "c/mk3": {Outcome.RETRY}}
    assert not _has_all(dbl, "mk3")


def test_parent_directories_are_settled_without_waiting_for_the_cut_member(dbl: MsyncDouble) -> None:
    """The re-send of shipped paths' parent directories must not block on mk3 either."""
    (dbl.base / "d").mkdir()
    for n in NAMES:
        (dbl.base / "d" / n.decode()).write_bytes(n)
        os.utime(dbl.base / "d" / n.decode(), (OLD, OLD))
    dbl.set_member("mk3", state="timeout")
    shipper = _shipper(dbl)
    plan = Plan(tuple(Action(ActionKind.PUT, b"d/" + n, tracks=frozenset({"c/mk2", "c/mk3"})) for n in NAMES))
    got: list[list[ShipResult]] = []
    worker = threading.Thread(target=lambda: got.append(list(shipper.ship(plan))))
    worker.start()
    try:
        worker.join(45)  # makuosan would hold each call to mk3 for 60 s
        assert not worker.is_alive(), "a call waited for the dead member"
    finally:
        worker.join()
    assert _by_track(got[0]) == {"c/mk2": {Outcome.OK}, "c/mk3": {Outcome.RETRY}}


def test_suspect_member_is_left_out_then_caught_up(dbl: MsyncDouble) -> None:
    """While mk3 is suspect, plans go to mk2 alone (``-t``) without a new
    stall; once mk3 answers again, its pending paths catch up."""
    dbl.set_member("mk3", state="timeout")
    shipper = _shipper(dbl, suspect_s=2.0)
    shipper.ship(_plan("c/mk2", "c/mk3"))
    stalls, before = len(dbl.stalls()), len(dbl.invocations())
    for n in NAMES:
        os.utime(dbl.base / n.decode(), (OLD + 1, OLD + 1))
    res = _by_track(list(shipper.ship(_plan("c/mk2", "c/mk3"))))
    assert res == {"c/mk2": {Outcome.OK}, "c/mk3": {Outcome.RETRY}}
    assert len(dbl.stalls()) == stalls
    sends = [argv for argv in dbl.invocations()[before:] if b"--members" not in argv]
    assert sends and all(_pairs(argv, b"-t", b"mk2") for argv in sends), sends
    dbl.set_member("mk3", state="up")
    dbl.drops().ping("mk3")
    catch_up = _plan("c/mk3")
    wait_until(lambda: _by_track(list(shipper.ship(catch_up))) == {"c/mk3": {Outcome.OK}}, timeout=30)
    assert _has_all(dbl, "mk3")


def test_stall_limit_grows_with_the_biggest_file() -> None:
    """A big file may be silent while it crosses; no limit when stall_s is 0."""
    assert idle_limit(3.0, 0) == 3.0
    assert idle_limit(3.0, 50 * 1024 * 1024) == pytest.approx(13.0)
    assert idle_limit(0.0, 10) is None
    assert idle_limit(3.0, 0, 20_000) == pytest.approx(23.0)  # a --delete listing of a big tree


def test_suspects_expire() -> None:
    """A suspect is left out for the hold time only."""
    now = [100.0]
    s = Suspects(clock=lambda: now[0], hold_s=60.0)
    s.mark(b"mk3")
    assert s.active(b"mk3") and not s.active(b"mk2")
    now[0] += 60.0
    assert not s.active(b"mk3")


def test_stall_is_a_target_setting(tmp_path: Path) -> None:
    """``stall`` (a duration) sets how long a silent call is waited for; 3 s by default."""
    cfg, root = tmp_path / "agent.toml", tmp_path / "root"
    root.mkdir()
    body = f'root = "{root}"\njournal = "{tmp_path / "j"}"\n[[target]]\nname = "c"\nkind = "msync"\n'
    cfg.write_text(body)
    assert load_config(cfg, {}).targets[0].stall_s == 3.0
    cfg.write_text(body + 'stall = "10s"\n')
    assert load_config(cfg, {}).targets[0].stall_s == 10.0
