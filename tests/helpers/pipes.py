"""Reading a child's pipe line by line without stealing what follows.

``Popen.communicate`` reads the pipes' file descriptors directly, so whatever
a buffered ``proc.stdout.readline()`` pulled into the file object beyond its
line is never returned: a child that printed ``ready`` and its first result
in one go loses that result. ``line_of`` reads one byte at a time, so nothing
past the line leaves the pipe and a later ``communicate`` sees all of it.
"""

from __future__ import annotations

import io
import os
from typing import IO, AnyStr

__all__ = ["line_of"]


def line_of(stream: IO[AnyStr]) -> AnyStr:
    """The next line of ``stream`` (with its newline; shorter at end of
    input), of the stream's own type: str for a text pipe, bytes otherwise."""
    fd = stream.fileno()
    got = bytearray()
    while not got.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        got += byte
    if isinstance(stream, io.TextIOBase):
        return got.decode()  # type: ignore[return-value]
    return bytes(got)  # type: ignore[return-value]
