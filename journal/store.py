"""The durable LMDB journal: entries, per-track progress, manifest, checkpoint.

Durability: :meth:`Journal.append` commits one synced write transaction per
batch; when it returns, the batch survives a crash or power loss. That return
is the acknowledgement point for the watcher.

Threading: one ``Journal`` may be shared by threads (LMDB serialises writers,
readers use their own snapshot). Never use a ``Journal`` across ``fork()``.

Processes: one *agent* process writes (an exclusive lock on the directory);
*client* processes (``replay``, ``verify --repair``) may append short requests
concurrently through LMDB's own writer lock; *read* processes never write.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import blake3
import lmdb

from .codec import decode_entry, decode_seq, decode_state, encode_entry, encode_seq, encode_state
from .errors import (
    JournalCorrupt,
    JournalError,
    JournalFull,
    JournalLocked,
    NotAJournal,
    SchemaMismatch,
    WrongRoot,
)
from .types import Checkpoint, Entry, FileState, Op, Record

__all__ = ["Journal", "JournalStats", "TrackStats", "DeadLetter", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
DEFAULT_MAP_SIZE = 1 << 30
_LOCK_NAME = "agent.lock"
_OWN_FILES = {"data.mdb", "lock.mdb", _LOCK_NAME}
_MAX_DIRECT_KEY = 480  # LMDB keys are limited to 511 bytes; longer paths are hashed
_PAIR = struct.Struct(">QQ")
_COUNT = struct.Struct(">q")
Mode = Literal["agent", "client", "read"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TrackStats:
    pending: int
    oldest_pending_ns: int | None  # time_ns of the oldest pending entry
    dead_letters: int


@dataclass(frozen=True, slots=True)
class JournalStats:
    entries: int
    last_seq: int
    bytes: int
    checkpoint: Checkpoint | None
    tracks: dict[str, TrackStats] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    track: str
    record: Record
    reason: str


def _path_key(path: bytes) -> bytes:
    """Direct key for short paths; ``\\0`` + blake3 for long ones (no real path holds NUL)."""
    if len(path) <= _MAX_DIRECT_KEY:
        return path or b"/"
    return b"\0" + blake3.blake3(path).digest()


def _track_prefix(track: str) -> bytes:
    raw = track.encode()
    if b"\0" in raw or not raw:
        raise ValueError(f"invalid track name {track!r}")
    return raw + b"\0"


class Journal:
    """Open with :meth:`open`; use as a context manager or call :meth:`close`."""

    def __init__(self, env: lmdb.Environment, path: Path, mode: Mode, lock_fd: int | None) -> None:
        self._env = env
        self.path = path
        self.mode = mode
        self._lock_fd = lock_fd
        self._dbs = {
            name: env.open_db(name.encode(), create=mode != "read")
            for name in ("log", "latest", "longpath", "manifest", "pend", "dead", "meta")
        }
        self._changed = threading.Condition()
        self._last_seq = 0
        self.new_tracks: tuple[str, ...] = ()

    # ------------------------------------------------------------------ open/close
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        root: str | bytes | None = None,
        tracks: Iterable[str] = (),
        mode: Mode = "agent",
        map_size: int = DEFAULT_MAP_SIZE,
    ) -> Journal:
        """Create or open the journal in ``path``.

        ``root`` is checked against the root the journal was created for;
        ``tracks`` (targets, or target/member for msync) are registered and the
        ones that did not exist before are listed in :attr:`new_tracks`.
        """
        jdir = Path(path)
        _check_directory(jdir, create=mode != "read")
        lock_fd = _take_lock(jdir) if mode == "agent" else None
        try:
            env = _open_env(jdir, mode, map_size)
            journal = cls(env, jdir, mode, lock_fd)
            journal._init_meta(root, tuple(tracks))
        except lmdb.Error as exc:
            _release_lock(lock_fd)
            raise JournalCorrupt(f"cannot read journal {jdir}: {exc}", path=str(jdir)) from exc
        except BaseException:
            _release_lock(lock_fd)
            raise
        return journal

    def close(self) -> None:
        self._env.close()
        _release_lock(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_meta(self, root: str | bytes | None, tracks: tuple[str, ...]) -> None:
        root_b = os.fsencode(os.path.abspath(os.fsdecode(root))) if root is not None else None
        meta = self._dbs["meta"]
        with self._env.begin() as txn:
            schema = txn.get(b"schema", db=meta)
            stored_root = txn.get(b"root", db=meta)
            known = _decode_tracks(txn.get(b"tracks", db=meta))
            self._last_seq = self._read_last_seq(txn)
        if schema is None:
            if self.mode == "read":
                raise NotAJournal(f"{self.path} holds no journal yet", path=str(self.path))
            if self._last_seq:
                raise JournalCorrupt(f"journal {self.path} has entries but no schema record")
        elif int(schema) != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"journal {self.path} has schema {int(schema)}, this agent reads {SCHEMA_VERSION}",
                path=str(self.path),
            )
        if stored_root is not None and root_b is not None and stored_root != root_b:
            raise WrongRoot(
                f"journal {self.path} belongs to root {os.fsdecode(stored_root)!r}, "
                f"not {os.fsdecode(root_b)!r}",
                path=str(self.path),
            )
        new = tuple(t for t in dict.fromkeys(tracks) if t not in known)
        for t in new:
            _track_prefix(t)
        if self.mode == "read" or (schema is not None and stored_root is not None and not new):
            self.new_tracks = new if self.mode != "read" else ()
            return

        def init(txn: lmdb.Transaction) -> None:
            if txn.get(b"schema", db=meta) is None:
                txn.put(b"schema", str(SCHEMA_VERSION).encode(), db=meta)
                txn.put(b"agent_id", uuid.uuid4().hex.encode(), db=meta)
            if txn.get(b"root", db=meta) is None and root_b is not None:
                txn.put(b"root", root_b, db=meta)
            current = _decode_tracks(txn.get(b"tracks", db=meta))
            txn.put(b"tracks", "\n".join(current + [t for t in new if t not in current]).encode(), db=meta)

        self._write(init)
        self.new_tracks = new

    # ------------------------------------------------------------------ writes
    def _write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``fn`` in one synced write transaction; grow the map when full."""
        if self.mode == "read":
            raise JournalError("journal opened read-only", path=str(self.path))
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)
            except lmdb.Error as exc:
                if _is_enospc(exc):
                    raise JournalFull(f"no space left for journal {self.path}", path=str(self.path)) from exc
                raise

    def _grow(self) -> None:
        size = self._env.info()["map_size"]
        self._env.set_mapsize(size * 2)

    def append(
        self,
        entries: Iterable[Entry],
        *,
        tracks: Iterable[str] | None = None,
        checkpoint_ns: int | None = None,
    ) -> tuple[int, int] | None:
        """Durably append ``entries`` in one transaction; return their (first, last) seq.

        Every entry becomes pending for ``tracks`` (default: every registered
        track). ``checkpoint_ns`` moves the checkpoint in the same transaction.
        Returns None when ``entries`` is empty (the checkpoint still moves).
        """
        batch = list(entries)
        track_list = list(tracks) if tracks is not None else None

        def do(txn: lmdb.Transaction) -> tuple[int, int] | None:
            first = self._read_last_seq(txn) + 1
            last = first + len(batch) - 1
            if batch:
                keys = [encode_seq(s) for s in range(first, last + 1)]
                txn.cursor(db=self._dbs["log"]).putmulti(zip(keys, map(encode_entry, batch)), append=True)
                self._index_latest(txn, batch, keys)
                targets = track_list if track_list is not None else self._tracks(txn)
                for track in targets:
                    prefix = _track_prefix(track)
                    txn.cursor(db=self._dbs["pend"]).putmulti((prefix + k, b"") for k in keys)
                    self._add_count(txn, track, len(keys))
            if checkpoint_ns is not None:
                txn.put(
                    b"checkpoint",
                    _PAIR.pack(checkpoint_ns, last if batch else first - 1),
                    db=self._dbs["meta"],
                )
            return (first, last) if batch else None

        result = self._write(do)
        self._notify(result[1] if result else None)
        return result

    def _index_latest(self, txn: lmdb.Transaction, batch: list[Entry], keys: list[bytes]) -> None:
        latest: dict[bytes, bytes] = {}
        longpaths: dict[bytes, bytes] = {}
        for entry, key in zip(batch, keys):
            for p in (entry.path, entry.dest) if entry.op == Op.MOVE else (entry.path,):
                pk = _path_key(p)
                latest[pk] = key
                if pk[:1] == b"\0":
                    longpaths[pk] = p
        txn.cursor(db=self._dbs["latest"]).putmulti(latest.items())
        if longpaths:
            txn.cursor(db=self._dbs["longpath"]).putmulti(longpaths.items())

    def _add_count(self, txn: lmdb.Transaction, track: str, delta: int) -> None:
        key = b"pcount:" + track.encode()
        raw = txn.get(key, db=self._dbs["meta"])
        txn.put(key, _COUNT.pack((_COUNT.unpack(raw)[0] if raw else 0) + delta), db=self._dbs["meta"])

    def mark_done(
        self, track: str, seqs: Iterable[int], states: Mapping[bytes, FileState | None] | None = None
    ) -> int:
        """In one transaction: the entries ``seqs`` are done for ``track``, and the
        manifest takes ``states`` (None removes the path). Returns how many
        entries were pending and are now done. Idempotent."""
        prefix = _track_prefix(track)
        seq_list = list(seqs)

        def do(txn: lmdb.Transaction) -> int:
            pend = self._dbs["pend"]
            removed = sum(1 for s in seq_list if txn.delete(prefix + encode_seq(s), db=pend))
            if removed:
                self._add_count(txn, track, -removed)
            for path, state in (states or {}).items():
                self._put_manifest(txn, path, state)
            return removed

        return self._write(do)

    def _put_manifest(self, txn: lmdb.Transaction, path: bytes, state: FileState | None) -> None:
        pk = _path_key(path)
        if state is None:
            txn.delete(pk, db=self._dbs["manifest"])
            return
        txn.put(pk, encode_state(state), db=self._dbs["manifest"])
        if pk[:1] == b"\0":
            txn.put(pk, path, db=self._dbs["longpath"])

    def mark_dead(self, track: str, reasons: Mapping[int, str]) -> int:
        """Move entries from pending to the dead-letter list of ``track``."""
        prefix = _track_prefix(track)

        def do(txn: lmdb.Transaction) -> int:
            moved = 0
            for seq, reason in reasons.items():
                key = prefix + encode_seq(seq)
                if not txn.delete(key, db=self._dbs["pend"]):
                    continue
                raw = txn.get(encode_seq(seq), db=self._dbs["log"]) or b""
                reason_b = reason.encode(errors="replace")
                txn.put(key, struct.pack(">I", len(reason_b)) + reason_b + raw, db=self._dbs["dead"])
                moved += 1
            if moved:
                self._add_count(txn, track, -moved)
            return moved

        return self._write(do)

    def requeue_dead(self, track: str | None = None) -> int:
        """Give dead letters (of one track, or all) a fresh try: each dead entry
        is appended again, pending for its track only."""
        letters = self.dead_letters(track)

        def do(txn: lmdb.Transaction) -> int:
            seq = self._read_last_seq(txn)
            log, pend, dead = self._dbs["log"], self._dbs["pend"], self._dbs["dead"]
            for letter in letters:
                prefix = _track_prefix(letter.track)
                if not txn.delete(prefix + encode_seq(letter.record.seq), db=dead):
                    continue
                seq += 1
                key = encode_seq(seq)
                txn.put(key, encode_entry(letter.record.entry), db=log, append=True)
                self._index_latest(txn, [letter.record.entry], [key])
                txn.put(prefix + key, b"", db=pend)
                self._add_count(txn, letter.track, 1)
            return seq

        last = self._write(do)
        self._notify(last)
        return len(letters)

    def manifest_put(self, states: Mapping[bytes, FileState | None]) -> None:
        """Write manifest states without marking entries done (baseline seeding)."""
        self._write(lambda txn: [self._put_manifest(txn, p, s) for p, s in states.items()])

    def set_checkpoint(self, time_ns: int) -> Checkpoint:
        def do(txn: lmdb.Transaction) -> Checkpoint:
            cp = Checkpoint(time_ns, self._read_last_seq(txn))
            txn.put(b"checkpoint", _PAIR.pack(cp.time_ns, cp.seq), db=self._dbs["meta"])
            return cp

        return self._write(do)

    def compact(self, retention_ns: int, now_ns: int | None = None, chunk: int = 10_000) -> int:
        """Remove entries that every track has finished (done or dead) and that
        are older than ``retention_ns``. Returns the number removed."""
        now = time.time_ns() if now_ns is None else now_ns
        horizon = now - retention_ns
        removed_total = 0
        while True:
            removed = self._write(lambda txn: self._compact_chunk(txn, horizon, chunk))
            removed_total += removed
            if removed < chunk:
                return removed_total

    def _compact_chunk(self, txn: lmdb.Transaction, horizon: int, chunk: int) -> int:
        floor = self._min_pending_seq(txn)
        cur = txn.cursor(db=self._dbs["log"])
        removed = 0
        last: tuple[int, int] | None = None
        while removed < chunk and cur.first():
            seq = decode_seq(cur.key())
            entry = decode_entry(cur.value())
            if (floor is not None and seq >= floor) or entry.time_ns >= horizon:
                break
            for p in (entry.path, entry.dest) if entry.op == Op.MOVE else (entry.path,):
                pk = _path_key(p)
                if txn.get(pk, db=self._dbs["latest"]) == cur.key():
                    txn.delete(pk, db=self._dbs["latest"])
            cur.delete()
            removed += 1
            last = (seq, entry.time_ns)
        if last:
            txn.put(b"compacted", _PAIR.pack(*last), db=self._dbs["meta"])
        return removed

    # ------------------------------------------------------------------ reads
    def _read_last_seq(self, txn: lmdb.Transaction) -> int:
        cur = txn.cursor(db=self._dbs["log"])
        if cur.last():
            return decode_seq(cur.key())
        raw = txn.get(b"compacted", db=self._dbs["meta"])
        return _PAIR.unpack(raw)[0] if raw else 0

    def _tracks(self, txn: lmdb.Transaction) -> list[str]:
        return _decode_tracks(txn.get(b"tracks", db=self._dbs["meta"]))

    def _min_pending_seq(self, txn: lmdb.Transaction) -> int | None:
        """Lowest seq still pending for any track (dead letters keep a copy of
        their entry, so they do not hold compaction back)."""
        lows = []
        cur = txn.cursor(db=self._dbs["pend"])
        for track in self._tracks(txn):
            prefix = _track_prefix(track)
            if cur.set_range(prefix) and cur.key().startswith(prefix):
                lows.append(decode_seq(cur.key()[len(prefix) :]))
        return min(lows) if lows else None

    def tracks(self) -> list[str]:
        with self._env.begin() as txn:
            return self._tracks(txn)

    def last_seq(self) -> int:
        with self._env.begin() as txn:
            return self._read_last_seq(txn)

    def get(self, seq: int) -> Record | None:
        with self._env.begin() as txn:
            raw = txn.get(encode_seq(seq), db=self._dbs["log"])
        return Record(seq, decode_entry(raw)) if raw is not None else None

    def pending(self, track: str, limit: int | None = None, after: int = 0) -> list[Record]:
        """Pending entries of ``track`` in seq order, starting after seq ``after``."""
        prefix = _track_prefix(track)
        out: list[Record] = []
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._dbs["pend"])
            log = self._dbs["log"]
            if not cur.set_range(prefix + encode_seq(after + 1)):
                return out
            for key in cur.iternext(values=False):
                if not key.startswith(prefix) or (limit is not None and len(out) >= limit):
                    break
                seq_key = bytes(key[len(prefix) :])
                raw = txn.get(seq_key, db=log)
                if raw is None:
                    raise JournalCorrupt(f"pending entry {decode_seq(seq_key)} missing from log")
                out.append(Record(decode_seq(seq_key), decode_entry(raw)))
        return out

    def dead_letters(self, track: str | None = None) -> list[DeadLetter]:
        out = []
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._dbs["dead"])
            for key in _prefixed_keys(cur, _track_prefix(track) if track else b""):
                raw = bytes(txn.get(key, db=self._dbs["dead"]))
                (rlen,) = struct.unpack_from(">I", raw)
                name, seq_key = key.split(b"\0", 1)
                entry = decode_entry(raw[4 + rlen :])
                out.append(
                    DeadLetter(name.decode(), Record(decode_seq(seq_key), entry), raw[4 : 4 + rlen].decode())
                )
        return out

    def latest_seq(self, path: bytes) -> int | None:
        with self._env.begin() as txn:
            raw = txn.get(_path_key(path), db=self._dbs["latest"])
        return decode_seq(raw) if raw else None

    def manifest_get(self, path: bytes) -> FileState | None:
        with self._env.begin() as txn:
            raw = txn.get(_path_key(path), db=self._dbs["manifest"])
        return decode_state(raw) if raw is not None else None

    def manifest_items(self) -> Iterator[tuple[bytes, FileState]]:
        """Every (path, state) of the manifest, from one consistent snapshot."""
        with self._env.begin() as txn:
            longpath = self._dbs["longpath"]
            for key, raw in txn.cursor(db=self._dbs["manifest"]):
                key = bytes(key)
                path = bytes(txn.get(key, db=longpath)) if key[:1] == b"\0" else key
                yield (b"" if path == b"/" else path), decode_state(raw)

    def manifest_count(self) -> int:
        with self._env.begin() as txn:
            return txn.stat(self._dbs["manifest"])["entries"]

    def checkpoint(self) -> Checkpoint | None:
        with self._env.begin() as txn:
            raw = txn.get(b"checkpoint", db=self._dbs["meta"])
        return Checkpoint(*_PAIR.unpack(raw)) if raw else None

    def compacted_through(self) -> Checkpoint | None:
        """(time_ns, seq) of the newest entry compaction removed, if any."""
        with self._env.begin() as txn:
            raw = txn.get(b"compacted", db=self._dbs["meta"])
        if not raw:
            return None
        seq, t = _PAIR.unpack(raw)
        return Checkpoint(t, seq)

    def since(self, *, seq: int | None = None, time_ns: int | None = None) -> Iterator[Record]:
        """Entries with seq >= ``seq`` or time_ns >= ``time_ns`` (exactly one given)."""
        if (seq is None) == (time_ns is None):
            raise ValueError("give exactly one of seq and time_ns")
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._dbs["log"])
            if not cur.set_range(encode_seq(seq or 0)):
                return
            for key, raw in cur:
                entry = decode_entry(raw)
                if time_ns is None or entry.time_ns >= time_ns:
                    yield Record(decode_seq(key), entry)

    def stats(self, now_ns: int | None = None) -> JournalStats:
        with self._env.begin() as txn:
            entries = txn.stat(self._dbs["log"])["entries"]
            last = self._read_last_seq(txn)
            tracks = {}
            for track in self._tracks(txn):
                prefix = _track_prefix(track)
                raw = txn.get(b"pcount:" + track.encode(), db=self._dbs["meta"])
                oldest = None
                cur = txn.cursor(db=self._dbs["pend"])
                if cur.set_range(prefix) and cur.key().startswith(prefix):
                    log_raw = txn.get(bytes(cur.key()[len(prefix) :]), db=self._dbs["log"])
                    oldest = decode_entry(log_raw).time_ns if log_raw else None
                dead = sum(1 for _ in _prefixed_keys(txn.cursor(db=self._dbs["dead"]), prefix))
                tracks[track] = TrackStats(_COUNT.unpack(raw)[0] if raw else 0, oldest, dead)
            cp_raw = txn.get(b"checkpoint", db=self._dbs["meta"])
        size = (self.path / "data.mdb").stat().st_size
        return JournalStats(
            entries, last, size, Checkpoint(*_PAIR.unpack(cp_raw)) if cp_raw else None, tracks
        )

    # ------------------------------------------------------------------ waiting
    def _notify(self, last: int | None) -> None:
        with self._changed:
            if last is not None:
                self._last_seq = max(self._last_seq, last)
            self._changed.notify_all()

    def wait_for_change(self, after_seq: int, timeout: float) -> int:
        """Block until an entry after ``after_seq`` exists, or ``timeout`` passes
        (or another thread calls :meth:`wake`). Returns the last seq.

        Appends in this process wake waiters at once; appends by other
        processes (``agent replay`` while the agent runs) are seen when the
        timeout expires, so callers bound the timeout.
        """
        with self._changed:
            if self._last_seq <= after_seq:
                self._changed.wait(timeout)
        last = self.last_seq()
        with self._changed:
            self._last_seq = max(self._last_seq, last)
        return last

    def wake(self) -> None:
        """Wake every waiter (shutdown, requeue)."""
        self._notify(None)


