"""The inotify fd reader, on a pipe: everything read is handed over in order,
drains are marked, and a trickle is read in gathered chunks."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator

import pytest

from agent.watch.reader import Reader
from tests.helpers.wait import wait_until


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        for fd in (r, w):
            os.close(fd)


def _start(reader: Reader) -> threading.Thread:
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    return thread


def test_a_trickle_arrives_whole_in_order_and_marked(pipe: tuple[int, int]) -> None:
    """Small writes, each after the last was read: all bytes come out in
    order, and every take after a drain carries its start time."""
    r, w = pipe
    clock = itertools.count(1)
    reader = Reader(r, clock_ns=lambda: next(clock), linger_s=0.05)
    thread = _start(reader)
    got = bytearray()
    marks: list[int] = []
    try:
        for i in range(20):
            os.write(w, b"%04d" % i)
            wait_until(lambda i=i: reader.bytes_read >= 4 * (i + 1), timeout=30)
        while len(got) < 80:
            reader.wait(1.0)
            taken = reader.take(1 << 20)
            got += taken.data
            if taken.t0_ns is not None:
                marks.append(taken.t0_ns)
    finally:
        reader.stop()
        thread.join(30)
    assert not thread.is_alive() and reader.error is None
    assert bytes(got) == b"".join(b"%04d" % i for i in range(20))
    assert marks and marks == sorted(marks)


def test_writes_made_during_the_pause_after_a_small_read_come_in_one_read(pipe: tuple[int, int]) -> None:
    """After a drain that found little, the reader pauses before reading
    again; what was written meanwhile is taken by one read."""
    r, w = pipe
    reader = Reader(r, linger_s=3600)  # the pause outlasts the test: only stop() ends it
    thread = _start(reader)
    try:
        os.write(w, b"first")
        first = bytearray()
        while first != b"first":  # take(1) stops after a chunk: a marker behind it stays
            reader.wait(1.0)
            first += reader.take(1).data
        while reader.take(1).t0_ns is None:  # the drain that read it is marked: the pause follows at once
            reader.wait(1.0)
        for i in range(50):
            os.write(w, b"%03d" % i)
        time.sleep(0.2)  # a reader that did not pause would have read them by now
        assert reader.reads == 1 and first == b"first"
        assert os.read(r, 1 << 20) == b"".join(b"%03d" % i for i in range(50))  # still in the pipe
    finally:
        reader.stop()  # ends the pause at once
        thread.join(30)
    assert not thread.is_alive()
