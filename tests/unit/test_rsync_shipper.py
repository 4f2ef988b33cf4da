"""RsyncShipper pieces against a real rsync: argv shape, batching by source
state, and per-path results of partial transfers."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.operate.config import RsyncTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome
from agent.ship.rsync.shipper import (
    RsyncShipper,
    batch_argv,
    covering_ancestors,
    protect_flags,
    split_plan,
    sweep_skeletons,
)
from tests.fixtures.rsyncd import RsyncDaemon, rsyncd, start_rsyncd  # noqa: F401
from tests.helpers.trees import assert_trees_equal


def put(path: bytes, recursive: bool = False) -> Action:
    return Action(ActionKind.PUT, path, recursive)


@pytest.mark.parametrize("mode", ["delete", "plain", "recursive"])
def test_argv_shape(mode: str) -> None:
    """Names never reach argv; options end with ``--`` before source and dest."""
    target = RsyncTarget("t", "rsync://h:873/mod/sub", options=("--bwlimit=100",))
    argv = batch_argv(target, mode, b"/src/root", ("--secluded-args",))
    assert argv[-3:] == ["--", b"/src/root/", "rsync://h:873/mod/sub/"]
    assert "--files-from=-" in argv and "--from0" in argv and "--delete-missing-args" in argv
    assert "--secluded-args" in argv and "--bwlimit=100" in argv and "--numeric-ids" in argv
    assert ("-r" in argv) == (mode == "recursive")
    assert ("--delete" in argv) == (mode == "recursive")
    assert ("--no-implied-dirs" in argv) == (mode == "delete")


def test_installed_rsync_protects_remote_names() -> None:
    """The installed rsync offers an argument-protection option and we use it."""
    assert protect_flags("rsync") in (("--secluded-args",), ("--protect-args",))


def test_split_plan_by_source_state(tmp_path) -> None:
    """Missing or special -> delete batch, recursive dir -> recursive,
    everything else plain; a symlinked parent counts as missing."""
    root = tmp_path
    (root / "d").mkdir()
    (root / "f").write_bytes(b"f")
    os.mkfifo(root / "fifo")
    os.symlink("d", root / "ln")
    actions = [
        put(b"d", True),
        put(b"f", True),
        put(b"gone"),
        put(b"fifo"),
        put(b"ln/x"),
        put(b"ln"),
        Action(ActionKind.DELETE, b"d"),
        put(b"../escape"),
    ]
    b = split_plan(actions, os.fsencode(root))
    assert [a.path for a in b.recursive] == [b"d"]
    assert [a.path for a in b.plain] == [b"f", b"ln"]
    assert [a.path for a in b.delete] == [b"gone", b"fifo", b"ln/x", b"d"]
    refused = {a.path: (o, r) for a, o, r in b.refused}
    assert list(refused) == [b"../escape"] and refused[b"../escape"][0] is Outcome.FAILED


@given(st.lists(st.lists(st.sampled_from([b"a", b"b", b"c"]), min_size=1, max_size=4).map(b"/".join)))
def test_covering_ancestors(paths: list[bytes]) -> None:
    """Each path is covered by the outermost listed ancestor, or by nothing."""
    cover = covering_ancestors(paths)
    for p in paths:
        anc = cover[p]
        listed = [q for q in paths if p.startswith(q + b"/")]
        if anc is None:
            assert not listed
        else:
            assert anc in listed and not any(anc.startswith(q + b"/") for q in paths)


def test_missing_rsync_retries(tmp_path) -> None:
    """No rsync binary: every path RETRYs with a reason (the target is down)."""
    (tmp_path / "f").write_bytes(b"x")
    shipper = RsyncShipper(RsyncTarget("t", str(tmp_path / "m"), rsync="/nonexistent/rsync"), tmp_path)
    results = shipper.ship(Plan((put(b"f"), Action(ActionKind.DELETE, b"g"))))
    assert [(r.path, r.outcome) for r in results] == [(b"f", Outcome.RETRY), (b"g", Outcome.RETRY)]
    assert all("could not be started" in r.reason for r in results)


def test_bad_option_fails(tmp_path) -> None:
    """A usage error (exit 1) is permanent: FAILED with rsync's words."""
    (tmp_path / "f").write_bytes(b"x")
    shipper = RsyncShipper(RsyncTarget("t", str(tmp_path / "m"), options=("--no-such-option",)), tmp_path)
    [result] = shipper.ship(Plan((put(b"f"),)))
    assert result.outcome is Outcome.FAILED
    assert "exit 1" in result.reason