# ---------------------------------------------------------------------- helpers
def _prefixed_keys(cur: lmdb.Cursor, prefix: bytes) -> list[bytes]:
    keys = []
    if cur.set_range(prefix):
        for key in cur.iternext(values=False):
            if not key.startswith(prefix):
                break
            keys.append(bytes(key))
    return keys


def _decode_tracks(raw: bytes | None) -> list[str]:
    return [t for t in bytes(raw).decode().split("\n") if t] if raw else []


def _is_enospc(exc: lmdb.Error) -> bool:
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)


def _check_directory(jdir: Path, *, create: bool) -> None:
    if not jdir.exists():
        if not create:
            raise NotAJournal(f"no journal at {jdir}", path=str(jdir))
        jdir.mkdir(mode=0o700, parents=True)
        return
    if not jdir.is_dir():
        raise NotAJournal(f"{jdir} is not a directory", path=str(jdir))
    names = set(os.listdir(jdir))
    if names and "data.mdb" not in names:
        raise NotAJournal(
            f"{jdir} is not empty and holds no journal ({', '.join(sorted(names)[:3])} ...)", path=str(jdir)
        )
    if "data.mdb" in names and not create and "lock.mdb" not in names:
        raise NotAJournal(f"{jdir} has no lock.mdb; open it once with 'agent run'", path=str(jdir))


