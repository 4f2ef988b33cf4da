"""Pure retry policy: exponential backoff with a cap and jitter, and when a
path that keeps failing goes to the dead-letter list.

RETRY (transient: target down, timeout) never dead-letters: an outage must
never lose anything, it only backs off. FAILED (permanent for that path)
dead-letters after ``max_attempts`` results, so one bad path never blocks
the rest. Time and randomness are injected: callers pass ``now`` and a
``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent.ship.base import Outcome

__all__ = ["RetryPolicy", "Attempt", "NextAttempt", "next_attempt", "Backoff"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 60.0
    jitter: float = 0.25  # the delay is shortened by up to this fraction

    def delay(self, attempt: int, rand: float) -> float:
        """Delay before try number ``attempt + 1``; ``rand`` in [0, 1).
        Never above ``cap_s``; jitter spreads retries of many paths apart."""
        exp = min(max(attempt - 1, 0), 62)
        raw = min(self.cap_s, self.base_s * (2.0**exp))
        return raw * (1.0 - self.jitter * rand)


@dataclass(frozen=True, slots=True)
class Attempt:
    """Backoff state of one (track, path)."""

    tries: int = 0  # unsuccessful results in a row (drives the delay)
    failures: int = 0  # FAILED results (drive dead-lettering)
    due: float = 0.0  # clock time before which the path is held
    below: bool = False  # the held work removes mirror contents: hold the subtree too
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NextAttempt:
    """What follows one ship result of a path: another attempt, or none."""

    state: Attempt | None  # None: nothing left to retry (ok, or dead)
    dead: bool = False
    delay: float = 0.0


def next_attempt(
    policy: RetryPolicy,
    prev: Attempt | None,
    outcome: Outcome,
    *,
    now: float,
    rand: float,
    below: bool = False,
    reason: str = "",
) -> NextAttempt:
    """The next state of a path after one ship result."""
    if outcome == Outcome.OK:
        return NextAttempt(None)
    prev = prev or Attempt()
    failures = prev.failures + (outcome == Outcome.FAILED)
    if outcome == Outcome.FAILED and failures >= policy.max_attempts:
        return NextAttempt(None, dead=True)
    tries = prev.tries + 1
    delay = policy.delay(tries, rand)
    return NextAttempt(Attempt(tries, failures, now + delay, below, reason), delay=delay)


class Backoff:
    """The attempt table of one replayer (in memory: a restart retries at
    once, which is harmless because shipping is idempotent)."""

    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self.policy = policy
        self._rng = rng
        self._table: dict[tuple[str, bytes], Attempt] = {}

    def __len__(self) -> int:
        return len(self._table)

    def get(self, track: str, path: bytes) -> Attempt | None:
        return self._table.get((track, path))

    def record(
        self, track: str, path: bytes, outcome: Outcome, *, now: float, below: bool, reason: str = ""
    ) -> NextAttempt:
        key = (track, path)
        decided = next_attempt(
            self.policy,
            self._table.get(key),
            outcome,
            now=now,
            rand=self._rng.random(),
            below=below,
            reason=reason,
        )
        if decided.state is None:
            self._table.pop(key, None)
        else:
            self._table[key] = decided.state
        return decided

    def snapshot(self) -> dict[tuple[str, bytes], Attempt]:
        """Every path whose last result was not OK (a copy: safe to read from
        another thread, for publishing)."""
        return self._table.copy()

    def holds(self, track: str, now: float) -> dict[bytes, bool]:
        """Paths of ``track`` still waiting: path -> hold the subtree too."""
        return {p: a.below for (t, p), a in self._table.items() if t == track and a.due > now}

    def next_due(self, now: float) -> float | None:
        """The earliest clock time at which a held path may be tried again."""
        dues = [a.due for a in self._table.values() if a.due > now]
        return min(dues) if dues else None

    def prune(self, now: float) -> None:
        """Forget paths long past due that nothing retried (their entries were
        marked done some other way), so the table does not grow without bound."""
        horizon = now - 10 * self.policy.cap_s
        for key in [k for k, a in self._table.items() if a.due < horizon]:
            del self._table[key]