def test_partial_transfer_per_path(tmp_path) -> None:
    """Paths the daemon refuses are FAILED with its message; the others of the
    same batch are OK and on the mirror."""
    src, module = tmp_path / "src", tmp_path / "module"
    src.mkdir()
    module.mkdir()
    names = [b"blocked\nnl", b"blocked-plain", b"fine", b"-rf", b"x\xff"]
    for n in names:
        with open(os.fsencode(src) + b"/" + n, "wb") as f:
            f.write(n)
    with start_rsyncd(tmp_path / "d", module, options={"exclude": "blocked*"}) as daemon:
        shipper = RsyncShipper(RsyncTarget("t", daemon.url, timeout_s=60), src)
        results = {r.path: r for r in shipper.ship(Plan(tuple(put(n) for n in names)))}
    assert {p for p, r in results.items() if r.outcome is Outcome.FAILED} == {
        b"blocked\nnl",
        b"blocked-plain",
    }
    assert "refused" in results[b"blocked\nnl"].reason
    assert all(results[n].outcome is Outcome.OK for n in (b"fine", b"-rf", b"x\xff"))
    assert_trees_equal(src, module, exclude=[b"blocked\nnl", b"blocked-plain"])


def test_daemon_down_then_up(tmp_path, rsyncd: RsyncDaemon) -> None:  # noqa: F811
    """Daemon stopped: RETRY naming the connection problem; started again: OK."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"f")
    shipper = RsyncShipper(RsyncTarget("t", rsyncd.url, timeout_s=30), src)
    rsyncd.stop()
    [down] = shipper.ship(Plan((put(b"f"),)))
    assert down.outcome is Outcome.RETRY
    assert "rsync exit 10" in down.reason or "rsync exit 5" in down.reason, down.reason
    rsyncd.start()
    [up] = shipper.ship(Plan((put(b"f"),)))
    assert up.outcome is Outcome.OK
    assert_trees_equal(src, rsyncd.module_path)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client installed")
def test_unreachable_ssh_host_retries(tmp_path) -> None:
    """host:path with an unreachable host is the target being down."""
    (tmp_path / "f").write_bytes(b"f")
    target = RsyncTarget("t", "nonexistent.invalid:/srv/m", timeout_s=30)
    [result] = RsyncShipper(target, tmp_path).ship(Plan((put(b"f"),)))
    assert result.outcome is Outcome.RETRY


def test_skeletons_of_dead_agents_are_swept(tmp_path) -> None:
    """A delete skeleton whose agent died is removed; a live one is kept."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        proc_dead = subprocess.Popen(["true"])
        proc_dead.wait()
        (tmp_path / f"msync-agent-rsync-del-{proc_dead.pid}-x1").mkdir()
        (tmp_path / f"msync-agent-rsync-del-{proc.pid}-x2").mkdir()
        (tmp_path / "msync-agent-rsync-del-junk").mkdir()
        sweep_skeletons(str(tmp_path))
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            f"msync-agent-rsync-del-{proc.pid}-x2",
            "msync-agent-rsync-del-junk",
        ]
    finally:
        proc.kill()
        proc.wait()


def test_specials_below_a_recursive_put_are_deleted(tmp_path) -> None:
    """A recursive PUT lists the fifos below it for deletion, but none behind
    a symlink, so rsync -r --no-D cannot leave stale mirror entries there."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "d" / "sub").mkdir(parents=True)
    outside.mkdir()
    os.mkfifo(root / "d" / "sub" / "p\xff")
    os.mkfifo(outside / "far")
    os.symlink(outside, root / "d" / "ln")
    (root / "d" / "f").write_bytes(b"f")
    b = split_plan([put(b"d", True)], os.fsencode(root))
    assert [a.path for a in b.recursive] == [b"d"]
    assert [a.path for a in b.delete] == [os.fsencode("d/sub/p\xff")]
    assert list(b.specials.values()) == [b.delete]
