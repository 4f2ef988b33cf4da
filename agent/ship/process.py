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
) -> ExecResult:
    """Run ``argv`` to completion or until ``timeout`` seconds, then kill its group.

    Never raises for the child's failure: a missing program gives
    ``missing=True`` with returncode 127, a timeout ``timed_out=True``.
    With ``idle_timeout`` (no ``stdin`` then), a child that writes nothing
    for that long is killed too and reported ``stalled``: a program that
    reports progress line by line and went quiet is blocked.
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
    stalled = False
    try:
        if idle_timeout is None:
            out, err = proc.communicate(stdin, timeout=timeout)
        else:
            out, err, stalled = _watch(proc, start + timeout, idle_timeout)
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
    )


def _watch(proc: subprocess.Popen[bytes], deadline: float, idle: float) -> tuple[bytes, bytes, bool]:
    """Read both pipes as output arrives; kill the group after ``idle``
    seconds of silence (-> stalled) and raise TimeoutExpired at ``deadline``."""
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    stalled = False
    with selectors.DefaultSelector() as sel:
        for pipe in (proc.stdout, proc.stderr):
            sel.register(pipe, selectors.EVENT_READ)
        last = time.monotonic()
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                raise subprocess.TimeoutExpired(proc.args, 0)
            if not stalled and now - last >= idle:
                stalled = True
                _kill_group(proc.pid)  # the pipes close; what was written is still read
            for key, _ in sel.select(min(deadline - now, max(0.01, idle - (now - last)))):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                    last = time.monotonic()
                else:
                    sel.unregister(key.fileobj)
    proc.wait()
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), stalled


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
