"""MsyncShipper against a real makuosan 1.3.6 cluster (see README.md here).

Three network namespaces on one bridge: ``mk1`` is the sender whose base is
the agent's root, ``mk2`` and ``mk3`` are receivers. Each daemon runs in its
own UTS namespace, so ``msync --members`` shows distinct host names. msync
talks to mk1 over a unix-socket console from the test's namespace, or over
makuosan's default TCP console from inside h1 (``tcp_cluster``). Skipped when
the real binaries are not installed.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.operate.config import MsyncTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome, ShipResult
from agent.ship.msync.shipper import MsyncShipper
from tests.helpers.trees import assert_trees_equal, diff_trees
from tests.netns.cluster import Cluster, cleanup_stale, netns_unavailable_reason
from tests.real_msync.cluster import RECEIVERS, SKIP_REASON, RealCluster, build_bridge, find_binaries

pytestmark = pytest.mark.real_msync

OLD = 1_600_000_000  # whole-second mtimes well in the past: no same-second hazard


def shipper_for(rc: RealCluster, relay: bool = True, **kw: object) -> MsyncShipper:
    """A shipper of the cluster's sender. Over the TCP console it goes
    through its console relay, whose connections are made inside h1; without
    the relay its msync runs in h1."""
    direct = rc.sender_console == "tcp" and not relay
    msync = rc.msync_in_h1() if direct else rc.msync
    target = MsyncTarget(
        name="real",
        members=RECEIVERS,
        console=rc.console,
        msync=str(msync),
        base=rc.root,
        batch=20,
        timeout_s=120.0,
        console_relay=relay,
        **kw,
    )
    return MsyncShipper(target, rc.root, relay_connect=rc.connect_console)


def _cluster(tmp_path: Path, console: str) -> Iterator[RealCluster]:
    found = find_binaries()
    if found is None:
        pytest.skip(SKIP_REASON)
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"real msync cluster needs network namespaces: {reason}")
    cleanup_stale()
    work = tmp_path / "cluster"
    work.mkdir()
    c = Cluster(tmp_path, n_hosts=3, subnet="10.214.88")
    rc = RealCluster(c, found[0], found[1], work, sender_console=console)
    try:
        c.up()
        build_bridge(c)
        rc.up()
        yield rc
    finally:
        c.down()  # stops every daemon it spawned, then deletes the namespaces


@pytest.fixture
def real_cluster(tmp_path: Path) -> Iterator[RealCluster]:
    """The sender's console on a unix socket."""
    yield from _cluster(tmp_path, "unix")


@pytest.fixture
def tcp_cluster(tmp_path: Path) -> Iterator[RealCluster]:
    """The sender's console on makuosan's default TCP 127.0.0.1:5000 inside h1."""
    yield from _cluster(tmp_path, "tcp")


