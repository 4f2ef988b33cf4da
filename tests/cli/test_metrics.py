"""The Prometheus endpoint, scraped over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.operate.metrics import Metrics
from journal import Entry, Journal, Op
from tests.helpers.metrics import scrape

S = 10**9


@pytest.fixture
def metrics() -> Iterator[tuple[Metrics, int]]:
    m = Metrics()
    port = m.serve(0)
    try:
        yield m, port
    finally:
        m.close()


def test_counters_and_gauges_move(metrics: tuple[Metrics, int], tmp_path: Path) -> None:
    """Counters the daemon bumps and gauges taken from journal stats are served."""
    m, port = metrics
    before = scrape(port)
    assert before["msync_agent_events_journaled_total"] == 0
    m.add_journaled(5)
    m.add_journaled(2)
    m.add_ship_outcomes("cluster/web2", {"ok": 3, "retry": 1, "failed": 0})
    m.add_overflow()
    m.observe_scan(0.4)
    (tmp_path / "root").mkdir()
    with Journal.open(tmp_path / "j", root=str(tmp_path / "root"), tracks=["cluster/web2", "dr"]) as j:
        j.append([Entry(Op.CHANGE, b"a", time_ns=time.time_ns() - 20 * S), Entry(Op.CHANGE, b"b")])
        j.mark_dead("dr", {1: "refused"})
        m.update_from_stats(j.stats())
    after = scrape(port)
    assert after["msync_agent_events_journaled_total"] == 7
    assert after['msync_agent_ship_outcomes_total{outcome="ok",track="cluster/web2"}'] == 3
    assert after['msync_agent_ship_outcomes_total{outcome="retry",track="cluster/web2"}'] == 1
    assert after["msync_agent_overflows_total"] == 1
    assert after["msync_agent_scan_duration_seconds_count"] == 1
    assert (
        after['msync_agent_pending{track="cluster/web2"}'] == 2
        and after['msync_agent_pending{track="dr"}'] == 1
    )
    assert after['msync_agent_dead_letters{track="dr"}'] == 1
    assert 20 <= after['msync_agent_oldest_pending_seconds{track="cluster/web2"}'] < 600


def test_binds_loopback_by_default(metrics: tuple[Metrics, int]) -> None:
    """The endpoint listens on 127.0.0.1 only unless metrics_address says otherwise."""
    m, _ = metrics
    assert m._server is not None and m._server.server_address[0] == "127.0.0.1"


def test_update_from_totals_moves_by_difference(metrics: tuple[Metrics, int]) -> None:
    """Running totals from the daemon become counter increments."""
    m, port = metrics
    m.update_from_totals(
        entries_journaled=10, overflows=0, outcomes={"local": {"ok": 4, "retry": 0, "failed": 0}}
    )
    m.update_from_totals(
        entries_journaled=25, overflows=2, outcomes={"local": {"ok": 9, "retry": 1, "failed": 0}}
    )
    got = scrape(port)
    assert got["msync_agent_events_journaled_total"] == 25 and got["msync_agent_overflows_total"] == 2
    assert got['msync_agent_ship_outcomes_total{outcome="ok",track="local"}'] == 9
    assert got['msync_agent_ship_outcomes_total{outcome="retry",track="local"}'] == 1
