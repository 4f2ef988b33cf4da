"""A read-only or full mirror is the target being down: RETRY with a reason,
never FAILED, and the same plan succeeds once the mirror is healthy."""

from __future__ import annotations

import pytest

from agent.operate.config import LocalTarget, RsyncTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.base import Outcome
from agent.ship.local.shipper import LocalShipper
from agent.ship.rsync.shipper import RsyncShipper
from tests.helpers import mountns
from tests.helpers.trees import assert_trees_equal

_FAULT_WORDS = {"readonly": "Read-only file system", "full": "No space left on device"}

pytestmark = pytest.mark.skipif(not mountns.available(), reason="needs root and unshare -m")


@pytest.mark.parametrize("kind", ["local", "rsync"])
@pytest.mark.parametrize("fault", mountns.FAULTS)
def test_faulty_mirror_retries_then_recovers(tmp_path, kind: str, fault: str) -> None:
    """Every path RETRYs with a reason naming the fault; after it is gone, OK."""
    root, mirror = tmp_path / "src", tmp_path / "mirror"
    (root / "d").mkdir(parents=True)
    (root / "d" / "big").write_bytes(b"x" * 200_000)  # larger than the 64k tmpfs
    (root / "small").write_bytes(b"small")
    mirror.mkdir()
    rows = mountns.ship_with_faulty_mirror(kind, fault, root, mirror, [b"d", b"small"])
    assert sorted(p for _, p, _, _ in rows) == [b"d", b"small"]
    for _, path, outcome, reason in rows:
        if fault == "full" and path == b"small":
            assert outcome in ("ok", "retry"), (path, outcome, reason)  # fits, or the full disk hit it
            continue
        assert outcome == "retry", (path, outcome, reason)
        assert _FAULT_WORDS[fault] in reason, reason
    assert list(mirror.iterdir()) == []  # the fault lived in the child's namespace only
    if kind == "local":
        shipper = LocalShipper(LocalTarget("t", mirror), root)
    else:
        shipper = RsyncShipper(RsyncTarget("t", str(mirror), timeout_s=60), root)
    plan = Plan(tuple(Action(ActionKind.PUT, p, True) for p in (b"d", b"small")))
    assert all(r.outcome is Outcome.OK for r in shipper.ship(plan))
    assert_trees_equal(root, mirror)
