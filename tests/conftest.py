"""Suite-wide policy: long runs are opt-in, and no test leaves a process behind.

Tests marked ``soak`` run only when selected (``ops/test -m soak``); the
default run stays within CI's budget on a 2-core machine. Shipper processes
a SIGKILLed agent left running are ended after each test, by pid
(tests/helpers/descendants.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.descendants import end_remembered


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="soak run: select it with -m soak")
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _end_what_killed_agents_left() -> Iterator[None]:
    yield
    end_remembered()
