"""Frames between a scan and its helpers: whole messages across a pipe's
buffer, a clear end of file, and a helper's log events reaching the scan's
log with the helper named."""

from __future__ import annotations

import os
import threading

import pytest
import structlog
from structlog.testing import capture_logs

from agent.scan import assist
from agent.scan.team import Helper, HelperSpec, Team
from agent.scan.wire import Closed, encode, read_frame, write_frame


def test_a_message_larger_than_the_pipe_arrives_whole() -> None:
    r, w = os.pipe()
    rows = [(1, b"d/\xff\nname-%d" % i, i, 0) for i in range(40_000)]  # megabytes, more than a pipe holds
    writer = threading.Thread(target=write_frame, args=(w, ("entries", rows)))
    writer.start()
    try:
        assert read_frame(r) == ("entries", rows)
    finally:
        writer.join()
        os.close(r)
        os.close(w)


def test_end_of_file_before_or_inside_a_frame_is_closed() -> None:
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(Closed):
        read_frame(r)
    os.close(r)
    r, w = os.pipe()
    os.write(w, encode(("idle", {"files_seen": 3}))[:-2])
    os.close(w)
    with pytest.raises(Closed):
        read_frame(r)
    os.close(r)


def test_a_helpers_log_event_is_sent_as_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    monkeypatch.setattr(assist, "_FINDINGS", w)
    with pytest.raises(structlog.DropEvent):
        assist._forward(
            None, "warning", {"event": "scan.skip", "path": b"a/\xff", "error": OSError(5, "EIO")}
        )
    os.close(w)
    assert read_frame(r) == ("log", "warning", "scan.skip", {"path": b"a/\xff", "error": "[Errno 5] EIO"})
    os.close(r)


class _Proc:
    pid = 4242


def test_the_scan_logs_a_helpers_event_with_the_helper_named() -> None:
    team = Team(HelperSpec(b"/", "/j", (), None, 0, 1), 1, lambda _e: None, lambda _u: None)
    helper = Helper(_Proc(), -1, -1)  # type: ignore[arg-type]
    with capture_logs() as logs:
        team._handle(helper, ("log", "warning", "scan.skip", {"path": b"x", "reason": "unreadable"}))
    assert logs == [
        {"event": "scan.skip", "helper": 4242, "path": b"x", "reason": "unreadable", "log_level": "warning"}
    ]
