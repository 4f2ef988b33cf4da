"""host:path over a remote shell: the destination path must survive the
remote side's word splitting (file names travel on stdin, never there). A
stand-in for ssh runs the remote command through ``sh -c`` exactly as sshd
would, so an unprotected argument would be split or expanded."""

from __future__ import annotations

import os
import stat

import pytest

from agent.operate.config import RsyncTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome
from agent.ship.rsync.shipper import RsyncShipper, protect_flags
from tests.helpers.trees import assert_trees_equal, snapshot

FAKE_SSH = """#!/bin/sh
# like ssh: drop options and the host, hand the rest to a shell as one string
while [ $# -gt 0 ]; do
  case "$1" in
    -l|-p|-o|-i) shift 2 ;;
    -*) shift ;;
    *) shift; break ;;
  esac
done
cd "{home}" && exec sh -c "$*"
"""

NAMES = [b"-rf", b"a b", b"two  spaces", b"$(touch pwned)", b"x\ny", b"\xff\xfe", b"semi;colon", b"*"]


def test_names_survive_a_remote_shell(tmp_path, extra=()) -> None:
    """Hostile names land byte-exact in a hostile remote directory; nothing runs."""
    src, remote, home = tmp_path / "src", tmp_path / "remote  dir $(touch pwned)", tmp_path / "home"
    for d in (src, remote, home):
        d.mkdir()
    ssh = tmp_path / "fake-ssh"
    ssh.write_text(FAKE_SSH.replace("{home}", str(home)))
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    for n in NAMES:
        with open(os.fsencode(src) + b"/" + n, "wb") as f:
            f.write(n)
    target = RsyncTarget("t", f"somehost:{remote}", options=(f"--rsh={ssh}", *extra), timeout_s=60)
    results = RsyncShipper(target, src).ship(Plan(tuple(Action(ActionKind.PUT, n) for n in NAMES)))
    assert [r.outcome for r in results] == [Outcome.OK] * len(NAMES), results
    assert_trees_equal(src, remote)
    for root in (tmp_path, home):
        assert not any(p.endswith(b"pwned") for p in snapshot(root)), "a command ran"


def test_the_stand_in_shell_does_split(tmp_path) -> None:
    """Control: with argument protection turned off the same transfer breaks,
    so the test above would catch a shipper that forgot it."""
    if protect_flags("rsync") != ("--secluded-args",):
        pytest.skip("this rsync cannot switch protection off by that name")
    with pytest.raises(AssertionError):
        test_names_survive_a_remote_shell(tmp_path, extra=("--old-args", "--no-secluded-args"))
