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
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable

import structlog

__all__ = ["ConsoleRelay", "greets", "tcp_address"]

log = structlog.get_logger()
_CHUNK = 65536
PROBE_S = 2.0  # a console greets at once


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
    connection ``connect`` makes to the TCP console."""

    def __init__(self, connect: Callable[[], socket.socket], directory: str | None = None) -> None:
        self._connect = connect
        self._dir = directory or tempfile.mkdtemp(prefix="msync-relay-")  # mode 0700
        self._owns_dir = directory is None
        self.path = os.path.join(self._dir, "console.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(self.path)
        os.chmod(self.path, 0o600)
        self._srv.listen(16)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
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
