"""MsyncShipper against the msync double with two members (mk2, mk3)."""

from __future__ import annotations

import os
import socket
import stat
import sys
import time
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from agent.operate.config import ConfigError, MsyncTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome, Shipper
from agent.ship.msync import check as msync_check
from agent.ship.msync.shipper import MsyncShipper
from tests.doubles.fixtures import MsyncDouble, make_double

OLD = 1_700_000_000  # an mtime well in the past: no same-second hazard


@dataclass
class Rig:
    root: Path
    dbl: MsyncDouble
    target: MsyncTarget

    def shipper(self, **kw: object) -> MsyncShipper:
        target = replace(self.target, **kw)
        return MsyncShipper(target, self.root, env=self.dbl.env())

    def ship(self, *actions: Action, shipper: MsyncShipper | None = None) -> dict[tuple[str, bytes], object]:
        results = (shipper or self.shipper()).ship(Plan(tuple(actions)))
        return {(r.track, r.path): r for r in results}


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    root = tmp_path / "root"
    root.mkdir()
    dbl = make_double(tmp_path / "dbl", base=root, jail=tmp_path)
    target = MsyncTarget(name="c", members=("mk2", "mk3"), msync=str(dbl.msync), base=root, batch=50)
    return Rig(root, dbl, target)


def put(path: bytes, **kw: object) -> Action:
    return Action(ActionKind.PUT, path, **kw)