# ---------------------------------------------------------------------------- helpers
def write(root: Path, rel: bytes, data: bytes, mtime: int = OLD) -> None:
    full = os.path.join(os.fsencode(root), rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    os.utime(full, (mtime, mtime))


def age_dirs(root: Path) -> None:
    """Whole-second, past mtimes on every directory below the root."""
    for dirpath, _, _ in os.walk(os.fsencode(root)):
        if dirpath != os.fsencode(root):
            os.utime(dirpath, (OLD, OLD))


def put(path: bytes, recursive: bool = False, tracks: frozenset[str] = frozenset()) -> Action:
    return Action(ActionKind.PUT, path, recursive=recursive, tracks=tracks)


def ship(rc: RealCluster, *actions: Action, relay: bool = True) -> dict[tuple[str, bytes], ShipResult]:
    s = shipper_for(rc, relay)
    try:
        results = s.ship(Plan(tuple(actions)))
    finally:
        s.close()
    return {(r.track, r.path): r for r in results}


def all_ok(results: dict[tuple[str, bytes], ShipResult]) -> None:
    bad = {k: (r.outcome.value, r.reason) for k, r in results.items() if r.outcome is not Outcome.OK}
    assert not bad, bad


def assert_mirrored(rc: RealCluster, *members: str) -> None:
    """Byte-for-byte: type, content, mode, symlink targets and file mtimes."""
    for m in members or RECEIVERS:
        assert_trees_equal(rc.root, rc.member_dir(m), mtime=True, dir_mtime=False, link_mtime=False)


HOSTILE = [
    b"plain.txt",
    b"with space.txt",
    b"two  spaces",
    b" lead",
    b"-dash.txt",
    b"n/-dash.txt",
    b"$(touch pwned)",
    b"bad\xff\xfename",
    "üñí.txt".encode(),
    b"tab\tname",
    b"deep/a/b/c.txt",
    b"-r",
    b"--delete",
    b"c" * 240,
]
# msync cannot carry these exactly: FAILED, and never approximated on members
UNCARRIABLE = [b"trail ", b"x\ny", b"cr\rx", b"L/" + b"l" * 200 + b"/" + b"m" * 60]


# ---------------------------------------------------------------------------- the test
def test_shipper_against_real_makuosan(real_cluster: RealCluster) -> None:
    rc = real_cluster
    root = rc.root
    # 1. create: single files with hostile names, trees sent recursively (one
    #    holding a directory whose name has a space), a symlink into the base.
    for i, rel in enumerate(HOSTILE):
        write(root, rel, b"content %d\n" % i)
    write(root, b"tree/x", b"x")
    write(root, b"tree/sp dir/child", b"c")
    write(root, b"tree/sub/y y", b"y")
    os.symlink(b"plain.txt", os.path.join(os.fsencode(root), b"link"))
    os.utime(os.path.join(os.fsencode(root), b"link"), (OLD, OLD), follow_symlinks=False)
    (root / "empty").mkdir()
    age_dirs(root)
    actions = [put(rel) for rel in HOSTILE]
    actions += [put(b"tree", recursive=True), put(b"link"), put(b"empty")]
    actions += [put(d) for d in (b"n", b"deep/a/b", b"deep/a", b"deep")]
    all_ok(ship(rc, *actions))
    assert_mirrored(rc)

    for rel in UNCARRIABLE:
        write(root, rel, b"u")
    age_dirs(root)
    res = ship(rc, *[put(rel) for rel in UNCARRIABLE])
    assert {r.outcome for r in res.values()} == {Outcome.FAILED}, res
    for rel in UNCARRIABLE:
        name = os.path.join(os.fsencode(root), rel)
        os.unlink(name)
        if rel.startswith(b"L/"):
            shutil.rmtree(os.path.dirname(os.path.dirname(name)))
    assert_mirrored(rc)

    # 2. update: new content and size, a chmod alone, a grown file inside the tree
    write(root, b"plain.txt", b"a longer new content\n", mtime=OLD + 10)
    os.chmod(root / "with space.txt", 0o600)
    write(root, b"tree/x", b"xx", mtime=OLD + 20)
    age_dirs(root)
    for m in RECEIVERS:  # extras on members inside trees are removed by a recursive put
        write(rc.member_dir(m), b"tree/sp dir/extra", b"e")
        write(rc.member_dir(m), b"tree/sub/extra", b"e")
    all_ok(ship(rc, put(b"plain.txt"), put(b"with space.txt"), put(b"tree", recursive=True)))
    assert_mirrored(rc)

    # 3. delete: files, a whole tree, a rename (delete old + put new)
    os.unlink(os.path.join(os.fsencode(root), b"-dash.txt"))
    os.unlink(os.path.join(os.fsencode(root), b"bad\xff\xfename"))
    shutil.rmtree(root / "tree")
    os.rename(root / "two  spaces", root / "renamed")
    gone = [b"-dash.txt", b"bad\xff\xfename", b"tree", b"two  spaces"]
    all_ok(
        ship(
            rc, *[Action(ActionKind.DELETE, p) for p in gone[:2]], put(b"tree"), put(gone[3]), put(b"renamed")
        )
    )
    assert_mirrored(rc)

    # 4. a member down: it stays pending, the other is served
    rc.stop("mk3")
    rc.wait_members(["mk2"])
    write(root, b"while_down.txt", b"missed by mk3\n")
    os.unlink(root / "plain.txt")
    write(root, b"deep/a/b/c.txt", b"changed while mk3 was down\n", mtime=OLD + 30)
    age_dirs(root)
    missed = [put(b"while_down.txt"), put(b"plain.txt"), put(b"deep/a/b/c.txt")]
    res = ship(rc, *missed)
    assert {p: r.outcome for (t, p), r in res.items() if t == "real/mk3"} == dict.fromkeys(
        [a.path for a in missed], Outcome.RETRY
    )
    all_ok({k: r for k, r in res.items() if k[0] == "real/mk2"})
    assert_mirrored(rc, "mk2")
    assert diff_trees(root, rc.member_dir("mk3"), mtime=True, dir_mtime=False, link_mtime=False)

    # 5. back again and caught up with -t: only the pending track is shipped
    rc.start("mk3")
    rc.wait_members(list(RECEIVERS))
    mk3 = frozenset({"real/mk3"})
    res = ship(rc, *[put(a.path, tracks=mk3) for a in missed])
    assert set(res) == {("real/mk3", a.path) for a in missed}
    all_ok(res)
    assert_mirrored(rc)

    # 6. a same-size rewrite with its old mtime restored: members skip it and
    # keep the old content; msync --check proves it and the shipper says so
    write(root, b"while_down.txt", b"MISSED BY MK3\n")  # same size, same (old) mtime
    res = ship(rc, put(b"while_down.txt"))
    assert {r.outcome for r in res.values()} == {Outcome.FAILED}, res
    assert all("same size" in r.reason for r in res.values()), res
    for m in RECEIVERS:
        assert (rc.member_dir(m) / "while_down.txt").read_bytes() == b"missed by mk3\n"


def burst_tree(root: Path, top: bytes, dirs: int, per: int) -> list[Action]:
    """A new tree ``top/dN/fM``; the plan the planner makes for it (parents first)."""
    actions = [put(top)]
    for d in range(dirs):
        actions.append(put(b"%s/d%d" % (top, d)))
        for f in range(per):
            write(root, b"%s/d%d/f%d" % (top, d, f), b"burst %d %d\n" % (d, f))
    for d in range(dirs):
        actions += [put(b"%s/d%d/f%d" % (top, d, f)) for f in range(per)]
    age_dirs(root)
    return actions


@pytest.mark.parametrize("relay", [True, False], ids=["relay", "direct"])
def test_shipper_over_the_tcp_console(tcp_cluster: RealCluster, relay: bool) -> None:
    """makuosan's default console, through the shipper's relay and directly:
    a new tree (one recursive send), single updates and deletes, a same-size
    rewrite, a member that does not receive (``makuosan -r``): nobody is
    marked done for what it did not take."""
    rc = tcp_cluster
    send = functools.partial(ship, relay=relay)  # through the relay or not
    root = rc.root
    actions = burst_tree(root, b"rel", dirs=3, per=20)
    write(root, b"single.txt", b"one\n")
    all_ok(send(rc, *actions, put(b"single.txt")))
    assert_mirrored(rc)

    write(root, b"rel/d1/f3", b"a longer new content\n", mtime=OLD + 10)
    os.unlink(os.path.join(os.fsencode(root), b"single.txt"))
    age_dirs(root)
    all_ok(send(rc, put(b"rel/d1/f3"), Action(ActionKind.DELETE, b"single.txt")))
    assert_mirrored(rc)

    # a same-size rewrite with its old mtime restored inside a whole tree: FAILED
    write(root, b"rel/d2/f4", b"BURST 2 4\n")
    res = send(rc, *actions)
    assert {r.outcome for (_, p), r in res.items() if p == b"rel/d2/f4"} == {Outcome.FAILED}, res
    all_ok({k: r for k, r in res.items() if k[1] != b"rel/d2/f4"})
    write(root, b"rel/d2/f4", b"BURST 2 4\n", mtime=OLD + 40)
    age_dirs(root)

    # mk3 restarted as a read-only node (makuosan -r): listed, silent at level 2
    rc.stop("mk3")
    rc.start("mk3", "-r")
    rc.wait_members(list(RECEIVERS))
    more = burst_tree(root, b"rel2", dirs=2, per=5)
    write(root, b"rel/d0/f0", b"changed for a read-only mk3\n", mtime=OLD + 50)
    age_dirs(root)
    res = send(rc, *more, put(b"rel/d0/f0"), put(b"rel/d2/f4"))
    assert {r.outcome for (t, _), r in res.items() if t == "real/mk3"} == {Outcome.RETRY}, res
    all_ok({k: r for k, r in res.items() if k[0] == "real/mk2"})
    assert_mirrored(rc, "mk2")


def test_scattered_rewrites_over_the_tcp_console(tcp_cluster: RealCluster) -> None:
    """One file rewritten in each of many directories below one top
    directory goes out in several msync calls at once through the relay:
    every member answers for every file, the directories end with the
    source's mtime, a same-size rewrite with its old mtime is FAILED, and
    a member restarted read-only (``makuosan -r``) stays pending."""
    rc = tcp_cluster
    root = rc.root
    dirs = [b"spread/d%02d" % d for d in range(40)]
    for d in dirs:
        for name in (b"f", b"g", b"h"):  # g, h unchanged: no recursive send carries the directory
            write(root, d + b"/" + name, b"base %s\n" % d)
    age_dirs(root)
    all_ok(ship(rc, put(b"spread", recursive=True)))
    for i, d in enumerate(dirs):
        write(root, d + b"/f", b"round one rewrites %s\n" % d, mtime=OLD + 100 + i)
    age_dirs(root)
    all_ok(ship(rc, *[put(d + b"/f") for d in dirs]))
    for m in RECEIVERS:
        assert_trees_equal(root / "spread", rc.member_dir(m) / "spread", mtime=True, dir_mtime=True)
    lost = dirs[7] + b"/f"
    write(root, lost, b"ROUND ONE REWRITES " + dirs[7] + b"\n", mtime=OLD + 107)  # same size and mtime
    for i, d in enumerate(dirs[:20]):
        write(root, d + b"/h", b"round one and a half %s\n" % d, mtime=OLD + 150 + i)
    age_dirs(root)
    res = ship(rc, put(lost), *[put(d + b"/h") for d in dirs[:20]])
    assert {r.outcome for (_, p), r in res.items() if p == lost} == {Outcome.FAILED}, res
    all_ok({k: r for k, r in res.items() if k[1] != lost})
    write(root, lost, b"ROUND ONE REWRITES " + dirs[7] + b"\n", mtime=OLD + 300)
    age_dirs(root)
    all_ok(ship(rc, put(lost)))
    for m in RECEIVERS:
        assert_trees_equal(root / "spread", rc.member_dir(m) / "spread", mtime=True, dir_mtime=True)

    rc.stop("mk3")
    rc.start("mk3", "-r")
    rc.wait_members(list(RECEIVERS))
    for i, d in enumerate(dirs):
        write(root, d + b"/g", b"round two, a read-only mk3 %s\n" % d, mtime=OLD + 200 + i)
    age_dirs(root)
    res = ship(rc, *[put(d + b"/g") for d in dirs])
    assert {r.outcome for (t, _), r in res.items() if t == "real/mk3"} == {Outcome.RETRY}, res
    all_ok({k: r for k, r in res.items() if k[0] == "real/mk2"})
    assert_trees_equal(root / "spread", rc.member_dir("mk2") / "spread", mtime=True, dir_mtime=True)


def test_live_member_served_while_the_other_is_cut(tcp_cluster: RealCluster) -> None:
    """mk3's cable is pulled mid-life (its daemon never says goodbye): makuosan
    would hold every call a minute; mk2 still gets each change, mk3 stays
    pending, and is caught up with ``-t`` once it is back."""
    rc = tcp_cluster
    root = rc.root
    rc.cluster.cut("h3")
    s = shipper_for(rc, stall_s=2.0)
    changes = [b"cut1.txt", b"cut2.txt"]
    for i, rel in enumerate(changes):
        write(root, rel, b"while mk3 is cut %d\n" % i)
        res = {(r.track, r.path): r for r in s.ship(Plan((put(rel),)))}
        assert res[("real/mk2", rel)].outcome is Outcome.OK, res
        assert res[("real/mk3", rel)].outcome is Outcome.RETRY, res
        assert (rc.member_dir("mk2") / os.fsdecode(rel)).read_bytes() == b"while mk3 is cut %d\n" % i
    s.close()
    rc.cluster.restore("h3")
    rc.stop("mk3")  # back for good: a restarted daemon is listed again at once
    rc.start("mk3")
    rc.wait_members(list(RECEIVERS))
    mk3 = frozenset({"real/mk3"})
    all_ok(ship(rc, *[put(rel, tracks=mk3) for rel in changes]))
    for rel in changes:
        assert (rc.member_dir("mk3") / os.fsdecode(rel)).read_bytes() == (
            root / os.fsdecode(rel)
        ).read_bytes()
