"""Hosts as network namespaces on one virtual switch, for multi-host tests.

A cluster is a ``hub`` namespace holding a Linux bridge, plus N host
namespaces, each joined to the bridge by a veth pair (``eth0`` in the host,
``pN`` in the hub). Addresses (``10.213.77.0/24`` by default) exist only inside
these namespaces, so nothing is added to the machine's root namespace and no
sysctl outside them is touched. Cutting a host's link sets its hub port down,
like pulling the cable at the switch.

Names are ``msnt-<creator pid>-<n>-<host>``, so parallel runs never collide and
a later run can remove what a killed run left behind (:func:`cleanup_stale`).
Teardown always runs: from ``with``/``down()``, at interpreter exit, and on
SIGTERM/SIGHUP. It kills only processes this cluster started or that live in
its own namespaces, then deletes the namespaces.

Usable without pytest::

    with Cluster(Path("/tmp/work")) as c:
        assert c.reachable("h1", "h2")

``python -m tests.netns.cluster --check`` builds a cluster, pings every host
and tears it down; ``--cleanup-stale`` removes leftovers of dead runs.
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PREFIX",
    "Cluster",
    "Host",
    "cleanup_stale",
    "netns_unavailable_reason",
    "our_namespaces",
]

PREFIX = "msnt"
SUBNET = "10.213.77"
_NAME_RE = re.compile(rf"^{PREFIX}-(\d+)-(\d+)-([a-z0-9]+)$")
StrPath = str | os.PathLike[str]
Completed = subprocess.CompletedProcess[str]
_counter = itertools.count(1)
_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=float(sys.argv[2])).close()
except ConnectionRefusedError:
    pass
except OSError:
    sys.exit(1)
"""
_live: set[Cluster] = set()
_live_lock = threading.Lock()


