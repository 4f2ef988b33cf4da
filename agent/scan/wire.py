"""Messages between a scan and its helper processes: length-prefixed
``marshal`` frames over pipes.

Both ends run the same interpreter from the same installation (the helper
is started with ``sys.executable``), so ``marshal`` (C speed, plain values
only: tuples, lists, dicts, bytes, str, int, None) is safe here and never
sees data from anywhere else. A frame is a 4-byte little-endian length and
the marshalled message; a message is a tuple whose first item names it.
"""

from __future__ import annotations

import marshal
import os
import struct

__all__ = ["Closed", "encode", "read_frame", "write_frame"]

_HEADER = struct.Struct("<I")


class Closed(EOFError):
    """The other end closed its pipe (it exited, or died)."""


def encode(message: tuple[object, ...]) -> bytes:
    body = marshal.dumps(message)
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, message: tuple[object, ...]) -> None:
    """Write one message whole (a pipe write may be partial past its buffer)."""
    view = memoryview(encode(message))
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise Closed("pipe closed")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_frame(fd: int) -> tuple[object, ...]:
    """Read one message; blocks until it is whole. Raises :class:`Closed`
    at end of file."""
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    message = marshal.loads(_read_exact(fd, size))
    if not isinstance(message, tuple) or not message:
        raise ValueError(f"not a scan message: {message!r:.80}")
    return message
