"""Progress for long operations (scan, verify, replay): a bar on a TTY,
periodic ``progress`` log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO

import structlog

__all__ = ["Progress"]

log = structlog.get_logger("agent.operate.progress")

_BAR = 30


class Progress:
    """Count work done; show it without flooding.

    On a TTY the bar is redrawn at most 10 times a second on one line; off a
    TTY a log line is written every ``every_s`` seconds. Use as a context
    manager so the final state is always shown.
    """

    def __init__(
        self, label: str, total: int | None = None, *, stream: IO[str] | None = None, every_s: float = 5.0
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()
        self._every = 0.1 if self._tty else every_s
        self._last = time.monotonic()
        self._logged = False  # off a TTY, short operations log nothing at all

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._show(final=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._show(final=False)

    def set(self, done: int, total: int | None = None) -> None:
        self.total = total if total is not None else self.total
        self.advance(done - self.done)

    def _show(self, *, final: bool) -> None:
        if not self._tty:
            if final and not self._logged:
                return
            self._logged = True
            log.info("progress", what=self.label, done=self.done, total=self.total, final=final)
            return
        if self.total:
            filled = min(_BAR, _BAR * self.done // max(self.total, 1))
            text = f"\r{self.label} [{'#' * filled}{' ' * (_BAR - filled)}] {self.done}/{self.total}"
        else:
            text = f"\r{self.label} {self.done}"
        self._stream.write(text + ("\n" if final else ""))
        self._stream.flush()