def write(root: Path, rel: bytes, data: bytes, mtime: int = OLD) -> None:
    full = os.path.join(os.fsencode(root), rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    os.utime(full, (mtime, mtime))


def mirrored(rig: Rig, rel: bytes, member: str | None = None) -> bool:
    """Byte-exact content, mode and whole-second mtime on the member(s)."""
    src = os.path.join(os.fsencode(rig.root), rel)
    s = os.lstat(src)
    for m in [member] if member else ["mk2", "mk3"]:
        dst = os.path.join(os.fsencode(rig.dbl.member_dir(m)), rel)
        try:
            d = os.lstat(dst)
        except FileNotFoundError:
            return False
        if (s.st_mode, int(s.st_mtime)) != (d.st_mode, int(d.st_mtime)):
            return False
        if (
            stat.S_ISREG(s.st_mode)
            and Path(os.fsdecode(src)).read_bytes() != Path(os.fsdecode(dst)).read_bytes()
        ):
            return False
        if stat.S_ISLNK(s.st_mode) and os.readlink(src) != os.readlink(dst):
            return False
    return True


def outcomes(res: dict, path: bytes) -> dict[str, Outcome]:
    return {t: r.outcome for (t, p), r in res.items() if p == path}


def test_is_a_shipper(rig: Rig) -> None:
    """MsyncShipper satisfies the Shipper protocol with one track per member."""
    s = rig.shipper()
    assert isinstance(s, Shipper) and s.tracks == ("c/mk2", "c/mk3")


def test_create_overwrite_delete_rename(rig: Rig) -> None:
    """Create, overwrite (same size, later second), delete and rename all reach both members."""
    write(rig.root, b"d/a.txt", b"AAAA")
    res = rig.ship(put(b"d"), put(b"d/a.txt"))
    assert {r.outcome for r in res.values()} == {Outcome.OK} and mirrored(rig, b"d/a.txt")
    write(rig.root, b"d/a.txt", b"BBBB", mtime=OLD + 1)
    assert set(outcomes(rig.ship(put(b"d/a.txt")), b"d/a.txt").values()) == {Outcome.OK}
    assert mirrored(rig, b"d/a.txt")
    os.rename(rig.root / "d/a.txt", rig.root / "d/b.txt")
    res = rig.ship(Action(ActionKind.DELETE, b"d/a.txt"), put(b"d/b.txt"))
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    assert mirrored(rig, b"d/b.txt") and not (rig.dbl.member_dir("mk2") / "d/a.txt").exists()
    res = rig.ship(Action(ActionKind.DELETE, b"never-there"))
    assert set(outcomes(res, b"never-there").values()) == {Outcome.OK}  # verified by a dry run


def test_member_down_then_caught_up_with_t(rig: Rig) -> None:
    """A down member is RETRY alone; once back, an action naming only its track goes with -t."""
    rig.dbl.set_member("mk3", state="down")
    write(rig.root, b"f", b"data")
    res = rig.ship(put(b"f"))
    assert outcomes(res, b"f") == {"c/mk2": Outcome.OK, "c/mk3": Outcome.RETRY}
    assert "absent" in res[("c/mk3", b"f")].reason
    rig.dbl.set_member("mk3", state="up")
    res = rig.ship(put(b"f", tracks=frozenset({"c/mk3"})))
    assert outcomes(res, b"f") == {"c/mk3": Outcome.OK} and mirrored(rig, b"f", "mk3")
    assert rig.dbl.invocations()[-1][3:5] == [b"-t", b"mk3"]


def test_member_timeout_mid_batch(rig: Rig) -> None:
    """A member that times out (after printing update) may have missed any path of the
    invocation (files are pipelined; update is not a completion receipt): RETRY only there."""
    rig.dbl.set_member("mk3", state="timeout", timeout_after=2, update_then_timeout=True)
    names = [b"t%d" % i for i in range(5)]
    for n in names:
        write(rig.root, n, n)
    res = rig.ship(*(put(n) for n in names))
    assert [res[("c/mk3", n)].outcome for n in names] == [Outcome.RETRY] * 5
    assert all(res[("c/mk2", n)].outcome == Outcome.OK and mirrored(rig, n, "mk2") for n in names)


def test_member_kept_dropped_stays_pending_until_it_pings(rig: Rig) -> None:
    """The sender keeps a timed-out member dropped: later plans and ``-t``
    catch-ups cannot reach it, so its track stays RETRY until it pings again."""
    rig.dbl.set_member("mk3", state="timeout")
    for n in (b"a", b"b"):
        write(rig.root, n, n)
    assert outcomes(rig.ship(put(b"a")), b"a") == {"c/mk2": Outcome.OK, "c/mk3": Outcome.RETRY}
    res = rig.ship(put(b"b"))
    assert outcomes(res, b"b") == {"c/mk2": Outcome.OK, "c/mk3": Outcome.RETRY}
    rig.dbl.update(time_scale=1.0, ping_delay=3600.0)  # answers again, but has not pinged yet
    rig.dbl.set_member("mk3", state="up")
    catch_up = [put(n, tracks=frozenset({"c/mk3"})) for n in (b"a", b"b")]
    res = rig.ship(*catch_up)
    assert {r.outcome for r in res.values()} == {Outcome.RETRY}
    assert not (rig.dbl.member_dir("mk3") / "a").exists()
    rig.dbl.drops().ping("mk3")
    res = rig.ship(*catch_up)
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    assert mirrored(rig, b"a", "mk3") and mirrored(rig, b"b", "mk3")


def test_delete_for_a_member_kept_dropped_is_not_done(rig: Rig) -> None:
    """A delete the dropped member cannot answer is never verified as done."""
    write(rig.root, b"gone", b"g")
    rig.ship(put(b"gone"))
    rig.dbl.set_member("mk3", state="timeout")
    write(rig.root, b"x", b"x")
    rig.ship(put(b"x"))  # mk3 times out and is dropped
    os.unlink(rig.root / "gone")
    res = rig.ship(Action(ActionKind.DELETE, b"gone"))
    assert outcomes(res, b"gone") == {"c/mk2": Outcome.OK, "c/mk3": Outcome.RETRY}
    assert (rig.dbl.member_dir("mk3") / "gone").exists()


HOSTILE = [b"-rf", b"--delete", b"a b", b"two  spaces", b"$(touch pwned)", b"\xff\xfe", b"c" * 240, b"-r"]
UNCARRIABLE = [b"trail ", b"x\ny", b"c" * 241]


def test_hostile_names(rig: Rig, tmp_path: Path) -> None:
    """Hostile names replicate byte-exact or fail with a reason; nothing is executed."""
    nfc, nfd = unicodedata.normalize("NFC", "é").encode(), unicodedata.normalize("NFD", "é").encode()
    deep300 = b"/".join([b"p" * 99] * 3)  # 299 bytes: over the 249-byte command limit
    deep3000 = b"/".join([b"q" * 199] * 15)
    good = [*HOSTILE, nfc, nfd]
    for n in [*good, *UNCARRIABLE, deep300, deep3000, b"plain"]:
        write(rig.root, n, b"content of " + n)
    res = rig.ship(*(put(n) for n in [*good, *UNCARRIABLE, deep300, deep3000, b"plain"]))
    for n in [*good, b"plain"]:
        assert set(outcomes(res, n).values()) == {Outcome.OK}, (n, res[("c/mk2", n)].reason)
        assert mirrored(rig, n), n
    for n in [*UNCARRIABLE, deep300, deep3000]:
        assert set(outcomes(res, n).values()) == {Outcome.FAILED}, n
        assert res[("c/mk2", n)].reason
    assert "escaped path is 299 bytes" in res[("c/mk2", deep300)].reason
    assert not list(tmp_path.rglob("pwned"))
    for m in ("mk2", "mk3"):  # nothing else arrived: no wrong file, no whole-base send
        assert set(os.listdir(os.fsencode(rig.dbl.member_dir(m)))) == {
            n.split(b"/")[0] for n in [*good, b"plain"]
        }


def test_same_second_hazard(rig: Rig) -> None:
    """A file whose mtime is the current second is held back (§5 same-second rewrite)."""
    now = int(time.time())
    write(rig.root, b"hot", b"x", mtime=now)
    s = MsyncShipper(rig.target, rig.root, env=rig.dbl.env(), clock=lambda: now + 0.5)
    res = rig.ship(put(b"hot"), shipper=s)
    assert set(outcomes(res, b"hot").values()) == {Outcome.RETRY}
    assert "current second" in res[("c/mk2", b"hot")].reason


def test_symlinks(rig: Rig, tmp_path: Path) -> None:
    """Links outside the base are refused; for a link inside, the target's mode is restored (§5)."""
    write(rig.root, b"own.txt", b"o")
    (rig.root / "own.txt").chmod(0o640)
    os.utime(rig.root / "own.txt", (OLD, OLD))
    os.symlink("own.txt", rig.root / "sym")
    (tmp_path / "outside").write_bytes(b"secret")
    os.symlink(tmp_path / "outside", rig.root / "out")
    os.symlink("../outside", rig.root / "out2")
    for n in ("sym", "out", "out2"):
        os.utime(rig.root / n, (OLD, OLD), follow_symlinks=False)
    res = rig.ship(put(b"own.txt"), put(b"sym"), put(b"out"), put(b"out2"))
    assert set(outcomes(res, b"sym").values()) == {Outcome.OK}
    for m in ("mk2", "mk3"):
        d = rig.dbl.member_dir(m)
        assert os.readlink(d / "sym") == "own.txt"
        assert stat.S_IMODE((d / "own.txt").stat().st_mode) == 0o640
    for n in (b"out", b"out2"):
        assert set(outcomes(res, n).values()) == {Outcome.FAILED} and "outside" in res[("c/mk2", n)].reason
    assert stat.S_IMODE((tmp_path / "outside").stat().st_mode) != 0o777


def test_recursive_put_and_batches(rig: Rig) -> None:
    """A recursive PUT sends a subtree with -r; large plans split into batches, all acknowledged."""
    for i in range(12):
        write(rig.root, b"tree/sub/f%d" % i, b"%d" % i)
    os.utime(rig.root / "tree/sub", (OLD, OLD))
    os.utime(rig.root / "tree", (OLD, OLD))
    res = rig.ship(put(b"tree", recursive=True))
    assert set(outcomes(res, b"tree").values()) == {Outcome.OK}
    assert all(mirrored(rig, b"tree/sub/f%d" % i) for i in range(12)) and mirrored(rig, b"tree")
    names = [b"b%02d" % i for i in range(25)]
    for n in names:
        write(rig.root, n, n * 3)
    s = rig.shipper(batch=10, concurrency=2)
    before = len(rig.dbl.invocations())
    res = rig.ship(*(put(n) for n in names), shipper=s)
    assert {r.outcome for r in res.values()} == {Outcome.OK} and len(res) == 50
    assert all(mirrored(rig, n) for n in names)
    assert 3 <= len(rig.dbl.invocations()) - before - 1 <= 4


def test_root_below_base(tmp_path: Path) -> None:
    """With the root below makuosan's base, paths are sent base-relative."""
    base = tmp_path / "base"
    root = base / "www"
    root.mkdir(parents=True)
    dbl = make_double(tmp_path / "dbl", base=base, jail=tmp_path)
    target = MsyncTarget(name="c", members=("mk2",), msync=str(dbl.msync), base=base)
    write(root, b"i.html", b"hi")
    res = MsyncShipper(target, root, env=dbl.env()).ship(Plan((put(b"i.html"),)))
    assert [r.outcome for r in res] == [Outcome.OK]
    assert (dbl.member_dir("mk2") / "www/i.html").read_bytes() == b"hi"


def test_target_unreachable(rig: Rig, tmp_path: Path) -> None:
    """Missing msync, daemon down or wrong password: RETRY everything, nothing lost (docs/design.md §9)."""
    write(rig.root, b"f", b"f")
    res = rig.ship(put(b"f"), shipper=rig.shipper(msync=str(tmp_path / "no-msync")))
    assert {r.outcome for r in res.values()} == {Outcome.RETRY}
    assert res[("c/mk2", b"f")].reason == f"msync not found: {tmp_path / 'no-msync'}"
    res = rig.ship(put(b"f"), shipper=rig.shipper(console="unix:/nonexistent.sock"))
    assert {r.outcome for r in res.values()} == {Outcome.RETRY}
    assert "can't connect" in res[("c/mk2", b"f")].reason


def test_password_file(rig: Rig, tmp_path: Path) -> None:
    """A -K file readable by others is refused; a private one with the right password works."""
    rig.dbl.update(password="s3cret")
    key = tmp_path / "key"
    key.write_bytes(b"s3cret\n")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="group/others"):
        rig.shipper(password_file=key)
    key.chmod(0o600)
    write(rig.root, b"f", b"f")
    res = rig.ship(put(b"f"), shipper=rig.shipper(password_file=key))
    assert {r.outcome for r in res.values()} == {Outcome.OK}


