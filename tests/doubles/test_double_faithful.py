"""Where a real makuosan cluster differed from a naive double: dropped members
stay dropped, costs, symlinks, fifos, cut transfers, output order."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from tests.doubles import double_state as ds
from tests.doubles.fixtures import MsyncDouble, write_file
from tests.helpers.wait import wait_until


def test_timed_out_member_stays_dropped_for_later_invocations(msync_double: MsyncDouble) -> None:
    """After a receive timeout the sender keeps the member dropped: later runs
    skip it silently at every level and ``-t`` says it is not a member."""
    msync_double.set_member("mk3", state="timeout")
    for n in ("a", "b"):
        write_file(msync_double.base / n, n.encode())
    first = msync_double.run("-v", "a")
    assert b"error: receive time out: 10.77.0.3(mk3)" in first.stderr
    later = msync_double.run("-l", "2", "b")
    assert (later.returncode, later.stdout, later.stderr) == (0, b"update mk2:b\n", b"")
    assert msync_double.run("--members").stdout.splitlines() == [
        b"mk2 10.77.0.2 (Ver1.3.6)",
        b"Total: 1 members",
    ]
    r = msync_double.run("-t", "mk3", "b")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"mk3 is not contained in members\n", b"")
    assert not (msync_double.member_dir("mk3") / "b").exists()
    assert msync_double.dropped() == {"mk3"}


def test_dropped_member_is_listed_again_only_after_it_pings(msync_double: MsyncDouble) -> None:
    """A member that answers again rejoins at its next ping (``ping_delay``,
    scaled), not at once; a ping relists it."""
    msync_double.update(time_scale=1.0, ping_delay=3600.0)
    msync_double.drops().drop("mk3")  # as a timeout leaves it, without waiting 60 s
    assert b"mk3" not in msync_double.run("--members").stdout  # answers, but has not pinged
    msync_double.drops().ping("mk3")
    assert b"mk3 10.77.0.3" in msync_double.run("--members").stdout
    msync_double.update(time_scale=0.0)
    msync_double.drops().drop("mk3")
    wait_until(lambda: b"mk3" in msync_double.run("--members").stdout, timeout=30)


def test_still_dead_member_never_pings(msync_double: MsyncDouble) -> None:
    """However long ago the drop was, a member that still does not answer stays dropped."""
    msync_double.set_member("mk3", state="timeout")
    msync_double.drops().drop("mk3")
    assert b"mk3" not in msync_double.run("--members").stdout
    msync_double.set_member("mk3", state="up")
    assert b"mk3" in msync_double.run("--members").stdout


def test_cost_model_over_tcp_and_unix(msync_double: MsyncDouble) -> None:
    """Costs of a real cluster: 1.2 ms per invocation, 1.2 ms per file, 40 ms
    more per console exchange that prints over TCP, none over a unix socket."""
    msync_double.update(listening=["tcp:127.0.0.1:5000", "unix:/run/mk.sock"])
    names = [f"f{i}" for i in range(10)]
    for n in names:
        write_file(msync_double.base / n, b"x", mtime=1_600_000_000)
    msync_double.run("--sync", *names)  # level 0: silent
    msync_double.run("-l", "2", "--sync", *names)  # every file prints a skip line per member
    msync_double.run("-c", "unix:/run/mk.sock", "-l", "2", "--sync", *names)
    msync_double.run("--members")
    quiet, loud, unix, members = msync_double.model_seconds()
    per_file = ds.COMMAND_S + ds.ENTRY_S
    assert quiet == pytest.approx(ds.INVOCATION_S + 10 * per_file, abs=1e-5)
    assert loud == pytest.approx(ds.INVOCATION_S + 10 * (per_file + ds.TCP_PENALTY_S), abs=1e-5)
    assert unix == pytest.approx(quiet, abs=1e-5)
    assert members == pytest.approx(ds.INVOCATION_S + ds.COMMAND_S + ds.TCP_PENALTY_S, abs=1e-5)


def test_recursive_pays_one_exchange(msync_double: MsyncDouble) -> None:
    """``-r`` is one console exchange: the daemon walks and pipelines the files itself."""
    for i in range(20):
        write_file(msync_double.base / f"d/f{i}", b"x")
    msync_double.run("-l", "2", "-r", "d")
    (cost,) = msync_double.model_seconds()
    expected = ds.INVOCATION_S + ds.COMMAND_S + ds.TCP_PENALTY_S + 21 * ds.ENTRY_S
    assert cost == pytest.approx(expected, abs=1e-5)


def test_scale_makes_the_stall_real(msync_double: MsyncDouble) -> None:
    """The dead-member stall is 500 ms x 120 times the scale; it is logged when it begins."""
    msync_double.update(time_scale=0.005)  # 0.3 s
    msync_double.set_member("mk2", state="timeout")
    write_file(msync_double.base / "f", b"f")
    start = time.monotonic()
    r = msync_double.run("f")
    assert time.monotonic() - start >= ds.STALL_S * 0.005
    assert msync_double.model_seconds()[0] >= ds.STALL_S
    assert [(m, p) for _, m, p in msync_double.stalls()] == [(b"mk2", b"f")]
    assert b"receive time out" in r.stderr


def test_lines_are_written_as_they_are_said(msync_double: MsyncDouble) -> None:
    """What the daemon says before a stall is readable while msync still waits."""
    msync_double.update(timeout_delay=600.0, member_order="listed")
    msync_double.set_member("mk3", state="timeout", timeout_after=1)
    for n in ("a", "b"):
        write_file(msync_double.base / n, n.encode())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **msync_double.env()}
    proc = subprocess.Popen([str(msync_double.msync), "-v", "a", "b"], stdout=subprocess.PIPE, env=env)
    try:
        got = [proc.stdout.readline() for _ in range(3)]
        assert got == [b"update mk2:a\n", b"update mk3:a\n", b"update mk2:b\n"]
        wait_until(lambda: msync_double.stalls(), timeout=30)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_symlink_retarget_in_the_same_second_is_delivered(msync_double: MsyncDouble) -> None:
    """Members compare a link's target, not its mtime."""
    link = msync_double.base / "l"
    os.symlink("one", link)
    os.utime(link, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    msync_double.run("l")
    os.unlink(link)
    os.symlink("two", link)
    os.utime(link, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    r = msync_double.run("-v", "l")
    assert sorted(r.stdout.splitlines()) == [b"update mk2:l", b"update mk3:l"]
    assert all(os.readlink(m / "l") == "two" for m in msync_double.member_dirs())


def test_touched_symlink_is_skipped_and_members_keep_send_time(msync_double: MsyncDouble) -> None:
    """A link only touched is skipped; members give a link the time of the send."""
    link = msync_double.base / "l"
    os.symlink("t", link)
    os.utime(link, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    before = int(time.time())
    msync_double.run("l")
    member_mtime = (msync_double.member_dir("mk2") / "l").lstat().st_mtime
    assert member_mtime >= before
    os.utime(link, (1_500_000_000, 1_500_000_000), follow_symlinks=False)
    r = msync_double.run("-l", "2", "l")
    assert sorted(r.stdout.splitlines()) == [b"skip   mk2:l", b"skip   mk3:l"]


def test_fifo_is_updated_on_every_send(msync_double: MsyncDouble) -> None:
    """Members do not keep a fifo's mtime, so every send answers update."""
    os.mkfifo(msync_double.base / "p")
    os.utime(msync_double.base / "p", (1_600_000_000, 1_600_000_000))
    for _ in range(2):
        r = msync_double.run("-l", "2", "p")
        assert sorted(r.stdout.splitlines()) == [b"update mk2:p", b"update mk3:p"]


def test_member_cut_mid_transfer_keeps_its_temp_file(msync_double: MsyncDouble) -> None:
    """A member that agreed and was then cut keeps ``NAME.makuoNNNNNNNNN``, never NAME."""
    msync_double.set_member("mk3", state="timeout", update_then_timeout=True)
    write_file(msync_double.base / "d/big.bin", b"0123456789")
    msync_double.run("-v", "d/big.bin")
    names = os.listdir(msync_double.member_dir("mk3") / "d")
    assert len(names) == 1 and re.fullmatch(r"big\.bin\.makuo\d{9}", names[0]), names
    assert (msync_double.member_dir("mk2") / "d/big.bin").read_bytes() == b"0123456789"


def test_member_order_changes_between_invocations(msync_double: MsyncDouble) -> None:
    """Members answer in acknowledgement order, which is not always sorted."""
    write_file(msync_double.base / "f", b"f", mtime=1_600_000_000)
    msync_double.run("f")
    orders = {tuple(msync_double.run("-l", "2", "f").stdout.splitlines()) for _ in range(40)}
    assert orders == {(b"skip   mk2:f", b"skip   mk3:f"), (b"skip   mk3:f", b"skip   mk2:f")}


def test_recursive_lines_follow_directory_read_order(msync_double: MsyncDouble) -> None:
    """``-r`` reports names in the order the directory is read, not sorted."""
    for n in ("a", "b", "c", "d", "e"):
        write_file(msync_double.base / "t" / n, b"x")
    order = [b"t/" + os.fsencode(n) for n in os.listdir(msync_double.base / "t")]
    r = msync_double.run("-l", "2", "-t", "mk2", "-r", "t")
    assert [ln.split(b":", 1)[1] for ln in r.stdout.splitlines()] == [*order, b"t"]


def _concurrently(dbl: MsyncDouble, runs: list[list[str]]) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **dbl.env()}
    procs = [subprocess.Popen([str(dbl.msync), *args], env=env) for args in runs]
    for p in procs:
        assert p.wait(timeout=120) == 0


def test_concurrent_invocations_are_served_at_once(msync_double: MsyncDouble) -> None:
    """makuosan serves every console connection from one loop, so the files
    of msync calls running at once are in flight together (docs/msync.md
    §8): their spans overlap instead of queueing one behind the other."""
    msync_double.update(time_scale=20.0)  # 25 files: about 0.6 s per call
    groups = [[f"g{g}/f{i}" for i in range(25)] for g in range(3)]
    for name in (n for group in groups for n in group):
        write_file(msync_double.base / name, b"x", mtime=1_600_000_000)
    _concurrently(msync_double, [["--sync", *group] for group in groups])
    spans = msync_double.spans()
    assert len(spans) == 3
    assert max(start for start, _, _ in spans) < min(end for _, end, _ in spans)


def test_files_in_flight_are_capped_for_the_whole_daemon(msync_double: MsyncDouble) -> None:
    """At most ``-f`` files (``parallel``, default 5) are in flight in the
    daemon, however many msync calls feed it: with ``parallel`` 1, three
    calls at once take at least as long as their files one after another."""
    msync_double.update(time_scale=20.0, parallel=1)
    groups = [[f"h{g}/f{i}" for i in range(10)] for g in range(3)]
    for name in (n for group in groups for n in group):
        write_file(msync_double.base / name, b"x", mtime=1_600_000_000)
    start = time.monotonic()
    _concurrently(msync_double, [["--sync", *group] for group in groups])
    assert time.monotonic() - start >= 30 * ds.ENTRY_S * 20.0


def test_a_member_writes_one_entry_at_a_time_for_concurrent_calls(msync_double: MsyncDouble) -> None:
    """Each member daemon applies one entry at a time, whichever console
    connection it came from: concurrent calls that create the same missing
    parent directories on a member never see each other half done."""
    names = [f"new/d{d}/e{e}/c{c}" for d in range(3) for e in range(3) for c in range(4)]
    for name in names:
        write_file(msync_double.base / name, b"x", mtime=1_600_000_000)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **msync_double.env()}
    for _ in range(6):
        procs = [
            subprocess.Popen(
                [str(msync_double.msync), "-l", "2", "--sync", *names[k::4]], env=env, stderr=subprocess.PIPE
            )
            for k in range(4)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert errors == [b""] * 4
        for m in msync_double.member_dirs():
            shutil.rmtree(m / "new")
