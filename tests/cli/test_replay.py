"""``agent replay``: every TIME form, dry run, retention refusal, hand-off to
a running agent, and --host for one msync member."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.operate.config import ConfigError
from agent.operate.replay import Since, parse_since, touched_paths
from journal import IS_DIR, Entry, Journal, Op, Record
from tests.cli.conftest import Site, agent

H = 3600 * 10**9
ODD = b"new\nline"
BAD = b"caf\xff"


@pytest.fixture
def seeded(site: Site) -> Site:
    """Three batches, 3 h, 1 h and 10 min old, all shipped (done)."""
    root = site.root
    (root / "old.txt").write_bytes(b"old")
    (root / "moved" / "sub").mkdir(parents=True)
    (root / "moved" / "sub" / "deep.txt").write_bytes(b"deep")
    (root / os.fsdecode(ODD)).write_bytes(b"odd")
    (root / os.fsdecode(BAD)).write_bytes(b"bad")
    now = time.time_ns()
    with site.open() as j:
        j.append([Entry(Op.CHANGE, b"old.txt", time_ns=now - 3 * H)])
        j.append(
            [
                Entry(Op.CHANGE, b"docs/a.txt", time_ns=now - H),
                Entry(Op.DELETE, b"gone.txt", time_ns=now - H),
                Entry(Op.MOVE, b"docs/x", dest=b"moved", time_ns=now - H, flags=IS_DIR),
            ]
        )
        j.append(
            [
                Entry(Op.CHANGE, b"index.html", time_ns=now - H // 6),
                Entry(Op.CHANGE, ODD, time_ns=now - H // 6),
                Entry(Op.CHANGE, BAD, time_ns=now - H // 6),
                Entry(Op.RESCAN, b"", time_ns=now - H // 6),
            ]
        )
        j.mark_done("local", [r.seq for r in j.pending("local")])
    return site


def listed(res: subprocess.CompletedProcess[bytes]) -> dict[str, str]:
    assert res.returncode == 0, res.stderr.decode()
    lines = res.stdout.decode().splitlines()
    assert "(dry run)" in lines[-1]
    return {line[7:]: line[:6].strip() for line in lines[:-1]}


RECENT = {"index.html": "CHANGE", repr(os.fsdecode(ODD)): "CHANGE", repr(os.fsdecode(BAD)): "CHANGE"}
HOUR = {
    "docs/a.txt": "CHANGE",
    "gone.txt": "DELETE",
    "docs/x": "DELETE",
    "moved/": "CHANGE",
    "moved/sub/": "CHANGE",
    "moved/sub/deep.txt": "CHANGE",
}


def test_since_forms_dry_run(seeded: Site) -> None:
    """Ages, ISO times and seq:N select the right entries; a dry run lists
    current states (moves expanded, odd names escaped) and writes nothing."""
    with seeded.open("read") as j:
        last = j.last_seq()
    assert listed(agent("replay", "--since", "30m", "--dry-run", *seeded.flags)) == RECENT
    assert listed(agent("replay", "--since", "2h", "--dry-run", *seeded.flags)) == RECENT | HOUR
    iso = datetime.fromtimestamp(time.time() - 7200).isoformat(timespec="seconds")
    assert listed(agent("replay", "--since", iso, "--dry-run", *seeded.flags)) == RECENT | HOUR
    everything = RECENT | HOUR | {"old.txt": "CHANGE"}
    assert listed(agent("replay", "--since", "seq:1", "--dry-run", *seeded.flags)) == everything
    assert listed(agent("replay", "--since", "seq:5", "--dry-run", *seeded.flags)) == RECENT
    with seeded.open("read") as j:
        assert j.last_seq() == last
        assert j.pending("local") == []


def test_bad_since_is_exit_2(seeded: Site) -> None:
    """An unreadable TIME is an operator error with a hint."""
    res = agent("replay", "--since", "yesterday", "--dry-run", *seeded.flags)
    assert res.returncode == 2 and b"error: --since" in res.stderr and b"hint: " in res.stderr


def test_refuses_beyond_retention(seeded: Site) -> None:
    """After compaction, a TIME older than what the journal holds is refused."""
    with seeded.open() as j:
        assert j.compact(retention_ns=2 * H) == 1
    for since in ("seq:1", "4h"):
        res = agent("replay", "--since", since, *seeded.flags)
        assert res.returncode == 2, res.stdout
        assert b"compacted" in res.stderr and b"agent verify --repair" in res.stderr
    assert listed(agent("replay", "--since", "2h", "--dry-run", *seeded.flags)) == RECENT | HOUR


def test_hands_off_to_running_agent(
    seeded: Site, hold_lock: Callable[[Site], subprocess.Popen[bytes]]
) -> None:
    """With the agent lock held elsewhere, replay appends pending entries in
    client mode and says the running agent ships them."""
    holder = hold_lock(seeded)
    res = agent("replay", "--since", "30m", *seeded.flags)
    assert res.returncode == 0, res.stderr.decode()
    assert f"running agent (pid {holder.pid})".encode() in res.stdout
    with seeded.open("read") as j:
        pending = {(r.entry.op, r.entry.path) for r in j.pending("local")}
    assert pending == {(Op.CHANGE, b"index.html"), (Op.CHANGE, ODD), (Op.CHANGE, BAD)}


def msync_site(site: Site) -> Path:
    cfg = site.root.parent / "agent.toml"
    cfg.write_text(
        f'root = "{site.root}"\njournal = "{site.journal}"\n'
        '[[target]]\nname = "cluster"\nkind = "msync"\nmembers = ["web2", "web3"]\n'
        f'[[target]]\nname = "copy"\nkind = "local"\npath = "{site.mirror}"\n'
    )
    Journal.open(site.journal, root=str(site.root), tracks=["cluster/web2", "cluster/web3", "copy"]).close()
    return cfg


def test_host_limits_to_one_member(
    seeded: Site, hold_lock: Callable[[Site], subprocess.Popen[bytes]]
) -> None:
    """--host queues for TARGET/HOST only; unknown hosts and non-msync targets are refused."""
    cfg = msync_site(seeded)
    res = agent("replay", "--config", cfg, "--since", "30m", "--target", "cluster", "--host", "web9")
    assert res.returncode == 2 and b"'web9' is not a member" in res.stderr
    res = agent("replay", "--config", cfg, "--since", "30m", "--target", "copy", "--host", "web3")
    assert res.returncode == 2 and b"is local, not msync" in res.stderr
    hold_lock(seeded)
    res = agent("replay", "--config", cfg, "--since", "30m", "--host", "web3")
    assert res.returncode == 0, res.stderr.decode()
    with seeded.open("read") as j:
        assert {r.entry.path for r in j.pending("cluster/web3")} == {b"index.html", ODD, BAD}
        assert j.pending("cluster/web2") == [] and j.pending("copy") == []


def test_unlocked_replay_ships_itself(seeded: Site) -> None:
    """With no agent running, replay takes the lock and ships to the mirror."""
    shutil.rmtree(seeded.mirror)
    seeded.mirror.mkdir()
    res = agent("replay", "--since", "2h", *seeded.flags)
    assert res.returncode == 0, res.stderr.decode()
    m = seeded.mirror
    assert (m / "index.html").read_bytes() == b"hello\n"
    assert (m / "docs" / "a.txt").read_bytes() == b"alpha\n"
    assert (m / "moved" / "sub" / "deep.txt").read_bytes() == b"deep"
    assert (m / os.fsdecode(ODD)).read_bytes() == b"odd"
    assert not (m / "old.txt").exists()  # older than --since
    with seeded.open("read") as j:
        assert j.pending("local") == []


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from("smhdw"))
def test_parse_since_ages(n: int, unit: str) -> None:
    """An age is subtracted from now."""
    now = 10**19
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_since(f"{n}{unit}", now) == Since(time_ns=now - n * factor * 10**9)


def test_parse_since_iso_and_seq() -> None:
    """ISO times with a zone are exact; seq:N needs N >= 1."""
    assert parse_since("2026-01-31T14:00:00+00:00", 0) == Since(time_ns=1769868000 * 10**9)
    assert parse_since("2026-01-31T14:00:00Z", 0) == Since(time_ns=1769868000 * 10**9)
    assert parse_since("seq:42", 0) == Since(seq=42)
    for bad in ("seq:0", "seq:x", "10", "2h ago", ""):
        with pytest.raises(ConfigError):
            parse_since(bad, 0)


@given(st.lists(st.tuples(st.sampled_from(list(Op)), st.binary(max_size=8), st.binary(max_size=8))))
def test_touched_paths_covers_both_move_ends(ops: list[tuple[Op, bytes, bytes]]) -> None:
    """Every non-RESCAN path is touched; a MOVE touches its source and its destination."""
    records = [
        Record(i + 1, Entry(op, p, dest=d if op == Op.MOVE else b"")) for i, (op, p, d) in enumerate(ops)
    ]
    paths, moved = touched_paths(records)
    expected = {p for op, p, _ in ops if op != Op.RESCAN} | {d for op, _, d in ops if op == Op.MOVE}
    assert paths == expected - {b""}
    assert moved == {d for op, _, d in ops if op == Op.MOVE}