def test_single_track_target(rig: Rig) -> None:
    """Without expected members, the target's one track is OK only when every listed member acked."""
    write(rig.root, b"f", b"f")
    rig.dbl.set_member("mk3", state="readonly")
    s = rig.shipper(members=())
    res = rig.ship(put(b"f"), shipper=s)
    assert res[("c", b"f")].outcome == Outcome.RETRY
    rig.dbl.set_member("mk3", state="up")
    assert rig.ship(put(b"f"), shipper=s)[("c", b"f")].outcome == Outcome.OK


def test_delete_verified_per_member(rig: Rig) -> None:
    """A delete a member silently failed (§6 silent failure 2) is RETRY for it alone."""
    write(rig.root, b"x", b"x")
    rig.ship(put(b"x"))
    os.unlink(rig.root / "x")
    rig.dbl.set_member("mk3", immutable=["x"])
    res = rig.ship(Action(ActionKind.DELETE, b"x"))
    assert outcomes(res, b"x") == {"c/mk2": Outcome.OK, "c/mk3": Outcome.RETRY}
    assert "still has" in res[("c/mk3", b"x")].reason
    rig.dbl.set_member("mk3", immutable=[])
    assert set(outcomes(rig.ship(Action(ActionKind.DELETE, b"x")), b"x").values()) == {Outcome.OK}
    assert not (rig.dbl.member_dir("mk3") / "x").exists()


