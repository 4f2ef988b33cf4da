"""The watcher at its edges: root gone, watch limit, queue overflow, bursts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.tree.excludes import Excludes
from agent.watch.watcher import RootError, Watcher
from journal import Journal, Op
from tests.helpers.wait import wait_until
from tests.integration.conftest import WatcherRig

REPO = Path(__file__).resolve().parents[2]


def _queued_events_limit() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_root_gone_raises(watcher_rig: WatcherRig, how: str) -> None:
    """Removing or moving the root stops the watcher with RootError (nothing else)."""
    (watcher_rig.root / "f").write_bytes(b"x")
    watcher_rig.barrier()
    if how == "deleted":
        shutil.rmtree(watcher_rig.root)
    else:
        os.rename(watcher_rig.root, watcher_rig.outside / "moved-root")
    wait_until(lambda: watcher_rig.error, message="watcher did not report the root going away")
    assert isinstance(watcher_rig.error[0], RootError)
    assert how in str(watcher_rig.error[0])
    assert watcher_rig.error[0].hint
    assert not any(k[0] == Op.DELETE and k[1] == b"" for k in watcher_rig.seen())


def test_bad_roots_are_refused(tmp_path: Path) -> None:
    """A missing root or a root that is a file is a RootError at start()."""
    (tmp_path / "file").write_bytes(b"x")
    with Journal.open(tmp_path / "j") as journal:
        for root, words in ((tmp_path / "missing", "does not exist"), (tmp_path / "file", "not a directory")):
            with pytest.raises(RootError, match=words):
                Watcher(root, journal, Excludes([])).start()


_LIMIT_CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    kind, value = sys.argv[3], sys.argv[4]
    Path(f"/proc/sys/user/max_inotify_{kind}").write_text(value)
    from agent.tree.excludes import Excludes
    from agent.watch.watcher import Watcher, WatchLimitError
    from journal import Journal
    root, jdir = Path(sys.argv[1]), Path(sys.argv[2])
    with Journal.open(jdir) as journal:
        try:
            Watcher(root, journal, Excludes([])).start()
            print(json.dumps({"error": None}))
        except WatchLimitError as exc:
            print(json.dumps({"error": str(exc), "sysctl": exc.sysctl, "current": exc.current,
                              "needed": exc.needed}))
    """
)


