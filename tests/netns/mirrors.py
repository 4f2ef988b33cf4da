"""A mirror host: a real ``rsync --daemon`` inside a cluster host's namespace.

The daemon listens on the host's own address, port 873, module ``mirror``,
writing into a directory of the shared filesystem so a test can compare the
mirror with the source directly. Transfer logging is on: every item the
daemon received (``recv``) or deleted (``del.``) is a line in its log, which is
how a test proves that a healthy mirror was *not* shipped to again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.rsyncd import RsyncDaemon, start_rsyncd
from tests.netns.cluster import Cluster

__all__ = ["Mirror", "start_mirror"]

RSYNC_PORT = 873
_OPTIONS = {
    "transfer logging": "yes",
    "log format": "%o %i %n",
    "reverse lookup": "no",
}


@dataclass
class Mirror:
    host: str
    path: Path  # the module's directory, seen from the test
    daemon: RsyncDaemon

    @property
    def url(self) -> str:
        return self.daemon.url

    @property
    def log(self) -> Path:
        return self.daemon.workdir / "rsyncd.log"

    def _lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def logged_items(self) -> list[str]:
        """``"recv ITEMIZE NAME"`` / ``"del. ITEMIZE NAME"`` per item the daemon
        received or deleted so far, in log order."""
        out = []
        for line in self._lines():
            _, sep, rest = line.partition("] ")
            if sep and rest.startswith(("recv ", "del. ")):
                out.append(rest)
        return out

    def items(self) -> int:
        """How many items the daemon has received or deleted so far."""
        return len(self.logged_items())

    def sessions(self) -> int:
        """Push sessions the daemon has accepted so far."""
        return sum(1 for line in self._lines() if "] rsync to " in line)

    def wipe(self) -> None:
        """Lose the mirror's data behind the agent's back; the module dir stays."""
        for child in self.path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def stop(self) -> None:
        self.daemon.stop()


def start_mirror(cluster: Cluster, host: str, workdir: Path) -> Mirror:
    """Start a mirror daemon in ``host``; its data goes to ``workdir/data``."""
    data = workdir / "data"
    data.mkdir(parents=True)
    data.chmod(0o755)
    daemon = start_rsyncd(
        workdir / "rsyncd",
        data,
        address=cluster.addr(host),
        port=RSYNC_PORT,
        netns=cluster.hosts[host].netns,
        options=_OPTIONS,
    )
    return Mirror(host, data, daemon)