def test_recursive_put_mirrors_subtree_with_excludes(rig: Rig) -> None:
    """A recursive PUT removes member extras (--delete -r) but leaves excluded names alone."""
    write(rig.root, b"d/keep", b"k")
    write(rig.root, b"d/skip.swp", b"s")
    os.utime(rig.root / "d", (OLD, OLD))
    for m in ("mk2", "mk3"):
        write(rig.dbl.member_dir(m), b"d/extra", b"e")
        write(rig.dbl.member_dir(m), b"d/other.swp", b"o")
    s = MsyncShipper(rig.target, rig.root, env=rig.dbl.env(), excludes=["*.swp"])
    res = rig.ship(put(b"d", recursive=True), shipper=s)
    assert set(outcomes(res, b"d").values()) == {Outcome.OK}
    for m in ("mk2", "mk3"):
        names = sorted(os.listdir(rig.dbl.member_dir(m) / "d"))
        assert names == ["keep", "other.swp"]


def test_member_listed_without_name_stays_pending(rig: Rig) -> None:
    """An expected member listed with an empty name (§7) is RETRY; the other is unaffected."""
    rig.dbl.set_member("mk3", state="noname")
    write(rig.root, b"f", b"f")
    res = rig.ship(put(b"f"))
    assert outcomes(res, b"f") == {"c/mk2": Outcome.OK, "c/mk3": Outcome.RETRY}