@dataclass(frozen=True)
class Host:
    name: str  # logical name: h1, h2, ...
    netns: str  # namespace name, unique per run
    addr: str  # IPv4 address of eth0 inside the namespace
    port: str  # the veth end on the hub's bridge


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with ip's own message when ``check`` and it fails."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def our_namespaces() -> list[str]:
    """Every namespace carrying this fixture's prefix, whichever run made it."""
    out = _ip("netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if _NAME_RE.match(n)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_netns_pids(netns: str) -> None:
    """SIGKILL every process inside ``netns`` (ours by construction) until none is left."""
    for _ in range(50):
        pids = [int(p) for p in _ip("netns", "pids", netns, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _delete_netns(netns: str) -> None:
    _kill_netns_pids(netns)
    _ip("netns", "del", netns, check=False)


def cleanup_stale() -> list[str]:
    """Delete namespaces of this fixture whose creator process is dead.

    Only names with our prefix are considered, and only when the pid in the
    name no longer exists: a live parallel run is never disturbed.
    """
    removed = []
    for name in our_namespaces():
        match = _NAME_RE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _delete_netns(name)
            removed.append(name)
    return removed


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be built here, or None when they can (probed)."""
    if os.geteuid() != 0:
        return "network namespaces need root (euid is not 0)"
    probe = f"{PREFIX}-{os.getpid()}-0-probe"
    try:
        proc = _ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "the 'ip' command (iproute2) is not installed"
    if proc.returncode != 0:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    try:
        bridge = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"cannot create a bridge in a namespace: {bridge.stderr.strip()}"
    finally:
        _delete_netns(probe)
    return None


class Cluster:
    """A hub with a bridge and ``n_hosts`` hosts ``h1..hN`` at SUBNET.1..N."""

    def __init__(self, workdir: Path, n_hosts: int = 3, subnet: str = SUBNET) -> None:
        self.workdir = Path(workdir)
        self.tag = f"{PREFIX}-{os.getpid()}-{next(_counter)}"
        self.hub = f"{self.tag}-hub"
        self.hosts = {
            f"h{i}": Host(f"h{i}", f"{self.tag}-h{i}", f"{subnet}.{i}", f"p{i}")
            for i in range(1, n_hosts + 1)
        }
        self._procs: list[subprocess.Popen[bytes]] = []
        self._created: list[str] = []

    # -- lifecycle -------------------------------------------------------
    def up(self) -> Cluster:
        """Build hub, bridge and hosts; on any failure tear down what exists."""
        _register(self)
        try:
            self._add_netns(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for host in self.hosts.values():
                self._add_host(host)
        except BaseException:
            self.down()
            raise
        return self

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _add_host(self, host: Host) -> None:
        self._add_netns(host.netns)
        peer = ["peer", "name", "eth0", "netns", host.netns]
        _ip("-n", self.hub, "link", "add", host.port, "type", "veth", *peer)
        _ip("-n", self.hub, "link", "set", host.port, "master", "br0")
        _ip("-n", self.hub, "link", "set", host.port, "up")
        _ip("-n", host.netns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")

    def down(self) -> None:
        """Kill our processes, delete our namespaces. Idempotent, never raises."""
        for proc in self._procs:
            try:
                stop_process(proc)
            except (OSError, subprocess.SubprocessError):
                pass  # the namespace sweep below kills what is left
        self._procs.clear()
        for name in reversed(self._created):
            _delete_netns(name)
        self._created.clear()
        _unregister(self)

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- hosts -----------------------------------------------------------
    def addr(self, host: str) -> str:
        return self.hosts[host].addr

    def argv(self, host: str, argv: Sequence[StrPath]) -> list[str]:
        """``argv`` wrapped to run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.hosts[host].netns, *map(os.fspath, argv)]

    def run(self, host: str, argv: Sequence[StrPath], timeout: float = 120.0, **kw: Any) -> Completed:
        """Run to completion inside ``host``; output captured as text."""
        argv_ = self.argv(host, argv)
        return subprocess.run(argv_, capture_output=True, text=True, timeout=timeout, check=False, **kw)

    def spawn(self, host: str, argv: Sequence[StrPath], **kw: Any) -> subprocess.Popen[bytes]:
        """Start a long-running process inside ``host`` in its own process group.

        ``ip netns exec`` execs the command, so the pid is the command's own.
        The process is stopped at teardown unless stopped earlier.
        """
        proc = subprocess.Popen(self.argv(host, argv), start_new_session=True, **kw)
        self._procs.append(proc)
        return proc

    def reachable(self, src: str, dst: str, timeout: float = 3.0) -> bool:
        """Whether ``src`` reaches ``dst`` over TCP (a refused connection counts:
        the peer answered). Needs no listener and no ping binary."""
        res = self.run(src, [sys.executable, "-c", _PROBE, self.addr(dst), str(timeout)])
        return res.returncode == 0

    def cut(self, host: str) -> None:
        """Pull ``host``'s cable: its port on the switch goes down."""
        _ip("-n", self.hub, "link", "set", self.hosts[host].port, "down")

    def restore(self, host: str) -> None:
        _ip("-n", self.hub, "link", "set", self.hosts[host].port, "up")

    def link_up(self, host: str) -> bool:
        out = _ip("-n", self.hub, "-o", "link", "show", self.hosts[host].port).stdout
        return ",UP" in out or "<UP" in out

    def namespaces(self) -> list[str]:
        return [self.hub, *(h.netns for h in self.hosts.values())]


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Stop a process group we started: ``sig``, then SIGKILL after ``grace`` s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
        except ProcessLookupError:
            pass
    proc.wait()


# -- teardown on exit and on termination signals ---------------------------
_prev_handlers: dict[int, object] = {}


def _down_all() -> None:
    with _live_lock:
        clusters = list(_live)
    for cluster in clusters:
        cluster.down()


def _on_signal(signum: int, frame: object) -> None:
    _down_all()
    signal.signal(signum, _prev_handlers.get(signum, signal.SIG_DFL))  # type: ignore[arg-type]
    os.kill(os.getpid(), signum)


def _register(cluster: Cluster) -> None:
    with _live_lock:
        first = not _prev_handlers
        _live.add(cluster)
    if first and threading.current_thread() is threading.main_thread():
        atexit.register(_down_all)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            _prev_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, _on_signal)


def _unregister(cluster: Cluster) -> None:
    with _live_lock:
        _live.discard(cluster)


def _check(workdir: Path) -> int:
    with Cluster(workdir) as c:
        for src in c.hosts:
            for dst in c.hosts:
                ok = c.reachable(src, dst)
                print(f"{src} -> {dst} ({c.addr(dst)}): {'ok' if ok else 'FAILED'}")
                if not ok:
                    return 1
        print(f"namespaces: {', '.join(c.namespaces())}")
    print(f"torn down; left over: {our_namespaces() or 'none'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="build, ping all hosts, tear down")
    parser.add_argument("--cleanup-stale", action="store_true", help="remove leftovers of dead runs")
    args = parser.parse_args(argv)
    if args.cleanup_stale:
        print("removed:", cleanup_stale() or "nothing")
    if args.check:
        reason = netns_unavailable_reason()
        if reason:
            print(f"cannot run: {reason}", file=sys.stderr)
            return 2
        return _check(Path("/tmp"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
