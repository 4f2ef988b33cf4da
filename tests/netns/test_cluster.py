"""The multi-host fixture itself: isolation, reachability, link cuts, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.wait import wait_until
from tests.netns.cluster import PREFIX, Cluster, cleanup_stale, our_namespaces
from tests.netns.mirrors import Mirror, start_mirror
from tests.netns.trees import tree_diff

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]


def _root_view() -> tuple[str, str]:
    """Links and addresses of the machine's root namespace."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    strip = lambda text: "\n".join(sorted(line.split(":")[1] for line in text.splitlines()))  # noqa: E731
    return strip(links), addrs


def test_hosts_reach_each_other_and_nothing_touches_the_root_namespace(
    netns_ready: None, tmp_path: Path
) -> None:
    """Every host reaches every other; the root namespace gains no link and no address."""
    before = _root_view()
    with Cluster(tmp_path) as c:
        for a in c.hosts:
            for b in c.hosts:
                assert c.reachable(a, b), f"{a} cannot reach {b}"
        during = _root_view()
    assert during[0] == before[0], "a link appeared in the root namespace"
    assert "10.213.77." not in during[1], "a cluster address leaked into the root namespace"


def test_mirror_daemon_receives_pushes_and_logs_each_item(cluster: Cluster, tmp_path: Path) -> None:
    """A push from h1 lands byte for byte in h2's mirror and is counted in its transfer log."""
    mirror = start_mirror(cluster, "h2", tmp_path / "m2")
    try:
        src = tmp_path / "src"
        (src / "d").mkdir(parents=True)
        (src / "d" / "f").write_bytes(b"\x00payload\xff")
        os.symlink("d/f", src / "ln")
        res = cluster.run("h1", ["rsync", "-a", f"{src}/", mirror.url])
        assert res.returncode == 0, res.stderr
        assert tree_diff(src, mirror.path) == []
        names = {item.split(" ", 2)[2] for item in mirror.logged_items()}
        assert {"d/", "d/f", "ln"} <= names and mirror.sessions() == 1, mirror.logged_items()
        items = mirror.items()
        res = cluster.run("h1", ["rsync", "-a", f"{src}/", mirror.url])
        assert res.returncode == 0, res.stderr
        assert mirror.sessions() == 2
        assert mirror.items() == items, "an unchanged tree was sent again"
    finally:
        mirror.stop()


def test_cut_isolates_one_host_and_restore_reconnects(cluster: Cluster, tmp_path: Path) -> None:
    """A cut host is unreachable for rsync while the others still talk; restore heals it."""
    m2, m3 = (start_mirror(cluster, h, tmp_path / h) for h in ("h2", "h3"))
    try:
        cluster.cut("h3")
        assert not cluster.link_up("h3")
        assert cluster.reachable("h1", "h2")
        assert not cluster.reachable("h1", "h3", timeout=2.0)
        res = cluster.run("h1", ["rsync", "--contimeout=3", m3.url])
        assert res.returncode != 0, "rsync reached a cut host"
        cluster.restore("h3")
        wait_until(lambda: cluster.reachable("h1", "h3"), 20, 0.2, "h3 did not come back")
        assert cluster.run("h1", ["rsync", "--contimeout=5", m3.url]).returncode == 0
        assert cluster.run("h1", ["rsync", "--contimeout=5", m2.url]).returncode == 0
    finally:
        m2.stop()
        m3.stop()


def test_teardown_leaves_no_namespace_and_no_process(netns_ready: None, tmp_path: Path) -> None:
    """After down(): none of the cluster's namespaces, and its daemons and strays are dead."""
    c = Cluster(tmp_path).up()
    names = c.namespaces()
    mirror: Mirror = start_mirror(c, "h2", tmp_path / "m2")
    stray = c.spawn("h3", ["sleep", "300"])
    daemon_pid = mirror.daemon.pid
    c.down()
    mirror.stop()
    assert not set(names) & set(our_namespaces())
    assert stray.poll() is not None
    assert daemon_pid is not None and not _alive(daemon_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(") ")[1][0] != "Z"


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tests.netns.cluster import Cluster
    c = Cluster(Path(sys.argv[1])).up()
    c.spawn("h2", ["sleep", "300"])
    print(" ".join(c.namespaces()), flush=True)
    time.sleep(300)
    """
)


def _child_cluster(tmp_path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    names = proc.stdout.readline().split()
    assert names and set(names) <= set(our_namespaces()), "child did not build its cluster"
    return proc, names


def test_sigterm_of_the_creating_process_tears_the_cluster_down(netns_ready: None, tmp_path: Path) -> None:
    """A run stopped by SIGTERM removes its namespaces and processes on the way out."""
    proc, names = _child_cluster(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    assert not set(names) & set(our_namespaces())


def test_stale_cleanup_removes_only_namespaces_of_dead_runs(netns_ready: None, tmp_path: Path) -> None:
    """After a SIGKILLed run, cleanup_stale removes its leftovers and spares live runs."""
    proc, names = _child_cluster(tmp_path)
    live = f"{PREFIX}-{os.getpid()}-999-h1"
    subprocess.run(["ip", "netns", "add", live], check=True)
    try:
        proc.kill()
        proc.wait()
        assert set(names) <= set(our_namespaces()), "SIGKILL should leave the namespaces behind"
        removed = cleanup_stale()
        assert set(names) <= set(removed)
        assert not set(names) & set(our_namespaces())
        assert live in our_namespaces(), "a live run's namespace was removed"
    finally:
        subprocess.run(["ip", "netns", "del", live], check=False)