def test_socket_failed_and_delete_error_retried(rig: Rig) -> None:
    """A unix socket is not replicated: never listed to msync, OK; a recursive PUT whose
    extra cannot be deleted on one member is RETRY for that member only."""
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(rig.root / "sock"))
        os.utime(rig.root / "sock", (OLD, OLD), follow_symlinks=False)
        write(rig.root, b"d/keep", b"k")
        os.utime(rig.root / "d", (OLD, OLD))
        for m in ("mk2", "mk3"):
            write(rig.dbl.member_dir(m), b"d/extra", b"e")
        rig.dbl.set_member("mk3", immutable=["d/extra"])
        res = rig.ship(put(b"sock"), put(b"d", recursive=True))
    finally:
        sock.close()
    assert set(outcomes(res, b"sock").values()) == {Outcome.OK}
    assert not any(os.path.lexists(rig.dbl.member_dir(m) / "sock") for m in ("mk2", "mk3"))
    assert outcomes(res, b"d") == {"c/mk2": Outcome.OK, "c/mk3": Outcome.RETRY}
    assert "Operation not permitted" in res[("c/mk3", b"d")].reason


def test_fifo_in_a_tree_is_never_listed(rig: Rig) -> None:
    """A recursive PUT of a directory holding a fifo ships the rest of the tree
    entry by entry and never the fifo (makuosan's own -r would send it)."""
    write(rig.root, b"d/keep", b"k")
    os.mkfifo(rig.root / "d" / "p")
    os.utime(rig.root / "d" / "p", (OLD, OLD), follow_symlinks=False)
    os.utime(rig.root / "d", (OLD, OLD))
    res = rig.ship(put(b"d", recursive=True), put(b"d/p"))
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    for m in ("mk2", "mk3"):
        assert (rig.dbl.member_dir(m) / "d" / "keep").read_bytes() == b"k"
        assert not os.path.lexists(rig.dbl.member_dir(m) / "d" / "p")


def test_link_to_a_fifo_never_sends_the_fifo(rig: Rig) -> None:
    """A symlink's target is re-sent after the link, but not when it is a fifo."""
    os.mkfifo(rig.root / "p")
    os.utime(rig.root / "p", (OLD, OLD), follow_symlinks=False)
    os.symlink("p", rig.root / "ln")
    os.utime(rig.root / "ln", (OLD, OLD), follow_symlinks=False)
    res = rig.ship(put(b"ln"))
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    for m in ("mk2", "mk3"):
        assert os.readlink(rig.dbl.member_dir(m) / "ln") == "p"
        assert not os.path.lexists(rig.dbl.member_dir(m) / "p")


def test_catch_up_plan_keeps_order_across_member_sets(rig: Rig) -> None:
    """A plan mixing catch-up actions (one member) and new ones (all) ships in plan order."""
    for n in (b"a", b"b", b"c"):
        write(rig.root, n, n)
    mk3 = frozenset({"c/mk3"})
    res = rig.ship(put(b"a", tracks=mk3), put(b"b"), put(b"c", tracks=mk3))
    assert {r.outcome for r in res.values()} == {Outcome.OK} and len(res) == 4
    runs = [inv[3:] for inv in rig.dbl.invocations() if b"--members" not in inv]
    assert runs == [[b"-t", b"mk3", b"--", b"a"], [b"--", b"b"], [b"-t", b"mk3", b"--", b"c"]]
    assert not (rig.dbl.member_dir("mk2") / "a").exists() and mirrored(rig, b"b")


def test_recursive_put_of_trees_the_scanner_cannot_carry(rig: Rig) -> None:
    """makuosan's -r never enters a directory whose name holds a space and re-splits
    a root holding one; such trees go out entry by entry, extras still removed."""
    write(rig.root, b"top/sp dir/child", b"c")
    write(rig.root, b"top/sp dir/deeper/f", b"f")
    write(rig.root, b"top/plain", b"p")
    write(rig.root, b"sp root/sub/x", b"x")
    for m in ("mk2", "mk3"):
        write(rig.dbl.member_dir(m), b"top/sp dir/extra", b"e")
        write(rig.dbl.member_dir(m), b"sp root/sub/old", b"o")
    for d in (b"top/sp dir/deeper", b"top/sp dir", b"top", b"sp root/sub", b"sp root"):
        os.utime(os.path.join(os.fsencode(rig.root), d), (OLD, OLD))
    res = rig.ship(put(b"top", recursive=True), put(b"sp root", recursive=True))
    assert {r.outcome for r in res.values()} == {Outcome.OK}, res
    for rel in (b"top/sp dir/child", b"top/sp dir/deeper/f", b"top/sp dir/deeper", b"top/sp dir", b"top"):
        assert mirrored(rig, rel), rel
    assert mirrored(rig, b"sp root/sub/x") and mirrored(rig, b"sp root")
    for m in ("mk2", "mk3"):
        assert not (rig.dbl.member_dir(m) / "top/sp dir/extra").exists()
        assert not (rig.dbl.member_dir(m) / "sp root/sub/old").exists()


