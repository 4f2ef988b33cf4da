"""A real makuosan 1.3.6 cluster in network namespaces (see README.md here).

Three hosts on one bridge: ``mk1`` sends (its base is the agent's root),
``mk2`` and ``mk3`` receive. Each daemon runs in its own UTS namespace so
``msync --members`` shows distinct host names. The sender's console is a
unix socket (``unix``, reachable from any namespace) or makuosan's default
TCP console on 127.0.0.1:5000 inside ``h1`` (``tcp``): msync must then run
in h1's namespace, which :meth:`RealCluster.msync_in_h1` arranges for a
shipper that runs here. Used by the tests here and by ``ops/bench/msync``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.wait import wait_until
from tests.netns.cluster import Cluster, stop_process

__all__ = ["RealCluster", "find_binaries", "build_bridge", "SKIP_REASON", "RECEIVERS", "TCP_CONSOLE"]

SKIP_REASON = "real msync/makuosan not installed; set MSYNC_REAL_BIN_DIR or put them on PATH"
RECEIVERS = ("mk2", "mk3")
TCP_CONSOLE = "tcp:127.0.0.1:5000"
_HOST_OF = {"mk1": "h1", "mk2": "h2", "mk3": "h3"}
# Sets the host name inside the fresh UTS namespace, then becomes makuosan.
_AS_HOST = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execv(sys.argv[2], sys.argv[2:])"
# Enters a network namespace (setns on its /run/netns file), then becomes msync:
# argv is passed through untouched, never through a shell.
_IN_NETNS = """#!{python} -I
import ctypes, os, sys
fd = os.open({ns!r}, os.O_RDONLY)
if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
    sys.exit("setns failed: " + os.strerror(ctypes.get_errno()))
os.close(fd)
os.execv({msync!r}, [{msync!r}, *sys.argv[1:]])
"""


def find_binaries() -> tuple[Path, Path] | None:
    """(msync, makuosan) from $MSYNC_REAL_BIN_DIR (makuosan may sit in the
    sibling ``sbin``, where ``make install`` puts it), else from PATH."""
    bin_dir = os.environ.get("MSYNC_REAL_BIN_DIR")
    if bin_dir:
        d = Path(bin_dir)
        msync = d / "msync"
        daemons = [d / "makuosan", d.parent / "sbin" / "makuosan"]
        makuosan = next((p for p in daemons if os.access(p, os.X_OK)), None)
        return (msync, makuosan) if makuosan and os.access(msync, os.X_OK) else None
    msync_path, makuosan_path = shutil.which("msync"), shutil.which("makuosan")
    if msync_path and makuosan_path:
        return Path(msync_path), Path(makuosan_path)
    return None


def build_bridge(c: Cluster) -> None:
    """Multicast must flood the bridge and leave each host through eth0."""
    hub = ["ip", "-n", c.hub, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"]
    subprocess.run(hub, check=True, capture_output=True)
    for h in c.hosts.values():
        route = ["ip", "-n", h.netns, "route", "add", "224.0.0.0/4", "dev", "eth0"]
        subprocess.run(route, check=True, capture_output=True)


@dataclass
class RealCluster:
    """The running cluster: the base (agent root), receiver dirs, the console."""

    cluster: Cluster
    msync: Path
    makuosan: Path
    work: Path
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    sender_console: str = "unix"  # "unix" or "tcp": how mk1 takes commands

    @property
    def root(self) -> Path:
        return self.work / "mk1"

    @property
    def socket(self) -> Path:
        return self.work / "mk1.sock"

    @property
    def console(self) -> str:
        """The msync ``-c`` value of the sender's console."""
        return f"unix:{self.socket}" if self.sender_console == "unix" else TCP_CONSOLE

    def member_dir(self, name: str) -> Path:
        return self.work / name

    def start(self, name: str, *extra: str) -> None:
        """Start ``name``'s daemon in its host namespace under its own host name.
        Receivers and a unix-console sender get ``-U SOCK``; a TCP-console
        sender listens on makuosan's default 127.0.0.1:5000 inside h1."""
        base, sock = self.work / name, self.work / f"{name}.sock"
        base.mkdir(exist_ok=True)
        sock.unlink(missing_ok=True)
        argv = ["unshare", "--uts", "--", sys.executable, "-c", _AS_HOST, name, str(self.makuosan)]
        argv += ["-n", "-b", str(base), *extra]
        if name != "mk1" or self.sender_console == "unix":
            argv += ["-U", str(sock)]
        with open(self.work / f"{name}.log", "ab") as log:
            self.daemons[name] = self.cluster.spawn(
                _HOST_OF[name], argv, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self, name: str) -> None:
        """SIGTERM: makuosan multicasts EXIT and the sender drops it at once."""
        stop_process(self.daemons.pop(name))

    def freeze(self, name: str) -> None:
        """SIGSTOP the daemon: it stops answering without saying goodbye."""
        self.daemons[name].send_signal(signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self.daemons[name].send_signal(signal.SIGCONT)

    def msync_in_h1(self) -> Path:
        """An executable that runs msync inside h1's network namespace (where
        the TCP console listens), for a shipper that runs in this one."""
        path = self.work / "msync-in-h1"
        ns = f"/run/netns/{self.cluster.hosts['h1'].netns}"
        path.write_text(_IN_NETNS.format(python=sys.executable, ns=ns, msync=str(self.msync)))
        path.chmod(0o755)
        return path

    def connect_console(self) -> socket.socket:
        """A TCP connection to mk1's console, made inside h1's network
        namespace (a thread that entered it makes the socket; the socket
        stays there): what the shipper's console relay needs from here."""
        ns = f"/run/netns/{self.cluster.hosts['h1'].netns}"
        out: list[socket.socket | BaseException] = []

        def inside() -> None:
            try:
                fd = os.open(ns, os.O_RDONLY)
                try:
                    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                out.append(socket.create_connection(("127.0.0.1", 5000), timeout=5))
            except BaseException as exc:  # handed to the caller
                out.append(exc)

        t = threading.Thread(target=inside)  # a thread that ends: its namespace goes with it
        t.start()
        t.join()
        if isinstance(out[0], BaseException):
            raise out[0]
        return out[0]

    def msync_argv(self, *args: str | bytes) -> list[str | bytes]:
        """argv of a plain msync call to the sender's console, from this namespace."""
        exe = str(self.msync) if self.sender_console == "unix" else str(self.msync_in_h1())
        return [exe, "-c", self.console, *args]

    def members(self) -> list[str]:
        res = subprocess.run(self.msync_argv("--members"), capture_output=True, check=False, timeout=90)
        lines = res.stdout.decode("utf-8", "replace").splitlines()
        return sorted(line.split()[0] for line in lines if line and not line.startswith(("Total:", " ")))

    def wait_members(self, expected: list[str], timeout: float = 90) -> None:
        wait_until(lambda: self.members() == sorted(expected), timeout=timeout, message=f"members {expected}")

    def up(self, receivers: tuple[str, ...] = RECEIVERS) -> None:
        """Start the sender and ``receivers``; return once all are listed."""
        for name in ("mk1", *receivers):
            self.start(name)
        if self.sender_console == "unix":
            wait_until(self.socket.exists, timeout=30, message="mk1 console socket")
        wait_until(self._console_answers, timeout=30, message="mk1 console")
        self.wait_members(list(receivers))

    def _console_answers(self) -> bool:
        res = subprocess.run(self.msync_argv("--members"), capture_output=True, check=False, timeout=30)
        return res.returncode == 0
