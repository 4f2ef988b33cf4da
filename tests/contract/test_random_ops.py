"""Random sequences of user operations, shipped as the planner would, must
leave the mirror equal to the source (local and rsync-to-path: the cheap
transports; the fixed cases in the contract suite cover the others)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ship.actions import Action, ActionKind
from tests.contract.conftest import Rig, _local_rig, _rsync_path_rig

NAMES = [b"a", b"b", b"-x", b"sp ace", b"n\nl", b"\xff", b"#h#", b";s"]
rel = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(b"/".join)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), rel, st.binary(max_size=64)),
        st.tuples(st.just("mkdir"), rel, st.none()),
        st.tuples(st.just("symlink"), rel, st.sampled_from([b"a", b"../b", b"/abs/t", b"n\nl"])),
        st.tuples(st.just("remove"), rel, st.none()),
        st.tuples(st.just("rename"), rel, rel),
        st.tuples(st.just("chmod"), rel, st.sampled_from([0o600, 0o755, 0o2750])),
    ),
    min_size=1,
    max_size=8,
)


def _remove(path: bytes) -> bool:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
        return True
    if os.path.lexists(path):
        os.unlink(path)
        return True
    return False


def _plain_route(rig: Rig, path: bytes) -> bool:
    """No parent of ``path`` is a symlink or a non-directory."""
    parts = path.split(b"/")
    for n in range(1, len(parts)):
        p = rig.src(b"/".join(parts[:n]))
        if os.path.islink(p) or (os.path.lexists(p) and not os.path.isdir(p)):
            return False
    return True


def _apply(rig: Rig, op: str, path: bytes, arg: object) -> list[Action]:
    """Do one operation on the source; return the planner's actions for it
    (an empty list when the operation was impossible in the current tree)."""
    full = rig.src(path)
    parent = os.path.dirname(full)
    put = rig.action
    if not _plain_route(rig, path) or (op in ("write", "chmod") and os.path.islink(full)):
        return []  # users can write through links, but the events then name the target
    if op == "rename" and not _plain_route(rig, arg):
        return []
    try:
        if op == "remove":
            return [put(ActionKind.DELETE, path)] if _remove(full) else []
        if op == "chmod":
            if not os.path.lexists(full) or os.path.islink(full):
                return []
            os.chmod(full, arg)
            return [put(ActionKind.PUT, path)]
        if op == "rename":
            dest = rig.src(arg)
            if not os.path.lexists(full) or dest == full or dest.startswith(full + b"/"):
                return []
            if full.startswith(dest + b"/"):
                return []  # onto its own ancestor: rename(2) refuses it too
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            _remove(dest)
            os.rename(full, dest)
            return [put(ActionKind.DELETE, path), put(ActionKind.PUT, arg, recursive=True)]
        os.makedirs(parent, exist_ok=True)
        if op == "write":
            if os.path.isdir(full) and not os.path.islink(full):
                return []
            with open(full, "wb") as f:
                f.write(arg)
        elif op == "mkdir":
            os.mkdir(full)
        else:
            os.symlink(arg, full)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        return []
    parts = path.split(b"/")
    return [put(ActionKind.PUT, b"/".join(parts[:n])) for n in range(1, len(parts) + 1)]


def _run_steps(build, steps) -> None:
    with tempfile.TemporaryDirectory(prefix="contract-random-") as tmp:
        rig = build(Path(tmp))
        for op, path, arg in steps:
            actions = _apply(rig, op, path, arg)
            if actions:
                rig.ship_ok(*actions)
            rig.assert_mirrored()


BUILDERS = pytest.mark.parametrize("build", [_local_rig, _rsync_path_rig], ids=["local", "rsync-path"])


@BUILDERS
@settings(max_examples=6, deadline=None)
@given(steps=ops)
def test_random_operations_converge(build, steps) -> None:
    """After every shipped step, mirror == source (a few sequences by default)."""
    _run_steps(build, steps)


@pytest.mark.soak
@BUILDERS
@settings(max_examples=400, deadline=None)
@given(steps=ops)
def test_random_operations_converge_soak(build, steps) -> None:
    """The same, for many more sequences."""
    _run_steps(build, steps)
