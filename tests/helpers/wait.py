"""Polling with a deadline, instead of sleeps that guess how long things take."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until", "WaitTimeout"]

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The predicate did not become true in time (an assertion failure in tests)."""


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str = ""
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value;
    raise ``WaitTimeout`` after ``timeout`` seconds. The predicate is always
    called at least once, and once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(message or f"condition not met within {timeout:.1f}s: {predicate!r}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