def _limited_start(tmp_path: Path, kind: str, value: int) -> dict[str, object]:
    probe = subprocess.run(["unshare", "-Ur", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"unshare -Ur not permitted here: {probe.stderr.decode(errors='replace').strip()}")
    root = tmp_path / "root"
    for i in range(50):
        (root / f"d{i // 10}" / f"e{i}").mkdir(parents=True)  # 5 + 50 dirs under root
    argv = [sys.executable, "-c", _LIMIT_CHILD, str(root), str(tmp_path / "j"), kind, str(value)]
    proc = subprocess.run(
        ["unshare", "-Ur", *argv],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def test_watch_limit_is_a_clear_error(tmp_path: Path) -> None:
    """With the watch limit at 20 in a user namespace, a tree of 56 directories
    fails start() with WatchLimitError naming the sysctl, its value and the need."""
    result = _limited_start(tmp_path, "watches", 20)
    assert result["error"] is not None, "the watcher started with too few watches"
    assert result["sysctl"] == "user.max_inotify_watches"
    assert result["current"] == 20
    assert result["needed"] == 56
    message = str(result["error"])
    assert "max_inotify_watches = 20" in message and "needs 56 watches" in message
    assert "sysctl -w user.max_inotify_watches" in message


def test_instance_limit_is_a_clear_error(tmp_path: Path) -> None:
    """No inotify instance left: WatchLimitError naming max_inotify_instances."""
    result = _limited_start(tmp_path, "instances", 0)
    assert result["sysctl"] == "user.max_inotify_instances"
    assert result["current"] == 0
    assert "max_inotify_instances = 0" in str(result["error"])


def test_overflow_journals_rescan_and_holds_checkpoint(watcher_factory: Callable[..., WatcherRig]) -> None:
    """More events than the kernel queue holds: RESCAN is journaled, on_rescan is
    called, the checkpoint is held until the scanner releases it, and watching goes on."""
    limit = _queued_events_limit()
    if limit > 200_000:
        pytest.skip(f"fs.inotify.max_queued_events={limit} is too large to overflow quickly")
    rescans = threading.Event()
    rig = watcher_factory(start=False, on_rescan=rescans.set, prepare=lambda r: (r / "burst").mkdir())
    rig.watcher.start()  # watched, but nobody reads yet
    for i in range(limit // 2 + 100):  # CREATE + MODIFY + CLOSE_WRITE each
        (rig.root / "burst" / f"f{i}").write_bytes(b"x")
    rig.run()
    rig.wait_for([(Op.RESCAN, b"", b"")])
    assert rescans.wait(10)
    assert rig.watcher.overflows == 1
    held = rig.journal.checkpoint()
    rig.barrier()
    assert rig.journal.checkpoint() == held
    assert rig.watcher.pending_overflow_holds() == 1
    assert rig.watcher.pending_overflow_holds() == 0
    rig.watcher.release_checkpoint()
    rig.barrier()
    wait_until(lambda: (c := rig.journal.checkpoint()) is not None and c != held)
    os.mkdir(rig.root / "after")
    (rig.root / "after" / "f").write_bytes(b"y")
    rig.wait_for([(Op.CHANGE, b"after/f", b"")])


def test_burst_of_new_directories_loses_nothing(watcher_rig: WatcherRig) -> None:
    """10,000 files in 100 fresh directories, created as fast as possible: every
    path is journaled, or (only if the queue overflowed) a RESCAN is."""
    created: set[bytes] = set()
    for d in range(100):
        os.mkdir(watcher_rig.root / f"d{d:03}")
        created.add(b"d%03d" % d)
        for f in range(100):
            with open(watcher_rig.root / f"d{d:03}" / f"f{f:03}", "wb") as fh:
                fh.write(b"x")
            created.add(b"d%03d/f%03d" % (d, f))
    watcher_rig.barrier()
    journaled = {e.path for e in watcher_rig.entries()}
    if Op.RESCAN in {e.op for e in watcher_rig.entries()}:
        print(f"burst overflowed: {len(created - journaled)} paths left to the rescan")
        assert watcher_rig.watcher.overflows >= 1
    else:
        assert created - journaled == set()
        assert journaled - created == {b".barrier1"}


_MOUNT_CHILD = textwrap.dedent(
    """
    import json, os, subprocess, sys, threading
    from pathlib import Path
    from agent.tree.excludes import Excludes
    from agent.watch.watcher import RootError, Watcher
    from journal import Journal
    base = Path(sys.argv[1])
    root, other = base / "root", base / "root" / "sub" / "mnt"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root)], check=True)
    other.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(other)], check=True)
    (other / "inner").mkdir()
    result = {}
    with Journal.open(base / "j") as journal:
        watcher = Watcher(root, journal, Excludes([]))
        watcher.start()
        result["watches"] = sorted(p.decode() for _, p in watcher.table.items())
        errors = []
        stop = threading.Event()
        def body():
            try:
                watcher.run(stop)
            except BaseException as exc:
                errors.append(exc)
        thread = threading.Thread(target=body)
        thread.start()
        subprocess.run(["umount", "-l", str(root)], check=True)
        thread.join(30)
        stop.set()
        thread.join(30)
        result["error"] = type(errors[0]).__name__ if errors else None
        result["message"] = str(errors[0]) if errors else ""
    print(json.dumps(result))
    """
)


def test_root_unmounted_and_mounts_below_not_crossed(tmp_path: Path) -> None:
    """A filesystem mounted below the root is not watched; unmounting the root
    itself stops the watcher with RootError. Runs in its own user+mount namespace."""
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"unshare -Urm not permitted here: {probe.stderr.decode(errors='replace').strip()}")
    proc = subprocess.run(
        ["unshare", "-Urm", sys.executable, "-c", _MOUNT_CHILD, str(tmp_path)],
        capture_output=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert result["watches"] == ["", "sub"]  # sub/mnt is another filesystem
    assert result["error"] == "RootError", result
    assert "unmounted" in result["message"] or "unwatched" in result["message"]
