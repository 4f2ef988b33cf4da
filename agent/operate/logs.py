"""Logging set-up: structlog JSON lines off a TTY, readable console lines on one.

Logs go to stderr, so a command's own output on stdout (``status --json``,
``verify --json``) stays machine-readable. Byte paths are rendered safely
(undecodable bytes escaped, unprintable names quoted); file contents are never
logged.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog

__all__ = ["configure_logging", "safe_path"]


def safe_path(path: bytes | str) -> str:
    """A printable form of a path: itself when printable, else its ``repr``.

    Non-UTF-8 bytes go through ``surrogateescape`` (so nothing is lost) and
    then show as ``\\udcXX`` escapes inside the repr; newlines and control
    characters show escaped, never raw.
    """
    text = os.fsdecode(path) if isinstance(path, bytes) else path
    return text if text.isprintable() else repr(text)


def _render_bytes(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Turn every bytes value (paths) into a safe string before rendering."""
    for key, value in event.items():
        if isinstance(value, bytes):
            event[key] = safe_path(value)
        elif isinstance(value, list | tuple) and any(isinstance(v, bytes) for v in value):
            event[key] = [safe_path(v) if isinstance(v, bytes) else v for v in value]
    return event


def configure_logging(
    level: str = "info", *, json: bool | None = None, stream: IO[str] | None = None
) -> None:
    """Configure structlog for this process.

    ``json=None`` chooses by whether ``stream`` (default stderr) is a TTY.
    Safe to call more than once (the last call wins).
    """
    out = stream if stream is not None else sys.stderr
    if json is None:
        json = not (hasattr(out, "isatty") and out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _render_bytes,
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
