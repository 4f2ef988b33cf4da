"""The intake: a small preallocated file where a small batch becomes durable.

Why it exists: a synced LMDB commit flushes the device twice (data pages, then
the meta page), so acknowledging every batch through LMDB costs at least twice
a raw ``fdatasync``. The intake makes a batch durable with one ``pwrite`` and
one ``fdatasync``; the journal then *folds* acknowledged batches into LMDB in
one synced commit for many of them. Until a batch is folded, the intake is the
copy that survives a crash; reopening folds whatever is left.

The file is ``SIZE`` bytes of zeros written once, so overwriting it allocates
nothing and ``fdatasync`` flushes data only. Records follow each other from
offset 0::

    magic 4s | first seq Q | count I | checkpoint_ns q (-1: none) | body length I
    | digest 16s (blake3 of everything else) | body

    body = I length of tracks | tracks joined by "\\n" | a log record (``_records``)

The valid chain is read from offset 0 while each record's digest holds and its
seqs are above the previous record's. Once everything in the file is folded,
writing starts again at offset 0: records left behind from before carry
smaller seqs, so the chain ends where the new records end.

Only the agent writes here. Clients (``replay``, ``verify --repair`` beside a
running agent) read the chain and fold it before their own LMDB write. Both
hold :func:`locked` (a flock on ``LOCK_NAME``, a file nobody ever replaces)
meanwhile, so an agent batch is either folded by the client or numbered after
the client's: seqs never collide, whichever process started first.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import blake3

from .errors import JournalError, JournalFull

__all__ = ["NAME", "LOCK_NAME", "SIZE", "MAX_BODY", "Batch", "Intake", "open_lock", "locked"]

NAME = "intake.log"
LOCK_NAME = "intake.lock"
SIZE = 128 * 1024
MAX_BODY = SIZE // 4  # a larger batch is committed to LMDB directly: its commit is amortised anyway
_MAGIC = b"MAI1"
_HEAD = struct.Struct("<4sQIqI")
_DIGEST = 16
_TRACKS = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Batch:
    """An acknowledged batch: seqs ``first`` .. ``first + count - 1``, pending
    for ``tracks``, moving the checkpoint to ``checkpoint_ns`` when set."""

    first: int
    count: int
    tracks: tuple[str, ...]
    checkpoint_ns: int | None
    record: bytes

    @property
    def last(self) -> int:
        return self.first + self.count - 1


def encode(batch: Batch) -> bytes:
    tracks = "\n".join(batch.tracks).encode()
    body = _TRACKS.pack(len(tracks)) + tracks + batch.record
    cp = -1 if batch.checkpoint_ns is None else batch.checkpoint_ns
    head = _HEAD.pack(_MAGIC, batch.first, batch.count, cp, len(body))
    return head + blake3.blake3(head + body).digest(_DIGEST) + body


def _decode_at(raw: bytes, at: int) -> tuple[Batch, int] | None:
    """The record at offset ``at`` and the offset after it, if one is intact there."""
    end = at + _HEAD.size + _DIGEST
    if end > len(raw):
        return None
    magic, first, count, cp, body_len = _HEAD.unpack_from(raw, at)
    if magic != _MAGIC or end + body_len > len(raw) or body_len < _TRACKS.size:
        return None
    head, digest, body = raw[at : at + _HEAD.size], raw[at + _HEAD.size : end], raw[end : end + body_len]
    if blake3.blake3(head + body).digest(_DIGEST) != digest:
        return None
    (tlen,) = _TRACKS.unpack_from(body)
    tracks = tuple(t for t in body[_TRACKS.size : _TRACKS.size + tlen].decode().split("\n") if t)
    record = body[_TRACKS.size + tlen :]
    return Batch(first, count, tracks, None if cp < 0 else cp, record), end + body_len


def chain(raw: bytes) -> list[Batch]:
    """The valid records of an intake file's contents, in order."""
    out: list[Batch] = []
    at = 0
    while (found := _decode_at(raw, at)) is not None:
        batch, at = found
        if out and batch.first <= out[-1].last:
            break
        out.append(batch)
    return out


class Intake:
    """One open intake file. Not thread-safe: the journal serialises callers."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self.offset = 0  # where the next record goes

    @classmethod
    def open(cls, jdir: Path, *, create: bool) -> Intake | None:
        """Open the journal's intake; with ``create``, make it when missing
        (zeros written and synced, then the directory synced)."""
        path = jdir / NAME
        try:
            if path.exists():
                return cls(path, os.open(path, os.O_RDWR | os.O_CLOEXEC))
            return cls(path, _create(path)) if create else None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise JournalFull(f"no space left for the journal intake {path}", path=str(path)) from exc
            raise JournalError(f"cannot open the journal intake {path}: {exc}", path=str(path)) from exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read_chain(self) -> list[Batch]:
        return chain(os.pread(self._fd, SIZE, 0))

    def append(self, batch: Batch) -> bool:
        """Write ``batch`` durably after the previous record; False when it does
        not fit (fold, :meth:`rewind`, and try again)."""
        raw = encode(batch)
        if self.offset + len(raw) > SIZE:
            return False
        try:
            if os.pwrite(self._fd, raw, self.offset) != len(raw):
                raise OSError(errno.EIO, "short write")
            os.fdatasync(self._fd)
        except OSError as exc:
            raise JournalError(
                f"cannot write the journal intake {self.path}: {exc}", path=str(self.path)
            ) from exc
        self.offset += len(raw)
        return True

    def rewind(self) -> None:
        """Write from offset 0 again; only once every record here is folded."""
        self.offset = 0


def open_lock(jdir: Path) -> int:
    """The fd of the intake lock file (created when missing); keep it open."""
    path = jdir / LOCK_NAME
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise JournalFull(f"no space left for {path}", path=str(path)) from exc
        raise JournalError(f"cannot open {path}: {exc}", path=str(path)) from exc


@contextmanager
def locked(lock_fd: int) -> Iterator[None]:
    """Exclusive across processes: the agent numbering and writing a record,
    or a client folding the intake and then writing LMDB itself."""
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)


def _create(path: Path) -> int:
    tmp = path.with_name(NAME + ".new")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, bytes(SIZE))
        os.fsync(fd)
        os.rename(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return fd
