"""``agent wait``: block until every selected mirror holds the changes made so far.

A deploy pipeline writes a release into the tree and must not switch traffic
until every server has it. The barrier is a journal seq: every entry at or
below it must be shipped on every selected track.

Taking the barrier "now" must include changes the watcher has not journaled
yet. The watcher's checkpoint says exactly that: a checkpoint ``(T, seq)``
means every change completed before ``T`` is in the journal through ``seq``.
So the barrier is taken by noting the time, waiting for the first checkpoint
at or after it, and using that checkpoint's seq. A running agent moves its
checkpoint about once a second even when idle, later while a recovery scan
holds it (the scan's findings are then inside the barrier too).

The command only reads the journal, a few times a second, so it runs beside
the agent at no cost. A dead letter at or below the barrier means the barrier
can never be reached: that is a failure naming the path, not a success.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from agent.errors import AgentError
from agent.operate.config import Config
from agent.operate.logs import safe_path
from agent.operate.replay import Since, parse_since, select_tracks
from agent.operate.status import live_runtime
from journal import Journal

__all__ = ["TrackState", "Outcome", "decide", "run_wait", "WaitError"]

POLL_S = 0.25  # how often the journal is read while waiting
AGENT_GONE_S = 10.0  # an agent absent this long (not a quick restart) ends the wait


class WaitError(AgentError):
    """The barrier cannot be taken or reached (no agent, unknown track)."""


@dataclass(frozen=True, slots=True)
class DeadBelow:
    path: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class TrackState:
    """One track's position relative to the barrier."""

    track: str
    left: int  # entries at or below the barrier still pending
    dead: tuple[DeadBelow, ...] = ()


class Outcome(enum.Enum):
    WAITING = "waiting"
    REACHED = "reached"
    DEAD = "dead_letters"  # will never be reached: a path under the barrier failed for good


def decide(states: Sequence[TrackState]) -> Outcome:
    """Reached only when nothing at or below the barrier is pending or dead on
    any track; a dead letter ends the wait at once, whatever else is left."""
    if any(s.dead for s in states):
        return Outcome.DEAD
    if all(s.left == 0 for s in states):
        return Outcome.REACHED
    return Outcome.WAITING


def track_state(journal: Journal, track: str, barrier: int) -> TrackState:
    """Pending entries and dead letters of ``track`` at or below ``barrier``.
    A dead letter counts until the operator requeues it (``agent verify
    --repair``), even when a later entry of its path shipped: which tracks a
    later entry was meant for is not recorded, so "superseded" cannot be
    proven, and a barrier is never called reached on a guess."""
    dead = tuple(
        DeadBelow(d.record.entry.path, d.reason)
        for d in journal.dead_letters(track)
        if d.record.seq <= barrier
    )
    return TrackState(track, journal.pending_count(track, through=barrier), dead)


@dataclass
class _Clock:
    """Injectable time, so the loop can be driven in tests without sleeping."""

    monotonic: Callable[[], float] = time.monotonic
    wall_ns: Callable[[], int] = time.time_ns
    sleep: Callable[[float], None] = time.sleep


@dataclass
class Barrier:
    seq: int
    time_ns: int
    waited_for_checkpoint_s: float = 0.0
    tracks: list[str] = field(default_factory=list)


def _agent_alive(config: Config) -> bool:
    return live_runtime(config.journal) is not None


def _take_barrier(
    journal: Journal, config: Config, since: Since | None, deadline: float, clock: _Clock
) -> Barrier:
    """The barrier seq: ``seq:N`` as given; for a time (now by default), the
    first checkpoint at or after it, waited for."""
    if since is not None and since.seq is not None:
        return Barrier(since.seq, 0)
    when = clock.wall_ns() if since is None else since.time_ns
    assert when is not None
    began = clock.monotonic()
    while True:
        checkpoint = journal.checkpoint()
        if checkpoint is not None and checkpoint.time_ns >= when:
            return Barrier(checkpoint.seq, when, clock.monotonic() - began)
        if not _agent_alive(config):
            raise WaitError(
                "no agent is running: changes are neither journaled nor shipped",
                hint="start `agent run` (or check supervisord), then wait again",
            )
        if clock.monotonic() >= deadline:
            return Barrier(-1, when, clock.monotonic() - began)  # timed out catching up
        clock.sleep(POLL_S)


def _check_tracks(journal: Journal, tracks: list[str]) -> None:
    known = set(journal.tracks())
    unknown = [t for t in tracks if t not in known]
    if unknown:
        raise WaitError(
            f"track {unknown[0]!r} is not in the journal",
            hint="start `agent run` once with this target so it is registered",
        )


