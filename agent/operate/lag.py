"""Lag or drift: how ``agent verify`` judges a mirror difference on a path
the journal still has pending.

A difference is *lag* only while the agent is still expected to fix it: the
path (or a directory above it, but never the root itself) has a pending
entry for the track, no ship of that path has failed since, and the oldest
such entry is younger than a bound. Everything else is *drift*. A pending
entry for the root (an overflow rescan, a new target's seed marker) names no
path, so it covers nothing: while it is pending, differences the rescan has
not journaled yet are drift, which is what the mirror shows.

A directory whose only difference is its mtime is also covered by pending
entries directly inside it: shipping an entry resets its parent's mtime.
(msync's dry run does not say what differs; any difference it reports on a
directory is treated so.)

Failing paths come from the agent's ``runtime.json`` (the replayers' retry
table, published every second and left behind when the agent stops), so a
path that failed on its last try stays failing for verify until a later try
succeeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from journal import Journal, Op

__all__ = [
    "TrackPending",
    "LagOrDrift",
    "read_pending",
    "merge",
    "lag_or_drift",
    "default_lag_max",
    "any_pending",
]


# differences a pending entry inside a directory resets: its mtime (an msync
# dry run does not say what differs; on a directory that is mostly the mtime)
_TIMES_ONLY = ("mtime differs", "differs on the member")


@dataclass(frozen=True)
class TrackPending:
    """What one track still owes, for judging its differences."""

    oldest: dict[bytes, int] = field(default_factory=dict)  # path -> oldest pending entry time_ns
    children: dict[bytes, list[bytes]] = field(default_factory=dict)  # dir -> pending paths in it
    failing: Mapping[bytes, str] = field(default_factory=dict)  # path -> last error
    failing_unlisted: int = 0  # failing paths the agent counted but did not list


@dataclass(frozen=True)
class LagOrDrift:
    """Whether a difference on a mirror is lag (pending, young, not failing) or drift."""

    lag: bool
    why: str
    pending_s: float | None = None


def default_lag_max(settle_s: float, retry_max_s: float) -> float:
    """How long a healthy agent may leave a difference pending: a settle
    delay, the longest retry backoff, and a settle delay again for the
    ship itself."""
    return 2 * settle_s + retry_max_s


def read_pending(
    journal: Journal, track: str, failing: tuple[Mapping[bytes, str], int] = ({}, 0)
) -> TrackPending:
    """The pending paths of ``track`` (both ends of a move) with their oldest
    entry times; root entries are left out, they name no path."""
    oldest: dict[bytes, int] = {}
    for record in journal.pending(track):
        entry = record.entry
        for path in (entry.path, entry.dest) if entry.op == Op.MOVE else (entry.path,):
            if path and (path not in oldest or entry.time_ns < oldest[path]):
                oldest[path] = entry.time_ns
    return TrackPending(oldest, _children(oldest), failing[0], failing[1])


def _children(oldest: Mapping[bytes, int]) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for path in oldest:
        out.setdefault(path.rpartition(b"/")[0], []).append(path)
    return out


def merge(a: TrackPending, b: TrackPending) -> TrackPending:
    """Pending before and after an audit: a path shipped while the mirror
    was being read, or journaled meanwhile, is covered either way."""
    oldest = dict(b.oldest)
    for path, t in a.oldest.items():
        oldest[path] = min(t, oldest.get(path, t))
    return TrackPending(oldest, _children(oldest), b.failing, b.failing_unlisted)


def any_pending(path: bytes, pending: Iterable[TrackPending]) -> bool:
    """Whether ``path`` or a directory above it (not the root) is pending anywhere."""
    return any(_covering(path, tp, times_only=False) for tp in pending)


def _covering(path: bytes, tp: TrackPending, times_only: bool) -> list[bytes]:
    out = []
    probe = path
    while probe:
        if probe in tp.oldest:
            out.append(probe)
        probe = probe.rpartition(b"/")[0]
    if times_only:
        out.extend(tp.children.get(path, ()))
    return out


def lag_or_drift(path: bytes, why: str, tp: TrackPending, now_ns: int, lag_max_s: float) -> LagOrDrift:
    """Lag or drift for a difference ``why`` at ``path`` on one track."""
    covering = _covering(path, tp, times_only=why.startswith(_TIMES_ONLY))
    if not covering:
        return LagOrDrift(False, why)
    for p in covering:
        if p in tp.failing:
            return LagOrDrift(False, f"{why}; pending and failing: {tp.failing[p]}")
    if tp.failing_unlisted:
        return LagOrDrift(False, f"{why}; pending, and {tp.failing_unlisted} unlisted paths are failing")
    age_s = max(0.0, (now_ns - min(tp.oldest[p] for p in covering)) / 1e9)
    if age_s > lag_max_s:
        return LagOrDrift(False, f"{why}; pending for {age_s:.0f}s, longer than {lag_max_s:g}s")
    return LagOrDrift(True, why, round(age_s, 3))