def test_recursive_put_with_an_unsendable_name_inside(rig: Rig) -> None:
    """A newline name inside a tree would abort msync -r part way; the rest of the
    tree is sent and the PUT is FAILED with the reason."""
    write(rig.root, b"t/ok", b"k")
    write(rig.root, b"t/bad\nname", b"b")
    os.utime(os.path.join(os.fsencode(rig.root), b"t"), (OLD, OLD))
    res = rig.ship(put(b"t", recursive=True))
    assert {r.outcome for r in res.values()} == {Outcome.FAILED}
    assert "newline" in res[("c/mk2", b"t")].reason
    assert mirrored(rig, b"t/ok")


def rewrite_keeping_mtime(root: Path, rel: bytes, data: bytes) -> None:
    """Rewrite a file and put its mtime back, as ``touch -r`` or ``cp -p`` would."""
    full = os.path.join(os.fsencode(root), rel)
    st = os.lstat(full)
    with open(full, "wb") as f:
        f.write(data)
    os.utime(full, ns=(st.st_atime_ns, st.st_mtime_ns))


def member_bytes(rig: Rig, rel: bytes) -> list[bytes]:
    return [
        Path(os.fsdecode(os.path.join(os.fsencode(rig.dbl.member_dir(m)), rel))).read_bytes()
        for m in ("mk2", "mk3")
    ]


def test_same_size_rewrite_with_restored_mtime_is_failed(rig: Rig) -> None:
    """Members skip a same-size rewrite whose mtime was restored (they compare size
    and mtime second only, §5); the content check makes that FAILED with a reason for
    both members, an unchanged skipped file stays OK, and a real change ships again."""
    names = [b"same.txt", b"-odd name"]
    for n in [*names, b"keep.txt"]:
        write(rig.root, n, b"AAAA")
    res = rig.ship(*(put(n) for n in [*names, b"keep.txt"]))
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    for n in names:
        rewrite_keeping_mtime(rig.root, n, b"BBBB")
    res = rig.ship(*(put(n) for n in [*names, b"keep.txt"]))
    for n in names:
        assert outcomes(res, n) == {"c/mk2": Outcome.FAILED, "c/mk3": Outcome.FAILED}, res
        assert all("kept older content" in res[(t, n)].reason for t in ("c/mk2", "c/mk3"))
        assert "touch" in res[("c/mk2", n)].reason
        assert member_bytes(rig, n) == [b"AAAA", b"AAAA"]  # the report tells the truth
    assert set(outcomes(res, b"keep.txt").values()) == {Outcome.OK} and mirrored(rig, b"keep.txt")
    check = rig.dbl.invocations()[-1]
    assert check[:2] == [b"-v", b"--check"] and check[check.index(b"--") + 1 :] == sorted(
        [b"./-odd\\ name", b"keep.txt", b"same.txt"]
    )
    for n in names:  # control: a real change (another size) is carried
        write(rig.root, n, b"CCCCC")
    res = rig.ship(*(put(n) for n in names))
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    assert all(mirrored(rig, n) and member_bytes(rig, n) == [b"CCCCC"] * 2 for n in names)


