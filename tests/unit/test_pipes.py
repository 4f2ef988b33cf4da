"""The pipe helper: a first line read before ``communicate`` loses nothing after it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.pipes import line_of

SAYS_TWO_LINES_AT_ONCE = "import sys; sys.stdout.write('ready\\nfirst result\\n'); sys.stdout.flush()"


def _child(text: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SAYS_TWO_LINES_AT_ONCE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=text,
    )


def test_a_buffered_readline_loses_what_communicate_reads_after_it() -> None:
    """Why the helper exists: the file object's buffer is bypassed by communicate."""
    proc = _child(text=True)
    proc.wait(timeout=60)  # both lines are in the pipe before the first read
    assert proc.stdout.readline() == "ready\n"
    out, _err = proc.communicate(timeout=60)
    assert out == ""


@pytest.mark.parametrize("text", [True, False])
def test_line_of_leaves_the_rest_for_communicate(text: bool) -> None:
    proc = _child(text=text)
    proc.wait(timeout=60)
    first = line_of(proc.stdout)
    out, _err = proc.communicate(timeout=60)
    if text:
        assert (first, out) == ("ready\n", "first result\n")
    else:
        assert (first, out) == (b"ready\n", b"first result\n")


def test_line_of_at_end_of_input_returns_what_is_left() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "print('x', end='')"], stdout=subprocess.PIPE)
    assert line_of(proc.stdout) == b"x"
    assert line_of(proc.stdout) == b""
    proc.communicate(timeout=60)
