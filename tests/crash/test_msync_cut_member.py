"""A real ``agent run`` while one makuosan member is cut off mid-send (the
double stalls a minute, like makuosan retrying it): every change reaches the
live member within seconds, and the cut member's entries stay pending."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.crash.agent_process import status
from tests.crash.test_stop_blocked_msync import msync_agent
from tests.helpers.wait import wait_until

LIVE_WITHIN_S = 10.0


def test_live_member_current_within_seconds_of_each_change(tmp_path: Path) -> None:
    """Three changes, one after the other, each on mk2 within 10 s; mk3 pending."""
    agent, dbl, src, journal = msync_agent(tmp_path)
    live = dbl.member_dir("mk2")
    try:
        agent.start()
        for i in range(3):
            (src / f"f{i}").write_bytes(b"%d" % i)
            wait_until(
                lambda i=i: (live / f"f{i}").exists(),
                timeout=LIVE_WITHIN_S,
                message=f"f{i} not on the live member: {(tmp_path / 'agent.log').read_text()[-2000:]}",
            )
        assert status(journal)["targets"]["cluster/mk3"]["pending"] >= 3
        assert not any((dbl.member_dir("mk3") / f"f{i}").exists() for i in range(3))
        assert agent.terminate() == 0
    finally:
        agent.kill()
        for pid, _, _ in dbl.stalls():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
