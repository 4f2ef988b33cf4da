"""``agent wait`` against a real running agent: a barrier over the local, rsync
and msync (double) shippers, its timeout, and dead letters under it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from agent.operate.wait import DeadBelow, Outcome, TrackState, decide, track_state
from journal import Entry, Journal, Op
from tests.cli.agent_site import Site, msync_site
from tests.cli.conftest import AGENT, agent
from tests.crash.agent_process import status
from tests.fixtures.rsyncd import RsyncDaemon, start_rsyncd
from tests.helpers.pipes import line_of
from tests.helpers.wait import wait_until


def test_decide_needs_every_track_empty_and_no_dead_letter() -> None:
    """Reached only when no track has anything left at or below the barrier;
    a dead letter fails at once even while other work is left."""
    assert decide([TrackState("a", 0), TrackState("b", 0)]) is Outcome.REACHED
    assert decide([TrackState("a", 0), TrackState("b", 3)]) is Outcome.WAITING
    assert decide([TrackState("a", 5, (DeadBelow(b"x", "why"),))]) is Outcome.DEAD
    assert decide([]) is Outcome.REACHED


def test_track_state_counts_only_at_or_below_the_barrier(tmp_path: Path) -> None:
    """Pending entries and dead letters above the barrier are not waited for."""
    with Journal.open(tmp_path / "j", root=str(tmp_path), tracks=["t"], mode="agent") as j:
        first, _ = j.append([Entry(Op.CHANGE, p) for p in (b"a", b"b", b"c")])
        j.mark_dead("t", {first: "refused"})
        j.mark_done("t", [first + 1], {})
        later, _ = j.append([Entry(Op.CHANGE, b"d"), Entry(Op.CHANGE, b"e")])
        j.mark_dead("t", {later: "refused too"})
        below = track_state(j, "t", first + 2)
        assert below.left == 1 and below.dead == (DeadBelow(b"a", "refused"),)
        assert track_state(j, "t", later + 1).left == 2
        assert [d.path for d in track_state(j, "t", later + 1).dead] == [b"a", b"d"]


def test_wait_covers_changes_made_just_before_it(tmp_path: Path, sites: list[Site]) -> None:
    """Files written right before `agent wait` are on the mirror when it
    returns 0: the watcher caught up to the barrier first."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    site = Site(tmp_path, f'[[target]]\nname = "copy"\nkind = "local"\npath = "{mirror}"\n')
    sites.append(site)
    site.start()
    (site.src / "release").mkdir()
    names = [f"f{i:03d}" for i in range(300)]
    for name in names:
        (site.src / "release" / name).write_bytes(name.encode() * 10)
    code, doc, _ = site.wait("--timeout", "120")
    on_mirror = {p.name: p.read_bytes() for p in (mirror / "release").iterdir()}  # at once, no polling
    assert code == 0 and doc["result"] == "reached", doc
    assert on_mirror == {name: name.encode() * 10 for name in names}
    assert doc["tracks"]["copy"]["left"] == 0


def test_wait_takes_its_barrier_only_after_the_watcher_caught_up(tmp_path: Path, sites: list[Site]) -> None:
    """Changes the agent has not even read yet (it is stopped) are inside the
    barrier: the wait does not return before they are on the mirror."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    site = Site(tmp_path, f'[[target]]\nname = "copy"\nkind = "local"\npath = "{mirror}"\n')
    sites.append(site)
    site.start()
    assert site.agent.proc is not None
    os.kill(site.agent.proc.pid, signal.SIGSTOP)
    try:
        for i in range(50):
            (site.src / f"unread{i}").write_bytes(b"x" * i)
        proc = subprocess.Popen(
            [str(AGENT), "wait", "--json", "--timeout", "120", "--config", str(site.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # room for a wait that took its barrier from the journal alone to finish early
    finally:
        os.kill(site.agent.proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    on_mirror = {p.name for p in mirror.iterdir()}
    assert proc.returncode == 0, (out, err)
    assert on_mirror >= {f"unread{i}" for i in range(50)}


def test_wait_times_out_while_rsync_mirror_is_down_then_reaches(tmp_path: Path, sites: list[Site]) -> None:
    """A down rsync daemon: exit 1 with the entries left; once it is back, the
    same wait is reached and the file is on the mirror."""
    module = tmp_path / "module"
    module.mkdir()
    daemon: RsyncDaemon = start_rsyncd(tmp_path / "rsyncd", module)
    try:
        site = Site(tmp_path, f'[[target]]\nname = "dr"\nkind = "rsync"\ndest = "{daemon.url}"\n')
        sites.append(site)
        site.start()
        daemon.stop()
        (site.src / "late.txt").write_bytes(b"shipped after the outage\n")
        code, doc, _ = site.wait("--timeout", "3s")
        assert code == 1 and doc["result"] == "timeout", doc
        assert doc["tracks"]["dr"]["left"] >= 1
        assert not (module / "late.txt").exists()
        daemon.start()
        code, doc, _ = site.wait("--timeout", "120")
        assert code == 0 and doc["result"] == "reached", doc
        assert (module / "late.txt").read_bytes() == b"shipped after the outage\n"
    finally:
        daemon.stop()


def test_wait_fails_on_a_dead_letter_under_the_barrier_only(tmp_path: Path, sites: list[Site]) -> None:
    """A dead letter made after the barrier is not waited for; a later barrier
    that covers it fails with exit 1 and names the path and reason."""
    site, dbl = msync_site(tmp_path, sites)
    site.start()
    dbl.set_member("mk3", state="down")
    (site.src / "good.txt").write_bytes(b"good\n")
    proc = subprocess.Popen(
        [str(AGENT), "wait", "--json", "--timeout", "120", "--config", str(site.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        assert line_of(proc.stderr).startswith(b"waiting for barrier seq")
        bad = site.src / os.fsdecode(b"bad\nname")
        bad.write_bytes(b"msync cannot carry this name\n")
        wait_until(
            lambda: status(site.journal)["targets"]["cluster/mk2"]["dead_letters"] == 1,
            timeout=60,
            message="the newline name did not become a dead letter",
        )
        assert proc.poll() is None  # still waiting: good.txt is pending for the down member
        dbl.set_member("mk3", state="up")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    doc = json.loads(out)
    assert proc.returncode == 0 and doc["result"] == "reached", (doc, err)
    assert (dbl.member_dir("mk3") / "good.txt").read_bytes() == b"good\n"

    code, doc, _ = site.wait("--timeout", "60")
    assert code == 1 and doc["result"] == "dead_letters", doc
    dead = doc["tracks"]["cluster/mk2"]["dead_letters"]
    assert [d["path"] for d in dead] == ["'bad\\nname'"] and "newline" in dead[0]["reason"]
    res = agent("wait", "--config", str(site.config))
    assert res.returncode == 1 and b"bad\\nname" in res.stdout, res.stdout


def test_wait_without_a_running_agent_is_an_error(tmp_path: Path, sites: list[Site]) -> None:
    """No agent: nothing would ever be journaled or shipped: exit 2 with a hint."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    site = Site(tmp_path, f'[[target]]\nname = "copy"\nkind = "local"\npath = "{mirror}"\n')
    sites.append(site)
    site.start()
    assert site.agent.terminate() == 0
    res = agent("wait", "--config", str(site.config))
    assert res.returncode == 2
    assert b"error: no agent is running" in res.stderr and b"hint:" in res.stderr
