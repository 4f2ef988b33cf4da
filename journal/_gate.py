"""The gate that makes growing LMDB's map safe between threads of one process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Gate"]


class Gate:
    """Readers-writer gate: every transaction holds it shared; changing the map
    size holds it exclusive, because LMDB forbids resizing while any
    transaction of this process is open (the map may move in memory)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._resizing = False
        self._shared = _Shared(self)

    def shared(self) -> _Shared:
        """A context manager (one, reused: every transaction takes it, so it
        costs no generator)."""
        return self._shared

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class _Shared:
    """Gate.shared(): reentrant across threads, as a counter is."""

    __slots__ = ("_gate",)

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def __enter__(self) -> None:
        g = self._gate
        with g._cond:
            while g._resizing:
                g._cond.wait()
            g._active += 1

    def __exit__(self, *exc: object) -> None:
        g = self._gate
        with g._cond:
            g._active -= 1
            if not g._active and g._resizing:  # only a resize waits for the last one out
                g._cond.notify_all()
