"""The pure lag-or-drift decision of ``agent verify`` (the failing paths it
learns from the agent's runtime.json: tests/cli/test_runtime.py)."""

from __future__ import annotations

from agent.operate.lag import TrackPending, lag_or_drift, merge

S = 10**9
NOW = 1_000_000 * S


def pending(
    paths: dict[bytes, int], failing: dict[bytes, str] | None = None, unlisted: int = 0
) -> TrackPending:
    children: dict[bytes, list[bytes]] = {}
    for p in paths:
        children.setdefault(p.rpartition(b"/")[0], []).append(p)
    return TrackPending(dict(paths), children, failing or {}, unlisted)


def test_not_pending_is_drift() -> None:
    assert lag_or_drift(b"a/b", "content differs", pending({}), NOW, 60).lag is False


def test_young_self_or_parent_is_lag() -> None:
    tp = pending({b"a": NOW - 5 * S})
    for path in (b"a", b"a/b/c"):
        j = lag_or_drift(path, "content differs", tp, NOW, 60)
        assert (j.lag, j.why, j.pending_s) == (True, "content differs", 5.0)


def test_old_is_drift_with_its_age() -> None:
    j = lag_or_drift(b"a", "content differs", pending({b"a": NOW - 61 * S}), NOW, 60)
    assert (j.lag, j.why) == (False, "content differs; pending for 61s, longer than 60s")


def test_failing_is_drift_with_its_error() -> None:
    tp = pending({b"d": NOW, b"d/f": NOW}, {b"d": "target down: EPERM"})
    j = lag_or_drift(b"d/f", "missing on the mirror", tp, NOW, 60)
    assert (j.lag, j.why) == (False, "missing on the mirror; pending and failing: target down: EPERM")
    j = lag_or_drift(b"x", "missing on the mirror", pending({b"x": NOW}, unlisted=3), NOW, 60)
    assert not j.lag and "3 unlisted paths are failing" in j.why


def test_children_cover_only_a_directory_mtime() -> None:
    tp = pending({b"d/new": NOW})
    assert lag_or_drift(b"d", "mtime differs", tp, NOW, 60).lag is True
    assert lag_or_drift(b"d", "differs on the member (msync dry run)", tp, NOW, 60).lag is True
    assert lag_or_drift(b"d", "mode differs (source 755, mirror 700)", tp, NOW, 60).lag is False


def test_merge_keeps_both_and_the_older_time() -> None:
    a, b = pending({b"x": NOW - 9 * S, b"y": NOW}), pending({b"x": NOW, b"z": NOW}, {b"z": "e"})
    m = merge(a, b)
    assert m.oldest == {b"x": NOW - 9 * S, b"y": NOW, b"z": NOW} and m.failing == {b"z": "e"}
