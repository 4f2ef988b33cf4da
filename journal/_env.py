"""Opening the LMDB environment safely: directory checks, the writer lock,
and truncation checks.

Everything here runs before the journal reads a single page, because LMDB
maps the data file: a file shorter than its own page table crashes the
process with SIGBUS instead of raising.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shlex
import stat
import time
from pathlib import Path
from typing import Literal

import lmdb

from . import _pages
from ._create import SIDE_NAME
from ._intake import LOCK_NAME as INTAKE_LOCK
from ._intake import NAME as INTAKE_NAME
from .errors import JournalCorrupt, JournalError, JournalFull, JournalLocked, NotAJournal, UnsafeJournal

__all__ = [
    "Mode",
    "MODES",
    "LOCK_NAME",
    "check_directory",
    "DAMAGE_NAME",
    "record_damage",
    "unsafe_directory",
    "files_to_create",
    "remove_created",
    "take_lock",
    "lock_for",
    "lock_holder",
    "release_lock",
    "open_env",
    "is_enospc",
    "translate",
    "open_error",
]

Mode = Literal["agent", "client", "read"]
MODES = ("agent", "client", "read")
LOCK_NAME = "agent.lock"
DAMAGE_NAME = "DAMAGED"  # written once when a writer finds damage; every open refuses it
_MIN_PAGES = 2  # the two meta pages every LMDB file starts with
_PROBE_GRACE_S = 0.2  # how long taking the lock waits out a status probe


def check_directory(jdir: Path, mode: Mode) -> None:
    """Refuse anything that is not an empty directory or one holding an LMDB file.

    Whether an LMDB file is really a journal is checked after opening it.
    """
    try:
        _check_directory(jdir, mode)
    except OSError as exc:
        raise JournalError(f"cannot open journal {jdir}: {exc}", path=str(jdir)) from exc


def _check_directory(jdir: Path, mode: Mode) -> None:
    if not jdir.exists():
        if mode == "read":
            raise NotAJournal(f"no journal at {jdir}", path=str(jdir))
        jdir.mkdir(mode=0o700, parents=True)
        return
    if not jdir.is_dir():
        raise NotAJournal(f"{jdir} is not a directory", path=str(jdir))
    problem = unsafe_directory(str(jdir), os.stat(jdir), os.geteuid())
    if problem is not None:
        raise UnsafeJournal(problem[0], path=str(jdir), hint=problem[1])
    names = set(os.listdir(jdir))
    if DAMAGE_NAME in names:
        raise JournalCorrupt(
            f"journal {jdir} was found damaged: {_read_damage(jdir / DAMAGE_NAME)}", path=str(jdir)
        )
    others = names - {"lock.mdb", LOCK_NAME, INTAKE_LOCK, SIDE_NAME}  # what a failed creation may leave
    if others and "data.mdb" not in names:
        listed = ", ".join(sorted(others)[:3])
        raise NotAJournal(f"{jdir} is not empty and holds no journal ({listed} ...)", path=str(jdir))
    if mode == "read" and "data.mdb" not in names:
        raise NotAJournal(f"{jdir} holds no journal yet", path=str(jdir))
    if mode == "read" and "lock.mdb" not in names:
        raise NotAJournal(f"{jdir} has no lock.mdb; open it once with 'agent run'", path=str(jdir))


def unsafe_directory(where: str, st: os.stat_result, euid: int) -> tuple[str, str] | None:
    """(error, hint) when a directory is not the agent's alone: owned by a
    user other than ``euid`` and root, or writable by group or others.
    Whoever can write there can swap a journal file for a link, and a root
    agent would then write wherever it points."""
    quoted = shlex.quote(where)
    if st.st_uid not in (euid, 0):
        return (
            f"journal directory {where} is owned by uid {st.st_uid}, not by this user (uid {euid})",
            f"run the command as uid {st.st_uid} (the journal's owner), or make it this user's: "
            f"chown {euid} {quoted} && chmod 700 {quoted}",
        )
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable:
        bits = (("group", stat.S_IWGRP), ("others", stat.S_IWOTH))
        who = " and ".join(name for name, bit in bits if writable & bit)
        return (
            f"journal directory {where} is writable by {who} (mode {stat.S_IMODE(st.st_mode):o})",
            f"run: chmod go-w {quoted}",
        )
    return None


def record_damage(jdir: Path, message: str) -> None:
    """Leave ``DAMAGE_NAME`` in the journal, so every later open (the agent,
    ``status``, ``verify``) refuses it, even where the damage itself is only
    seen when the damaged value is read. Best effort: the caller raises anyway.
    Written aside and linked into place, so a full disk leaves no empty
    marker; the first report is kept."""
    text = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}\n".encode(errors="replace")
    tmp = jdir / f"{DAMAGE_NAME}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if os.write(fd, text) != len(text):
                raise OSError("short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, jdir / DAMAGE_NAME)
    except OSError:
        pass
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _read_damage(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return f"(cannot read {path.name}: {exc.strerror})"
    try:
        text = os.read(fd, 2048).decode(errors="replace").strip()
    finally:
        os.close(fd)
    return f"{text} (recorded in {path.name})"


def files_to_create(jdir: Path, mode: Mode) -> list[Path]:
    """The files opening will create, so a refused or failed open can remove them.

    ``data.mdb`` is listed only for the agent, which holds the directory lock
    and so knows nobody else is creating the journal at the same time. The
    intake lock is never removed: a client may hold it, and a directory that
    holds only lock files still counts as empty."""
    names = ["lock.mdb"] + (["data.mdb", LOCK_NAME, INTAKE_NAME] if mode == "agent" else [])
    return [jdir / n for n in names if not (jdir / n).exists()]


def remove_created(paths: list[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def take_lock(jdir: Path) -> int:
    """Exclusive, non-blocking lock naming its holder; returns the fd to keep open.

    A failed open unlinks the lock file it created, so after locking, check
    that the locked inode is still the one at the path, else try again.
    """
    path = jdir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _flock_exclusive(fd)
            if _same_file(fd, path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = int(holder) if holder.isdigit() else None
            raise JournalLocked(
                f"journal {jdir} is locked by another agent (pid {holder or 'unknown'})",
                path=str(jdir),
                holder_pid=pid,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _flock_exclusive(fd: int) -> None:
    """LOCK_EX without blocking; a refusal is retried for a moment, because
    :func:`lock_holder` holds a shared lock for an instant while probing."""
    deadline = time.monotonic() + _PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def lock_holder(jdir: Path) -> tuple[bool, int | None]:
    """Whether an agent holds the journal's writer lock now, and its pid
    (None when unknown). The lock is the truth: it goes away with the
    process, however the process ended. The probe takes a shared lock and
    drops it at once, so it never keeps an agent from starting."""
    try:
        fd = os.open(jdir / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return True, int(holder) if holder.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, None
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino)


def lock_for(jdir: Path, mode: Mode, created: list[Path]) -> int | None:
    """The writer lock for the agent (None for other modes); a failure to take
    it removes the files this open created."""
    if mode != "agent":
        return None
    try:
        return take_lock(jdir)
    except OSError as exc:
        remove_created(created)
        if is_enospc(exc, jdir):
            raise JournalFull(f"no space left to lock journal {jdir}", path=str(jdir)) from exc
        raise JournalError(f"cannot lock journal {jdir}: {exc}", path=str(jdir)) from exc


def release_lock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def is_enospc(exc: BaseException, jdir: Path, need: int = 0) -> bool:
    """Whether a failed write means the filesystem is full.

    LMDB reports a short write as EIO, which is what a nearly full disk
    produces, so EIO counts as full when free space is below what the
    transaction needed (or 1 MiB).
    """
    text = str(exc)
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text:
        return True
    if "Input/output error" not in text:
        return False
    try:
        st = os.statvfs(jdir)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < max(1 << 20, 2 * need)


_CORRUPT = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError)


def translate(exc: lmdb.Error, jdir: Path, need: int = 0) -> JournalError:
    """An LMDB failure in operator terms: full disk, corruption, or another I/O error."""
    if is_enospc(exc, jdir, need):
        return JournalFull(f"no space left for journal {jdir}", path=str(jdir))
    if isinstance(exc, _CORRUPT):
        return JournalCorrupt(f"journal {jdir} is damaged: {exc}", path=str(jdir))
    if isinstance(exc, lmdb.PanicError):  # a failed commit (an I/O error) poisons this process's handle
        return JournalError(
            f"journal {jdir}: {exc}",
            path=str(jdir),
            hint="restart the agent: only the failed commit is lost; check the disk if this repeats",
        )
    return JournalError(f"journal {jdir}: {exc}", path=str(jdir))


def open_error(exc: BaseException, jdir: Path) -> BaseException:
    """What a failed open raises: LMDB errors become JournalFull or JournalCorrupt."""
    if isinstance(exc, OSError) and is_enospc(exc, jdir):
        return JournalFull(f"no space left to create journal {jdir}", path=str(jdir))
    if not isinstance(exc, lmdb.Error):
        return exc
    if is_enospc(exc, jdir):
        return JournalFull(f"no space left to open journal {jdir}", path=str(jdir))
    return JournalCorrupt(f"cannot read journal {jdir}: {exc}", path=str(jdir))


def open_env(jdir: Path, mode: Mode, map_size: int) -> lmdb.Environment:
    """Open the environment with synced commits; refuse truncated files first."""
    data = jdir / "data.mdb"
    if data.exists():
        _check_size(data, _MIN_PAGES * os.sysconf("SC_PAGE_SIZE"))
    try:
        env = lmdb.open(
            str(jdir),
            map_size=map_size,
            max_dbs=16,
            readonly=mode == "read",
            sync=True,
            metasync=True,
            readahead=False,
            max_readers=126,
            create=mode != "read",
            mode=0o600,
        )
    except lmdb.Error as exc:
        if is_enospc(exc, jdir):
            raise JournalFull(f"no space left to open journal {jdir}", path=str(jdir)) from exc
        if "already open" in str(exc):
            raise JournalError(f"journal {jdir} is already open in this process", path=str(jdir)) from exc
        raise JournalCorrupt(f"cannot open journal {jdir}: {exc}", path=str(jdir)) from exc
    if data.exists():
        try:
            _check_size(data, _pages_needed(env, data))
        except BaseException:
            env.close()
            raise
    return env


def _pages_needed(env: lmdb.Environment, data: Path, attempts: int = 3) -> int:
    """Bytes ``data.mdb`` must hold for the newest snapshot.

    ``info()`` and ``stat()`` read only the meta pages, which the first size
    check vouched for. Usually the file reaches ``last_pgno``; when it does
    not, the pages past its end must all be free (see ``_pages``). Another
    process may commit while the freelist is read, so a layout that does not
    add up is read again before it counts as damage.
    """
    problem = ""
    for _ in range(attempts):
        info = env.info()
        full = (info["last_pgno"] + 1) * env.stat()["psize"]
        if data.stat().st_size >= full:
            return full
        try:
            fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return _pages.required_size(fd, info["last_txnid"])
            finally:
                os.close(fd)
        except _pages.FileLayoutError as exc:
            problem = str(exc)
    raise JournalCorrupt(f"journal file {data} is damaged: {problem}", path=str(data))


def _check_size(data: Path, need: int) -> None:
    size = data.stat().st_size
    if size < need:
        raise JournalCorrupt(
            f"journal file {data} is truncated ({size} bytes, its page table needs {need})",
            path=str(data),
        )
