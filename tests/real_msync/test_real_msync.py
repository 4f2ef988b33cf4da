"""MsyncShipper against a real makuosan 1.3.6 cluster (see README.md here).

Three network namespaces on one bridge: ``mk1`` is the sender whose base is
the agent's root, ``mk2`` and ``mk3`` are receivers. Each daemon runs in its
own UTS namespace, so ``msync --members`` shows distinct host names. msync
itself runs in the test's namespace and talks to mk1 over a unix-socket
console. Skipped when the real binaries are not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.operate.config import MsyncTarget
from agent.ship.base import Outcome, ShipResult
from agent.ship.msync.shipper import MsyncShipper
from agent.ship.plan import Action, ActionKind, Plan
from tests.helpers.trees import assert_trees_equal, diff_trees
from tests.helpers.wait import wait_until
from tests.netns.cluster import Cluster, cleanup_stale, netns_unavailable_reason, stop_process

pytestmark = pytest.mark.real_msync

SKIP_REASON = "real msync/makuosan not installed; set MSYNC_REAL_BIN_DIR"
OLD = 1_600_000_000  # whole-second mtimes well in the past: no same-second hazard
RECEIVERS = ("mk2", "mk3")
# Sets the host name inside the fresh UTS namespace, then becomes makuosan.
_AS_HOST = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execv(sys.argv[2], sys.argv[2:])"


def find_binaries() -> tuple[Path, Path] | None:
    """(msync, makuosan) from $MSYNC_REAL_BIN_DIR (makuosan may sit in the
    sibling ``sbin``, where ``make install`` puts it), else from PATH."""
    bin_dir = os.environ.get("MSYNC_REAL_BIN_DIR")
    if bin_dir:
        d = Path(bin_dir)
        msync = d / "msync"
        daemons = [d / "makuosan", d.parent / "sbin" / "makuosan"]
        makuosan = next((p for p in daemons if os.access(p, os.X_OK)), None)
        return (msync, makuosan) if makuosan and os.access(msync, os.X_OK) else None
    msync_path, makuosan_path = shutil.which("msync"), shutil.which("makuosan")
    if msync_path and makuosan_path:
        return Path(msync_path), Path(makuosan_path)
    return None


@dataclass
class RealCluster:
    """The running cluster: the base (agent root), receiver dirs, the console."""

    cluster: Cluster
    msync: Path
    makuosan: Path
    work: Path
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.work / "mk1"

    @property
    def console(self) -> Path:
        return self.work / "mk1.sock"

    def member_dir(self, name: str) -> Path:
        return self.work / name

    def start(self, name: str) -> None:
        """Start ``name``'s daemon in its host namespace under its own host name."""
        host = {"mk1": "h1", "mk2": "h2", "mk3": "h3"}[name]
        base, sock = self.work / name, self.work / f"{name}.sock"
        base.mkdir(exist_ok=True)
        sock.unlink(missing_ok=True)
        argv = ["unshare", "--uts", "--", sys.executable, "-c", _AS_HOST, name, str(self.makuosan)]
        argv += ["-n", "-b", str(base), "-U", str(sock)]
        with open(self.work / f"{name}.log", "ab") as log:
            self.daemons[name] = self.cluster.spawn(host, argv, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, name: str) -> None:
        """SIGTERM: makuosan multicasts EXIT and the sender drops it at once."""
        stop_process(self.daemons.pop(name))

    def members(self) -> list[str]:
        res = subprocess.run(
            [str(self.msync), "-c", f"unix:{self.console}", "--members"],
            capture_output=True,
            check=False,
            timeout=30,
        )
        lines = res.stdout.decode("utf-8", "replace").splitlines()
        return sorted(line.split()[0] for line in lines if line and not line.startswith(("Total:", " ")))

    def wait_members(self, expected: list[str]) -> None:
        wait_until(lambda: self.members() == sorted(expected), timeout=30, message=f"members {expected}")

    def shipper(self) -> MsyncShipper:
        target = MsyncTarget(
            name="real",
            members=RECEIVERS,
            console=f"unix:{self.console}",
            msync=str(self.msync),
            base=self.root,
            batch=20,
            timeout_s=120.0,
        )
        return MsyncShipper(target, self.root)


def _build(c: Cluster) -> None:
    """Multicast must flood the bridge and leave each host through eth0."""
    hub = ["ip", "-n", c.hub, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"]
    subprocess.run(hub, check=True, capture_output=True)
    for h in c.hosts.values():
        route = ["ip", "-n", h.netns, "route", "add", "224.0.0.0/4", "dev", "eth0"]
        subprocess.run(route, check=True, capture_output=True)


@pytest.fixture
def real_cluster(tmp_path: Path) -> Iterator[RealCluster]:
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
    rc = RealCluster(c, found[0], found[1], work)
    try:
        c.up()
        _build(c)
        for name in ("mk1", *RECEIVERS):
            rc.start(name)
        wait_until(rc.console.exists, timeout=30, message="mk1 console socket")
        rc.wait_members(list(RECEIVERS))
        yield rc
    finally:
        c.down()  # stops every daemon it spawned, then deletes the namespaces


# ---------------------------------------------------------------------------- helpers
def write(root: Path, rel: bytes, data: bytes, mtime: int = OLD) -> None:
    full = os.path.join(os.fsencode(root), rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
    os.utime(full, (mtime, mtime))


def settle_dirs(root: Path) -> None:
    """Whole-second, past mtimes on every directory below the root."""
    for dirpath, _, _ in os.walk(os.fsencode(root)):
        if dirpath != os.fsencode(root):
            os.utime(dirpath, (OLD, OLD))


def put(path: bytes, recursive: bool = False, tracks: frozenset[str] = frozenset()) -> Action:
    return Action(ActionKind.PUT, path, recursive=recursive, tracks=tracks)


def ship(rc: RealCluster, *actions: Action) -> dict[tuple[str, bytes], ShipResult]:
    results = rc.shipper().ship(Plan(tuple(actions)))
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
    settle_dirs(root)
    actions = [put(rel) for rel in HOSTILE]
    actions += [put(b"tree", recursive=True), put(b"link"), put(b"empty")]
    actions += [put(d) for d in (b"n", b"deep/a/b", b"deep/a", b"deep")]
    all_ok(ship(rc, *actions))
    assert_mirrored(rc)

    for rel in UNCARRIABLE:
        write(root, rel, b"u")
    settle_dirs(root)
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
    settle_dirs(root)
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
    settle_dirs(root)
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
