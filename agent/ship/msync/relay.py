"""A relay between msync and makuosan's TCP console that answers at once.

Over a TCP console every exchange in which makuosan writes lines before its
prompt costs about 40 ms (docs/msync.md §8): the daemon never sets
TCP_NODELAY, so its prompt waits behind the previous segment until msync's
delayed acknowledgement comes. Per-member proof needs those lines (``-l 2``),
so a plan of scattered single files paid 40 ms a file.

The relay listens on a private unix socket and forwards every connection
byte for byte to the TCP console; its own TCP socket acknowledges at once
(``TCP_QUICKACK`` before every read) and sends without delay. msync is then
pointed at the relay (``-c unix:PATH``): same commands, same answers, same
passwords and keep-alives, one console slot per msync as before. When msync
ends (or is ended), the daemon's side is closed too.

Its private directory (``msync-relay-TAG-XXXXXXXX`` in the temporary
directory, TAG naming the root and target, :func:`relay_tag`) is locked
(``flock``) for the relay's life; the kernel drops the lock when the agent
dies, even by SIGKILL, so the next start removes what a dead relay left
(:func:`sweep`) and never touches a live one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable

import structlog

__all__ = ["ConsoleRelay", "greets", "relay_tag", "sweep", "tcp_address"]

log = structlog.get_logger()
_CHUNK = 65536
PROBE_S = 2.0  # a console greets at once
_PREFIX = "msync-relay-"
_SOCKET = "console.sock"
SETUP_S = 60.0  # an unlocked directory without a socket younger than this may be a relay starting


def greets(connect: Callable[[], socket.socket]) -> bool:
    """Whether a makuosan console answers a connection ``connect`` makes: it
    greets with its prompt (``> ``), or asks for the password."""
    try:
        with connect() as s:
            s.settimeout(PROBE_S)
            greeting = b""
            while not greeting.endswith(b"> ") and not greeting.startswith(b"password:"):
                chunk = s.recv(256)
                if not chunk or len(greeting) > 256:
                    return False
                greeting += chunk
    except OSError:
        return False
    return True


def relay_tag(root: bytes, target: str) -> str:
    """Names the relay directories of one target of one watched root."""
    return hashlib.sha256(root + b"\0" + target.encode()).hexdigest()[:12]


def sweep(tag: str, directory: str | None = None) -> list[str]:
    """Remove the directories dead relays of ``tag`` left in ``directory``
    (default: the temporary directory): ours (this user's, mode 0700, not a
    symlink), their lock free (no relay alive in them), holding a socket (or
    older than a relay takes to start), nothing in them but the socket.
    Returns what was removed."""
    base = directory or tempfile.gettempdir()
    prefix = f"{_PREFIX}{tag}-"
    removed: list[str] = []
    try:
        names = [e.name for e in os.scandir(base) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(base, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a relay lives here
            if _stale(fd, st) and _empty_out(fd):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
                    removed.append(path)
        finally:
            os.close(fd)
    return removed


def _stale(fd: int, st: os.stat_result) -> bool:
    """An unlocked relay directory that holds its socket, or that no relay
    has been setting up for a while."""
    try:
        os.stat(_SOCKET, dir_fd=fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return time.time() - st.st_mtime > SETUP_S
    except OSError:
        return False


def _empty_out(fd: int) -> bool:
    """Remove the relay's socket; True when nothing else is inside."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.stat(_SOCKET, dir_fd=fd, follow_symlinks=False).st_mode):
            return False
        os.unlink(_SOCKET, dir_fd=fd)
    return not os.listdir(fd)


def tcp_address(console: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp:HOST:PORT`` console, None for anything else."""
    if not console.startswith("tcp:"):
        return None
    host, _, port = console[4:].rpartition(":")
    try:
        return (host.strip("[]"), int(port)) if host else None
    except ValueError:
        return None


class ConsoleRelay:
    """Forwards each connection to its unix socket (``target``) to a fresh
    connection ``connect`` makes to the TCP console. Without ``directory``
    it makes and locks a private one named with ``tag``."""

    def __init__(
        self, connect: Callable[[], socket.socket], directory: str | None = None, tag: str = ""
    ) -> None:
        self._connect = connect
        self._owns_dir = directory is None
        self._lock_fd = -1
        if directory is None:
            directory = tempfile.mkdtemp(prefix=f"{_PREFIX}{tag}-" if tag else _PREFIX)  # mode 0700
            self._lock_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # held while the relay lives
        self._dir = directory
        self.path = os.path.join(self._dir, _SOCKET)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._srv.bind(self.path)  # OSError when the path is too long for AF_UNIX
            os.chmod(self.path, 0o600)
            self._srv.listen(16)
        except BaseException:
            self.close()
            raise
        threading.Thread(target=self._accept, name="msync-relay", daemon=True).start()

    @property
    def target(self) -> str:
        """The msync ``-c`` value that reaches the console through the relay."""
        return "unix:" + self.path

    def upstream_ok(self) -> bool:
        """Whether a makuosan console answers upstream now (:func:`greets`)."""
        return greets(self._connect)

    def close(self) -> None:
        """Stop listening, cut every forwarded connection, remove the socket."""
        with self._lock:
            self._closed = True
            socks = [self._srv, *self._open]
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # ------------------------------------------------------------------ forwarding
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), name="msync-relay-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            console = self._connect()
            console.settimeout(None)
            console.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            log.warning("ship.msync.relay_connect_failed", error=str(exc))
            client.close()
            return
        with self._lock:
            if self._closed:
                client.close()
                console.close()
                return
            self._open |= {client, console}
        up = threading.Thread(target=self._pump, args=(client, console, False), daemon=True)
        up.start()
        self._pump(console, client, True)
        up.join()
        with self._lock:
            self._open -= {client, console}
        client.close()
        console.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, quickack: bool) -> None:
        """Copy ``src`` to ``dst`` until ``src`` ends. msync's side ending means
        msync is gone: the console connection is cut both ways, so a daemon
        still busy (a member that stopped answering) cannot hold it open."""
        try:
            while True:
                if quickack:
                    src.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR if quickack else socket.SHUT_RDWR)
        if not quickack:
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RDWR)
