"""Target outages: every path RETRYs with a reason, nothing is lost, and the
same plan succeeds once the target is back."""

from __future__ import annotations

import os

import pytest

from agent.ship.base import Outcome
from tests.contract.conftest import Rig
from tests.contract.test_shipper_contract import write


def test_down_then_up(rig: Rig) -> None:
    """While the target is down: RETRY with a reason for every path; after it
    is back: OK and the mirror equals the source."""
    if rig.stop_target is None or rig.start_target is None:
        pytest.skip(f"{rig.kind} rig cannot take its target down")
    write(rig, b"before", b"before")
    rig.put_ok(b"before")
    write(rig, b"while-down/f", b"f")
    os.unlink(rig.src(b"before"))
    rig.stop_target()
    results = rig.put(b"while-down", b"before", recursive=True)
    assert results, "a result per path is expected"
    for r in results:
        assert r.outcome is Outcome.RETRY, r
        assert r.reason, r
    rig.start_target()
    rig.put_ok(b"while-down", b"before", recursive=True)
    rig.assert_mirrored()
