"""The msync mirror audit against the msync test double: ``--members`` and
``msync -t MEMBER --check -r`` per expected member."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from agent.operate.audit import Finding, audit_msync, parse_msync_check
from agent.operate.config import MsyncTarget
from tests.cli.conftest import AGENT, agent
from tests.doubles.fixtures import make_double
from tests.helpers.wait import wait_until


def test_msync_audit_per_member(tmp_path: Path) -> None:
    """NG content and paths missing on a member are findings on that member's
    track; an expected member absent from --members is an error."""
    root = tmp_path / "www"
    (root / "d").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"aaaa")
    (root / "d" / "b.txt").write_bytes(b"bbbb")
    dbl = make_double(tmp_path / "dbl", base=root, members=("mk2", "mk3"))
    for name in ("mk2", "mk3"):
        shutil.copytree(root, dbl.member_dir(name), dirs_exist_ok=True)
    target = MsyncTarget(name="cluster", members=("mk2", "mk3"), msync=str(dbl.msync), timeout_s=60)
    rootb = os.fsencode(root)
    assert audit_msync(rootb, target, env=dbl.env()) == ([], None)

    (dbl.member_dir("mk3") / "a.txt").write_bytes(b"AAAA")
    (dbl.member_dir("mk2") / "d" / "b.txt").unlink()
    shutil.copystat(root / "d", dbl.member_dir("mk2") / "d")  # only the file is missing
    findings, error = audit_msync(rootb, target, env=dbl.env())
    assert error is None
    assert sorted(findings, key=lambda f: f.path) == [
        Finding(b"a.txt", "content differs (msync --check NG)", track="cluster/mk3"),
        Finding(b"d/b.txt", "missing on the member", track="cluster/mk2"),
    ]

    dbl.set_member("mk3", state="down")
    findings, error = audit_msync(rootb, target, env=dbl.env())
    assert error == "members absent from msync --members: mk3"
    assert findings == [Finding(b"d/b.txt", "missing on the member", track="cluster/mk2")]


def test_parse_msync_check_filters_by_host() -> None:
    """Only lines naming the member count; other hosts' lines are ignored."""
    out = b"mk2: NG x/y z\nmk3: NG other\nmk2: OK fine\n"
    err = b"error: No such file or directory mk2:gone\nerror: No such file or directory local\n"
    assert parse_msync_check(out, err, "mk2") == [
        (b"x/y z", "content differs (msync --check NG)"),
        (b"gone", "missing on the member"),
    ]


def test_msync_audit_sees_metadata_and_extras(tmp_path: Path) -> None:
    """A member's mtime (seconds) or mode that differs, and an entry only a
    member holds, are findings too (msync's dry run); a fifo in the source,
    which is not replicated, is none."""
    root = tmp_path / "www"
    (root / "d").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"aaaa")
    (root / "d" / "b.txt").write_bytes(b"bbbb")
    os.mkfifo(root / "d" / "pipe")
    dbl = make_double(tmp_path / "dbl", base=root, members=("mk2", "mk3"), jail=tmp_path)
    assert dbl.run("-r").returncode == 0
    target = MsyncTarget(name="cluster", members=("mk2", "mk3"), msync=str(dbl.msync), timeout_s=60)
    rootb = os.fsencode(root)
    assert audit_msync(rootb, target, env=dbl.env(), specials=[b"d/pipe"]) == ([], None)

    m = dbl.member_dir("mk2")
    os.utime(m / "a.txt", (946684800, 946684800))
    os.chmod(m / "d" / "b.txt", 0o600)
    (m / "extra").write_bytes(b"x")
    findings, error = audit_msync(rootb, target, env=dbl.env(), specials=[b"d/pipe"])
    assert error is None
    why = "differs on the member (msync dry run: type, size, mode, owner or mtime)"
    assert sorted(findings, key=lambda f: f.path) == [
        Finding(b"a.txt", why, track="cluster/mk2"),
        Finding(b"d/b.txt", why, track="cluster/mk2"),
        Finding(b"extra", "extra on the member", track="cluster/mk2"),
    ]


_WRAPPER = """#!{python}
import os, sys
os.environ["MSYNC_DOUBLE_STATE"] = {state!r}
os.execv({msync!r}, [{msync!r}, *sys.argv[1:]])
"""


def test_agent_msync_mirrors_verify_clean(tmp_path: Path) -> None:
    """A real agent shipping to the msync double: its members verify clean
    (the dry run's metadata comparison included); a member whose file got
    another mtime is drift on that member's track alone."""
    root, journal = tmp_path / "www", tmp_path / "journal"
    (root / "d").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"aaaa")
    dbl = make_double(tmp_path / "dbl", base=root, members=("mk2", "mk3"), jail=tmp_path)
    wrapper = tmp_path / "msync"
    wrapper.write_text(_WRAPPER.format(python=sys.executable, state=str(dbl.state), msync=str(dbl.msync)))
    wrapper.chmod(0o755)
    config = tmp_path / "agent.toml"
    config.write_text(
        f"root = {json.dumps(str(root))}\njournal = {json.dumps(str(journal))}\n"
        f'[[target]]\nname = "cluster"\nkind = "msync"\nmembers = ["mk2", "mk3"]\n'
        f"msync = {json.dumps(str(wrapper))}\n"
    )
    flags = ["--config", str(config)]
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([str(AGENT), "run", *flags], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (journal / "runtime.json").exists(), timeout=60)
        (root / "d" / "e").mkdir()
        (root / "d" / "e" / "f.txt").write_bytes(b"ffff")
        (root / "b.txt").write_bytes(b"bb")
        os.chmod(root / "a.txt", 0o640)

        def clean() -> dict | None:
            res = agent("verify", "--json", *flags)
            doc = json.loads(res.stdout)
            return doc if res.returncode == 0 and not doc["targets"]["cluster"]["lag"] else None

        wait_until(clean, timeout=60, message="the members never verified clean")
        os.utime(dbl.member_dir("mk3") / "b.txt", (946684800, 946684800))
        res = agent("verify", "--json", *flags)
        assert res.returncode == 1
        assert json.loads(res.stdout)["targets"]["cluster"]["drift"] == [
            {
                "path": "b.txt",
                "why": "differs on the member (msync dry run: type, size, mode, owner or mtime)",
                "track": "cluster/mk3",
            }
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_msync_audit_leaves_excluded_paths_to_the_members(tmp_path: Path) -> None:
    """What a member holds at an excluded path (a directory-only pattern too)
    is its own: no finding; the source's excluded files are not compared."""
    root = tmp_path / "www"
    (root / "d").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"aaaa")
    (root / "d" / "draft.tmp").write_bytes(b"the source's, never sent")
    dbl = make_double(tmp_path / "dbl", base=root, members=("mk2",), jail=tmp_path)
    assert dbl.run("--exclude=*.tmp", "-r").returncode == 0
    m = dbl.member_dir("mk2")
    (m / "d" / "cache").mkdir()
    (m / "d" / "cache" / "warm").write_bytes(b"the member's own cache")
    (m / "local.tmp").write_bytes(b"the member's own")
    shutil.copystat(root / "d", m / "d")
    shutil.copystat(root, m)
    target = MsyncTarget(name="cluster", members=("mk2",), msync=str(dbl.msync), timeout_s=60)
    findings, error = audit_msync(os.fsencode(root), target, env=dbl.env(), excludes=("*.tmp", "cache/"))
    assert (findings, error) == ([], None)
