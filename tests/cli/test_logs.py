"""Log format: JSON lines off a TTY, safe rendering of byte paths."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from agent.operate.logs import configure_logging, safe_path

SCRIPT = """
import structlog
from agent.operate.logs import configure_logging
configure_logging("info")
log = structlog.get_logger()
log.info("ship.ok", path=b"bad\\xff\\nname", paths=[b"a", b"b\\x01"], target="local")
log.debug("hidden")
"""


def test_json_lines_off_tty() -> None:
    """With stderr a pipe, each log line is one JSON object with event,
    level, timestamp, and byte paths escaped (never raw newlines)."""
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, check=True)
    assert res.stdout == b""
    lines = res.stderr.decode().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["event"] == "ship.ok" and doc["level"] == "info" and doc["target"] == "local"
    assert doc["path"] == repr(os.fsdecode(b"bad\xff\nname"))
    assert doc["paths"] == ["a", repr("b\x01")]
    assert doc["timestamp"].endswith("Z")


def test_console_renderer_on_request() -> None:
    """json=False renders a readable line (as on a TTY), paths still escaped."""
    buf = io.StringIO()
    configure_logging("debug", json=False, stream=buf)
    import structlog

    structlog.get_logger().info("scan.done", path=b"x\ny")
    line = buf.getvalue()
    assert "scan.done" in line and "path=" in line and "x\\" in line
    assert line.count("\n") == 1  # the newline in the name is escaped, not written
    configure_logging("info", json=True, stream=sys.stderr)


@given(st.binary(max_size=64))
def test_safe_path_is_printable_and_lossless(raw: bytes) -> None:
    """Any byte path renders printable, and printable names render as themselves."""
    shown = safe_path(raw)
    assert shown.isprintable()
    text = os.fsdecode(raw)
    if text.isprintable():
        assert shown == text
    else:
        assert eval(shown) == text  # the repr round-trips to the surrogate-escaped name


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_tty_and_quiet_off_tty() -> None:
    """On a TTY the bar ends with done/total on its own line; off a TTY a
    short operation writes nothing."""
    from agent.operate.progress import Progress

    tty = _Tty()
    with Progress("verify", 4, stream=tty) as p:
        for _ in range(4):
            p.advance()
    assert tty.getvalue().endswith("] 4/4\n") and "verify [" in tty.getvalue()
    pipe = io.StringIO()
    with Progress("verify", 4, stream=pipe) as p:
        p.advance(4)
    assert pipe.getvalue() == ""
