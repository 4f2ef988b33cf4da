"""``agent dead`` beside a running agent: list, retry after the cause is
fixed, drop after a fix by hand; unknown paths change nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

from journal import Entry, Journal, Op
from tests.cli.agent_site import Site, msync_site
from tests.cli.conftest import agent
from tests.crash.agent_process import status
from tests.helpers.wait import wait_until


def _dead_paths(site: Site) -> list[tuple[str, str]]:
    res = agent("dead", "--json", "--config", str(site.config))
    assert res.returncode in (0, 1), res.stderr
    return sorted((d["track"], d["path"]) for d in json.loads(res.stdout)["dead_letters"])


def test_dead_list_retry_and_drop_beside_a_running_agent(tmp_path: Path, sites: list[Site]) -> None:
    """A same-size rewrite the members skip and a name msync cannot carry
    become dead letters; after the members' copies are fixed, `retry PATH`
    ships the rewrite; the unshippable name is dropped, and the drop logged."""
    site, dbl = msync_site(tmp_path, sites)
    site.start()
    same = site.src / "same.txt"
    same.write_bytes(b"AAAA")
    wait_until(lambda: all((m / "same.txt").exists() for m in dbl.member_dirs()), timeout=60)
    wait_until(lambda: _pending(site) == 0, timeout=60)
    before = os.stat(same)
    same.write_bytes(b"BBBB")
    os.utime(same, ns=(before.st_atime_ns, before.st_mtime_ns))  # members will skip it
    (site.src / os.fsdecode(b"bad\nname")).write_bytes(b"x")
    wait_until(lambda: len(_dead_paths(site)) == 4, timeout=60, message="no dead letters")

    code, doc, _ = site.json_command("dead")
    assert code == 1
    listed = sorted((d["track"], d["path"]) for d in doc["dead_letters"])
    assert listed == [
        ("cluster/mk2", "'bad\\nname'"),
        ("cluster/mk2", "same.txt"),
        ("cluster/mk3", "'bad\\nname'"),
        ("cluster/mk3", "same.txt"),
    ]
    assert all(d["reason"] and d["age_s"] is not None for d in doc["dead_letters"])
    assert all("\n" not in d["reason"] for d in doc["dead_letters"])

    res = agent("dead", "drop", "nothing-here.txt", "--config", str(site.config))
    assert res.returncode == 2 and b"no dead letter for nothing-here.txt" in res.stderr
    assert len(_dead_paths(site)) == 4

    for member in dbl.member_dirs():
        (member / "same.txt").unlink()  # the stale copies the members kept
    res = agent("dead", "retry", "same.txt", "--config", str(site.config))
    assert res.returncode == 0 and b"requeued" in res.stdout, res.stderr
    wait_until(
        lambda: all((m / "same.txt").exists() for m in dbl.member_dirs()) and _pending(site) == 0,
        timeout=60,
        message="retried dead letters not shipped",
    )
    assert [(m / "same.txt").read_bytes() for m in dbl.member_dirs()] == [b"BBBB", b"BBBB"]
    assert _dead_paths(site) == [("cluster/mk2", "'bad\\nname'"), ("cluster/mk3", "'bad\\nname'")]

    res = agent("dead", "drop", os.fsdecode(b"bad\nname"), "--config", str(site.config))
    assert res.returncode == 0 and b"dropped 2 dead paths" in res.stdout, res.stderr  # of 1 or 2 entries each
    assert b"dead.dropped" in res.stderr  # the operator's act is logged
    assert _dead_paths(site) == []
    res = agent("dead", "--config", str(site.config))
    assert res.returncode == 0 and b"0 dead paths" in res.stdout


def _dead_entries(tmp_path: Path, paths: list[bytes]) -> tuple[Path, Path, list[str]]:
    """A journal of one local target whose entries for ``paths`` are all
    dead: (root, journal, the flags that name them)."""
    root, journal = tmp_path / "src", tmp_path / "journal"
    root.mkdir()
    with Journal.open(journal, root=str(root), tracks=["local"], mode="agent") as j:
        first, _ = j.append([Entry(Op.CHANGE, p) for p in paths])
        j.mark_dead("local", {first + i: "refused" for i in range(len(paths))})
    return (
        root,
        journal,
        ["--root", str(root), "--journal", str(journal), "--target", f"local:{tmp_path / 'm'}"],
    )


def _pending(site: Site) -> int:
    return sum(t["pending"] for t in status(site.journal)["targets"].values())


def test_dead_retry_all_and_usage_errors(tmp_path: Path) -> None:
    """`retry --all` requeues every letter as pending; PATH and --all together,
    or drop without a path, are usage errors."""
    root, journal, flags = _dead_entries(tmp_path, [b"a", b"b"])
    assert agent("dead", "retry", "a", "--all", *flags).returncode == 2
    assert agent("dead", "drop", *flags).returncode == 2
    assert agent("dead", "drop", "--all", "a", *flags).returncode == 2
    res = agent("dead", "retry", "--all", *flags)
    assert res.returncode == 0 and b"requeued 2 dead letters" in res.stdout
    with Journal.open(journal, root=str(root), mode="read") as j:
        assert j.dead_letters() == []
        assert sorted(r.entry.path for r in j.pending("local")) == [b"a", b"b"]


def test_drop_counts_dead_paths_as_the_listing_does(tmp_path: Path) -> None:
    """One path can hold several dead entries (a create and its close-write
    may be journaled apart): `drop` reports the paths the listing showed,
    and the entries behind them."""
    _, _, flags = _dead_entries(tmp_path, [b"a", b"a"])
    listed = agent("dead", *flags)
    assert listed.returncode == 1 and b"(2 entries" in listed.stdout and b"1 dead paths" in listed.stdout
    res = agent("dead", "drop", "a", *flags)
    assert res.returncode == 0 and b"dropped 1 dead paths (2 entries)" in res.stdout, res.stderr