class _Display:
    """Progress on a terminal (entries left per track), nothing otherwise."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last = 0.0

    def show(self, states: Sequence[TrackState], now: float, final: bool = False) -> None:
        if not self.tty or (not final and now - self.last < 0.2):
            return
        self.last = now
        text = ", ".join(f"{s.track}: {s.left} left" for s in states)
        self.stream.write(f"\rwaiting: {text}\033[K" + ("\n" if final else ""))
        self.stream.flush()


def run_wait(
    config: Config,
    target: str | None,
    host: str | None,
    timeout_s: float,
    since_text: str | None,
    as_json: bool,
    out: IO[str],
    err: IO[str],
    clock: _Clock | None = None,
) -> int:
    """The ``agent wait`` command: 0 reached, 1 timed out or dead letters, 2 error."""
    clock = clock or _Clock()
    began = clock.monotonic()
    deadline = began + timeout_s if timeout_s > 0 else float("inf")
    since = parse_since(since_text, clock.wall_ns()) if since_text else None
    tracks = [t for _, ts in select_tracks(config, target, host) for t in ts]
    display = _Display(err)
    with Journal.open(config.journal, root=str(config.root), mode="read") as journal:
        _check_tracks(journal, tracks)
        if since is None and not _agent_alive(config):
            raise WaitError(
                "no agent is running: changes are neither journaled nor shipped",
                hint="start `agent run` (or check supervisord), then wait again",
            )
        barrier = _take_barrier(journal, config, since, deadline, clock)
        if barrier.seq >= 0:
            err.write(f"waiting for barrier seq {barrier.seq} on {', '.join(tracks)}\n")
            err.flush()
        if barrier.seq < 0:
            return _finish(out, as_json, "timeout", barrier, [], {}, clock.monotonic() - began)
        first = {t: journal.pending_count(t, through=barrier.seq) for t in tracks}
        gone_since: float | None = None
        while True:
            states = [track_state(journal, t, barrier.seq) for t in tracks]
            outcome = decide(states)
            now = clock.monotonic()
            display.show(states, now, final=outcome != Outcome.WAITING)
            if outcome != Outcome.WAITING:
                return _finish(out, as_json, outcome.value, barrier, states, first, now - began)
            if now >= deadline:
                display.show(states, now, final=True)
                return _finish(out, as_json, "timeout", barrier, states, first, now - began)
            gone_since = None if _agent_alive(config) else (gone_since or now)
            if gone_since is not None and now - gone_since >= AGENT_GONE_S:
                raise WaitError(
                    f"the agent stopped while {sum(s.left for s in states)} entries were left",
                    hint="start `agent run` again; nothing is lost, the entries stay pending",
                )
            clock.sleep(POLL_S)


def _finish(
    out: IO[str],
    as_json: bool,
    result: str,
    barrier: Barrier,
    states: Sequence[TrackState],
    first: dict[str, int],
    seconds: float,
) -> int:
    doc: dict[str, Any] = {
        "result": result,
        "reached": result == Outcome.REACHED.value,
        "barrier_seq": barrier.seq if barrier.seq >= 0 else None,
        "seconds": round(seconds, 3),
        "tracks": {
            s.track: {
                "at_barrier": first.get(s.track, 0),
                "shipped": max(0, first.get(s.track, 0) - s.left),
                "left": s.left,
                "dead_letters": [{"path": safe_path(d.path), "reason": d.reason} for d in s.dead],
            }
            for s in states
        },
    }
    out.write(json.dumps(doc, indent=2) + "\n" if as_json else render_wait(doc))
    return 0 if doc["reached"] else 1


def render_wait(doc: dict[str, Any]) -> str:
    """One line for a pipeline log; dead letters named one per line."""
    tracks = doc["tracks"]
    seconds = doc["seconds"]
    if doc["result"] == Outcome.REACHED.value:
        names = ", ".join(tracks) or "no track"
        return f"reached barrier seq {doc['barrier_seq']} on {names} in {seconds:.1f}s\n"
    if doc["result"] == Outcome.DEAD.value:
        lines = [f"barrier seq {doc['barrier_seq']} cannot be reached: dead letters"]
        for track, t in tracks.items():
            lines += [f"  {track}: {d['path']}: {d['reason']}" for d in t["dead_letters"]]
        return "\n".join(lines) + "\n"
    if doc["barrier_seq"] is None:
        return f"timed out after {seconds:.1f}s: the agent did not journal up to now (checkpoint stuck)\n"
    left = ", ".join(f"{track}: {t['left']} left" for track, t in tracks.items())
    return f"timed out after {seconds:.1f}s at barrier seq {doc['barrier_seq']}: {left}\n"