def test_content_check_of_a_catch_up_goes_with_t(rig: Rig) -> None:
    """A catch-up send (-t) that a member skips is checked on that member alone."""
    write(rig.root, b"f", b"AAAA")
    assert set(outcomes(rig.ship(put(b"f")), b"f").values()) == {Outcome.OK}
    rig.dbl.set_member("mk3", state="down")
    rewrite_keeping_mtime(rig.root, b"f", b"BBBB")
    res = rig.ship(put(b"f"))
    assert outcomes(res, b"f") == {"c/mk2": Outcome.FAILED, "c/mk3": Outcome.RETRY}
    rig.dbl.set_member("mk3", state="up")
    res = rig.ship(put(b"f", tracks=frozenset({"c/mk3"})))
    assert outcomes(res, b"f") == {"c/mk3": Outcome.FAILED}
    assert rig.dbl.invocations()[-1][:4] == [b"-v", b"--check", b"-t", b"mk3"]


def check_answering(rig: Rig, tmp_path: Path, out: bytes, err: bytes, rc: int) -> MsyncShipper:
    """A shipper whose msync is the double, except that ``--check`` prints
    ``out``/``err`` and exits ``rc`` (a check that goes wrong)."""
    wrapper = tmp_path / "msync-check-answers"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "if '--check' in sys.argv:\n"
        f"    sys.stdout.buffer.write({out!r}); sys.stderr.buffer.write({err!r}); sys.exit({rc})\n"
        f"os.execv({str(rig.dbl.msync)!r}, [{str(rig.dbl.msync)!r}, *sys.argv[1:]])\n"
    )
    wrapper.chmod(0o755)
    return rig.shipper(msync=str(wrapper))


@pytest.mark.parametrize(
    ("out", "err", "rc", "want"),
    [
        (b"", b"error: can't read socket\n", 1, {"c/mk2": Outcome.RETRY, "c/mk3": Outcome.RETRY}),
        (
            b"mexec: command error 'x'\nmk2: OK f\nmk3: OK f\n",
            b"",
            0,
            {"c/mk2": Outcome.RETRY, "c/mk3": Outcome.RETRY},
        ),
        (b"", b"", 0, {"c/mk2": Outcome.RETRY, "c/mk3": Outcome.RETRY}),
        (
            b"mk2: OK f\n",
            b"error: receive time out: 10.77.0.3(mk3)\n",
            0,
            {"c/mk2": Outcome.RETRY, "c/mk3": Outcome.RETRY},
        ),
        (b"mk2: OK f\n", b"", 0, {"c/mk2": Outcome.OK, "c/mk3": Outcome.RETRY}),
        (b"mk2: OK f\nmk3: NG f\n", b"", 0, {"c/mk2": Outcome.OK, "c/mk3": Outcome.FAILED}),
    ],
)
def test_content_check_without_a_clean_answer_is_retry(
    rig: Rig, tmp_path: Path, out: bytes, err: bytes, rc: int, want: dict
) -> None:
    """A skipped file is OK only on a clean ``HOST: OK P``: a failed, garbled or
    silent check keeps it pending, never OK on doubt."""
    write(rig.root, b"f", b"AAAA")
    assert set(outcomes(rig.ship(put(b"f")), b"f").values()) == {Outcome.OK}
    res = rig.ship(put(b"f"), shipper=check_answering(rig, tmp_path, out, err, rc))
    assert outcomes(res, b"f") == want, res
    assert all(r.reason for r in res.values() if r.outcome is not Outcome.OK)


def test_recursive_put_checks_skipped_children_in_chunks(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Children a recursive send skipped are checked too, a bounded number per
    invocation; one stale child makes the tree FAILED, the members' copies untouched."""
    monkeypatch.setattr(msync_check, "CHUNK", 2)
    for n in (b"d/a", b"d/b", b"d/s/c"):
        write(rig.root, n, b"AAAA")
    os.utime(rig.root / "d/s", (OLD, OLD))
    os.utime(rig.root / "d", (OLD, OLD))
    assert set(outcomes(rig.ship(put(b"d", recursive=True)), b"d").values()) == {Outcome.OK}
    rewrite_keeping_mtime(rig.root, b"d/s/c", b"BBBB")
    before = len(rig.dbl.invocations())
    res = rig.ship(put(b"d", recursive=True))
    assert outcomes(res, b"d") == {"c/mk2": Outcome.FAILED, "c/mk3": Outcome.FAILED}
    checks = [a for a in rig.dbl.invocations()[before:] if b"--check" in a]
    assert sorted(p for a in checks for p in a[a.index(b"--") + 1 :]) == [b"d/a", b"d/b", b"d/s/c"]
    assert len(checks) == 2 and member_bytes(rig, b"d/s/c") == [b"AAAA", b"AAAA"]
