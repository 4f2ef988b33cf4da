"""A stand-in for makuosan's TCP console towards the msync shipper's relay
probe: it answers every connection with a prompt and closes it. The msync
double itself never connects to it (it reads its own socket)."""

from __future__ import annotations

import socket
import threading

__all__ = ["Greeter"]


class Greeter:
    """Listens on a loopback port until :meth:`close`; each connection is
    served by :meth:`serve` in a thread of its own (a subclass may talk on)."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.console = f"tcp:127.0.0.1:{self.port}"
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"> ")

    def close(self) -> None:
        self.srv.close()
