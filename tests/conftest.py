"""Suite-wide policy: long runs are opt-in.

Tests marked ``soak`` run only when selected (``ops/test -m soak``); the
default run stays within CI's budget on a 2-core machine.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="soak run: select it with -m soak")
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(skip)
