"""The retry policy: capped exponential backoff with jitter; FAILED dead-letters
after max_attempts, RETRY never does."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ship.base import Outcome
from agent.ship.retry import Backoff, RetryPolicy, next_attempt

POLICIES = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 10),
    base_s=st.floats(0.01, 5.0),
    cap_s=st.floats(0.01, 120.0),
    jitter=st.floats(0.0, 1.0),
)
OUTCOMES = st.lists(st.sampled_from([Outcome.RETRY, Outcome.FAILED, Outcome.OK]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(policy=POLICIES, attempt=st.integers(1, 10_000), rand=st.floats(0.0, 0.999999))
def test_delay_is_capped_and_jittered_downward(policy, attempt, rand):
    """The delay never exceeds the cap nor the un-jittered exponential, and
    jitter takes off at most its fraction."""
    delay = policy.delay(attempt, rand)
    raw = min(policy.cap_s, policy.base_s * 2.0 ** min(attempt - 1, 62))
    assert 0 <= delay <= policy.cap_s + 1e-9
    assert raw * (1 - policy.jitter) - 1e-9 <= delay <= raw + 1e-9


@settings(max_examples=200, deadline=None)
@given(policy=POLICIES, attempt=st.integers(1, 60))
def test_delay_grows_until_the_cap(policy, attempt):
    """Without jitter, each retry waits at least as long as the previous one."""
    assert policy.delay(attempt + 1, 0.0) >= policy.delay(attempt, 0.0)


@settings(max_examples=300, deadline=None)
@given(policy=POLICIES, outcomes=OUTCOMES, seed=st.integers(0, 2**32))
def test_only_permanent_failures_dead_letter(policy, outcomes, seed):
    """Replaying any outcome sequence: the path dies exactly at the
    max_attempts-th FAILED since the last OK, never from RETRY alone, and
    while alive it is always held until a due time in the future."""
    rng = random.Random(seed)
    state, failed, now = None, 0, 100.0
    for outcome in outcomes:
        verdict = next_attempt(policy, state, outcome, now=now, rand=rng.random())
        failed = 0 if outcome == Outcome.OK else failed + (outcome == Outcome.FAILED)
        if outcome == Outcome.OK:
            assert verdict.state is None and not verdict.dead
        elif failed >= policy.max_attempts:
            assert verdict.dead and verdict.state is None
            state, failed = None, 0
            continue
        else:
            assert not verdict.dead and verdict.state is not None
            assert verdict.state.due > now and verdict.state.failures == failed
        state = verdict.state
        now += 1.0


def test_retry_forever_backs_off_to_the_cap():
    """A thousand RETRYs (a target down for hours) keep the path alive, and
    the delay settles at the cap."""
    policy = RetryPolicy(max_attempts=3, base_s=0.5, cap_s=60.0, jitter=0.0)
    state = None
    for _ in range(1000):
        verdict = next_attempt(policy, state, Outcome.RETRY, now=0.0, rand=0.5)
        assert not verdict.dead
        state = verdict.state
    assert verdict.delay == 60.0 and state is not None and state.tries == 1000


def test_backoff_table_holds_until_due():
    """The table holds a failing path until its due time, for its own track
    only, reports the next due time, and forgets it after OK."""
    table = Backoff(RetryPolicy(base_s=1.0, jitter=0.0), random.Random(1))
    table.record("t1", b"d", Outcome.RETRY, now=10.0, below=True, reason="down")
    table.record("t1", b"f", Outcome.FAILED, now=10.0, below=False, reason="bad name")
    assert table.holds("t1", 10.5) == {b"d": True, b"f": False}
    assert table.holds("t2", 10.5) == {}
    assert table.next_due(10.5) == 11.0
    assert table.holds("t1", 11.0) == {}
    table.record("t1", b"d", Outcome.OK, now=11.0, below=True)
    assert table.get("t1", b"d") is None and table.get("t1", b"f").failures == 1


def test_backoff_table_dead_letter_and_prune():
    """The fifth FAILED is dead and leaves the table; entries long past due
    are pruned."""
    table = Backoff(RetryPolicy(max_attempts=5, base_s=1.0, cap_s=2.0), random.Random(2))
    verdicts = [table.record("t", b"x", Outcome.FAILED, now=0.0, below=False) for _ in range(5)]
    assert [v.dead for v in verdicts] == [False] * 4 + [True]
    assert len(table) == 0
    table.record("t", b"y", Outcome.RETRY, now=0.0, below=False)
    table.prune(now=10.0)
    assert len(table) == 1
    table.prune(now=1000.0)
    assert len(table) == 0