def _open_env(jdir: Path, mode: Mode, map_size: int) -> lmdb.Environment:
    data = jdir / "data.mdb"
    if data.exists():
        _check_not_truncated(data)
    try:
        env = lmdb.open(
            str(jdir),
            map_size=map_size,
            max_dbs=8,
            readonly=mode == "read",
            sync=True,
            metasync=True,
            readahead=False,
            max_readers=126,
            create=mode != "read",
            mode=0o600,
        )
    except lmdb.Error as exc:
        if _is_enospc(exc):
            raise JournalFull(f"no space left to open journal {jdir}", path=str(jdir)) from exc
        if "already open" in str(exc):
            raise JournalError(f"journal {jdir} is already open in this process", path=str(jdir)) from exc
        raise JournalCorrupt(f"cannot open journal {jdir}: {exc}", path=str(jdir)) from exc
    info = env.info()
    psize = env.stat()["psize"]
    if data.exists() and (info["last_pgno"] + 1) * psize > data.stat().st_size:
        env.close()
        raise JournalCorrupt(
            f"journal {jdir}/data.mdb is shorter than its own page table (truncated?)", path=str(jdir)
        )
    return env


def _check_not_truncated(data: Path) -> None:
    """LMDB maps the file: reading past a truncated end would crash with SIGBUS,
    so refuse files too short for the two meta pages before LMDB touches them."""
    if data.stat().st_size < 2 * 4096:
        raise JournalCorrupt(
            f"journal file {data} is truncated ({data.stat().st_size} bytes)", path=str(data)
        )


def _take_lock(jdir: Path) -> int:
    fd = os.open(jdir / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        pid = int(holder) if holder.isdigit() else None
        raise JournalLocked(
            f"journal {jdir} is locked by another agent (pid {holder or 'unknown'})",
            path=str(jdir),
            holder_pid=pid,
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release_lock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
