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

Where the chain ends tells a crash from damage (:func:`scan`). A record is
written only after the one before it is synced, so a crash can tear the last
record only. A record with an intact digest beyond the chain's end whose seqs
are newer than both the chain and LMDB (everything older was folded before
the intake was rewound) was acknowledged after a record that no longer reads:
that is damage, and the batches in between would be lost. A torn last record
carries seqs nobody acknowledged; it is dropped and reported as such. A flip
in the newest record alone looks exactly like a torn write: it is dropped too.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3

from .errors import JournalError, JournalFull

__all__ = [
    "NAME",
    "LOCK_NAME",
    "SIZE",
    "MAX_BODY",
    "Batch",
    "Scan",
    "Intake",
    "scan",
    "open_lock",
    "scan_as_reader",
    "locked",
]

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
    return _walk(raw)[0]


def _walk(raw: bytes) -> tuple[list[Batch], int]:
    """The chain, and the offset just past its last record."""
    out: list[Batch] = []
    at = 0
    while (found := _decode_at(raw, at)) is not None:
        batch, end = found
        if out and batch.first <= out[-1].last:
            break
        out.append(batch)
        at = end
    return out, at


@dataclass(frozen=True, slots=True)
class Scan:
    """What an intake file holds: the valid ``chain``; ``torn``, a description
    of an unacknowledged last record dropped (a crash mid-write), or "";
    ``damage``, why acknowledged records cannot be read, or ""."""

    chain: list[Batch]
    torn: str
    damage: str


def scan(raw: bytes, stored_last: int) -> Scan:
    """Read the chain of ``raw`` and judge where it ends; ``stored_last`` is
    the last seq in LMDB, read after ``raw`` (so everything folded before the
    last rewind is at or below it)."""
    batches, at = _walk(raw)
    bound = max(stored_last, batches[-1].last if batches else 0)
    probe = raw.find(_MAGIC, at)
    while probe >= 0:
        found = _decode_at(raw, probe)
        if found is not None and found[0].first > bound:
            newer = found[0]
            return Scan(
                batches,
                "",
                f"intake {NAME}: the record at offset {at} does not read, yet seqs "
                f"{newer.first}..{newer.last} at offset {probe} were written after it "
                f"(seqs {bound + 1}..{newer.first - 1} would be lost)",
            )
        probe = raw.find(_MAGIC, probe + 1)
    return Scan(batches, _torn(raw, at, bound), "")


def _torn(raw: bytes, at: int, bound: int) -> str:
    """A description of the record started at ``at`` if it claims seqs after
    ``bound`` (written, never acknowledged), else ""."""
    if at + _HEAD.size > len(raw):
        return ""
    magic, first, count, _cp, body_len = _HEAD.unpack_from(raw, at)
    if magic != _MAGIC or first <= bound:
        return ""
    return f"torn last record at offset {at} (seqs {first}..{first + count - 1}, {body_len} bytes)"


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

    def read_all(self) -> bytes:
        return os.pread(self._fd, SIZE, 0)

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


def scan_as_reader(jdir: Path, lock_fd: int | None, stored_last: Callable[[], int]) -> Scan | None:
    """:func:`scan` the intake of a journal this process does not write (None
    when there is none), holding the intake lock (``lock_fd``, a client's;
    else a shared lock of its own) so no record is half written meanwhile: a
    reader delays the agent's next append, nothing more."""
    lock = lock_fd
    if lock is None:
        try:
            lock = os.open(jdir / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # no agent ever ran here: no intake
        except OSError as exc:
            raise JournalError(f"cannot open the intake lock of {jdir}: {exc}", path=str(jdir)) from exc
    try:
        with locked(lock, shared=lock_fd is None):
            raw = _read_file(jdir)
            last = stored_last()  # after the intake: what was folded before a rewind is below it
    finally:
        if lock_fd is None:
            os.close(lock)
    return scan(raw, last) if raw is not None else None


def _read_file(jdir: Path) -> bytes | None:
    path = jdir / NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"cannot read the journal intake {path}: {exc}", path=str(path)) from exc
    try:
        return os.pread(fd, SIZE, 0)
    finally:
        os.close(fd)


def open_lock(jdir: Path) -> int:
    """The fd of the intake lock file (created when missing); keep it open."""
    path = jdir / LOCK_NAME
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise JournalFull(f"no space left for {path}", path=str(path)) from exc
        raise JournalError(f"cannot open {path}: {exc}", path=str(path)) from exc


class locked:
    """Exclusive across processes: the agent numbering and writing a record,
    or a client folding the intake and then writing LMDB itself. Shared: a
    reader that must not see a record half written. (A class, not a
    generator: the agent takes it for every small append.)"""

    __slots__ = ("_fd", "_how")

    def __init__(self, lock_fd: int, *, shared: bool = False) -> None:
        self._fd = lock_fd
        self._how = fcntl.LOCK_SH if shared else fcntl.LOCK_EX

    def __enter__(self) -> None:
        fcntl.flock(self._fd, self._how)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


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
