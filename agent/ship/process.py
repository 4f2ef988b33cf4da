"""The only place in msync-agent that starts external processes.

argv lists only (never a shell), a scrubbed environment, stdin from a bytes
buffer or /dev/null, and a timeout that kills the whole process group.
``abort_all`` ends every running child's group at once and refuses new ones:
shutdown must never wait on a program that blocks (msync waits up to 60 s
per dead makuosan member).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ExecResult", "run", "abort_all", "resume", "SAFE_ENV_KEYS"]

SAFE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "TMPDIR")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIFO_POLL_S = 0.25  # with a fifo_wait_limit: how often the child's processes are looked at


@dataclass(frozen=True, slots=True)
class ExecResult:
    argv: tuple[bytes | str, ...]
    returncode: int  # -SIGNAL when killed; 127 when the program is missing
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool = False
    missing: bool = False  # the program could not be started (ENOENT / EACCES)
    aborted: bool = False  # ended (or never started) because the agent is stopping
    stalled: bool = False  # killed after ``idle_timeout`` seconds without any output
    fifo_blocked: bool = False  # killed while waiting ``fifo_wait_limit`` seconds to open a fifo


_lock = threading.Lock()
_running: set[int] = set()  # process group ids of children still running
_aborting = threading.Event()


def abort_all() -> int:
    """Kill the process group of every running child and make later calls
    return ``aborted`` at once, without starting anything. Safe from any
    thread; returns how many groups were killed."""
    with _lock:
        _aborting.set()
        groups = list(_running)
    for pgid in groups:
        _kill_group(pgid)
    return len(groups)


def resume() -> None:
    """Allow children again (an agent started anew in the same process, e.g. tests)."""
    _aborting.clear()


def scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: a few safe keys from ours, plus ``extra``."""
    env = {k: os.environ[k] for k in SAFE_ENV_KEYS if k in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(extra or {})
    return env


def run(
    argv: Sequence[bytes | str],
    *,
    timeout: float,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | bytes | None = None,
    idle_timeout: float | None = None,
    fifo_wait_limit: float | None = None,
) -> ExecResult:
    """Run ``argv`` to completion or until ``timeout`` seconds, then kill its group.

    Never raises for the child's failure: a missing program gives
    ``missing=True`` with returncode 127, a timeout ``timed_out=True``.
    With ``idle_timeout``, a child that writes nothing
    for that long is killed too and reported ``stalled``: a program that
    reports progress line by line and went quiet is blocked.
    With ``fifo_wait_limit``, a child (or any descendant) that waits that
    long to open a fifo is killed with its group and reported
    ``fifo_blocked``: a copying program that opens a path it listed as a
    file, just replaced by a fifo, waits for a writer for ever (its own
    I/O timeouts do not cover ``open``).
    """
    start = time.monotonic()
    if _aborting.is_set():
        return ExecResult(tuple(argv), -signal.SIGKILL, b"", b"agent stopping", 0.0, aborted=True)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=scrubbed_env(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        return ExecResult(tuple(argv), 127, b"", str(exc).encode(), time.monotonic() - start, missing=True)
    with _lock:
        _running.add(proc.pid)
    if _aborting.is_set():  # abort_all ran between the check above and the registration
        _kill_group(proc.pid)
    stalled = fifo_blocked = False
    try:
        if idle_timeout is None and fifo_wait_limit is None:
            out, err = proc.communicate(stdin, timeout=timeout)
        else:
            out, err, stalled, fifo_blocked = _watch(
                proc, stdin, start + timeout, idle_timeout, fifo_wait_limit
            )
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        timed_out = True
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    finally:
        with _lock:
            _running.discard(proc.pid)
    aborted = _aborting.is_set() and proc.returncode < 0
    return ExecResult(
        tuple(argv),
        proc.returncode,
        out,
        err,
        time.monotonic() - start,
        timed_out,
        aborted=aborted,
        stalled=stalled,
        fifo_blocked=fifo_blocked,
    )


def _watch(
    proc: subprocess.Popen[bytes],
    stdin: bytes | None,
    deadline: float,
    idle: float | None,
    fifo_limit: float | None,
) -> tuple[bytes, bytes, bool, bool]:
    """Feed ``stdin`` and read both pipes as output arrives. Kill the group
    after ``idle`` seconds of silence (-> stalled), or once some process of
    it has waited ``fifo_limit`` seconds to open a fifo (-> fifo blocked);
    raise TimeoutExpired at ``deadline``. What was written before a kill is
    still read."""
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    stalled = fifo_blocked = False
    feed = memoryview(stdin or b"")
    with selectors.DefaultSelector() as sel:
        for pipe in (proc.stdout, proc.stderr):
            sel.register(pipe, selectors.EVENT_READ)
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        last = time.monotonic()
        waiting_since: float | None = None
        next_look = last + FIFO_POLL_S
        while any(key.events == selectors.EVENT_READ for key in sel.get_map().values()):
            now = time.monotonic()
            if now >= deadline:
                raise subprocess.TimeoutExpired(proc.args, 0)
            ended = stalled or fifo_blocked
            if not ended and idle is not None and now - last >= idle:
                stalled = True
                _kill_group(proc.pid)  # the pipes close; what was written is still read
            if not ended and fifo_limit is not None and now >= next_look:
                next_look = now + FIFO_POLL_S
                if any(_waits_to_open_fifo(pid) for pid in _process_tree(proc.pid)):
                    waiting_since = now if waiting_since is None else waiting_since
                    if now - waiting_since >= fifo_limit:
                        fifo_blocked = True
                        _kill_group(proc.pid)
                else:
                    waiting_since = None
            wait = deadline - now
            if idle is not None:
                wait = min(wait, max(0.01, idle - (now - last)))
            if fifo_limit is not None:
                wait = min(wait, max(0.01, next_look - now))
            for key, _ in sel.select(wait):
                if key.fileobj is proc.stdin:
                    feed = _feed(proc, sel, feed)
                    continue
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                    last = time.monotonic()
                else:
                    sel.unregister(key.fileobj)
        if proc.stdin is not None and not proc.stdin.closed:
            sel.unregister(proc.stdin)
            proc.stdin.close()
    proc.wait(max(0.0, deadline - time.monotonic()))  # a child that closed its pipes still ends in time
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), stalled, fifo_blocked


def _feed(proc: subprocess.Popen[bytes], sel: selectors.BaseSelector, feed: memoryview) -> memoryview:
    """Write what the child's stdin takes now; close it once all is written
    (or the child stopped reading)."""
    try:
        written = os.write(proc.stdin.fileno(), feed[:65536]) if feed else 0
    except BlockingIOError:
        return feed
    except OSError:
        written = len(feed)  # the child is gone or closed its end (EPIPE): nothing more to give
    feed = feed[written:]
    if not feed:
        sel.unregister(proc.stdin)
        proc.stdin.close()
    return feed


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants now (the kernel's children lists; only
    ``pid`` where they are not available)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children", "rb") as f:
                    todo += [int(child) for child in f.read().split()]
            except OSError:
                pass
    return found


def _waits_to_open_fifo(pid: int) -> bool:
    """Linux names where a sleeping process waits: a fifo's open that waits
    for the other end is ``wait_for_partner``."""
    try:
        with open(f"/proc/{pid}/wchan", "rb") as f:
            return f.read().strip() == b"wait_for_partner"
    except OSError:
        return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
