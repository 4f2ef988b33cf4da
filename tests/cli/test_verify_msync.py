"""The msync mirror audit against the msync test double: ``--members`` and
``msync -t MEMBER --check -r`` per expected member."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agent.audit import Finding, audit_msync, parse_msync_check
from agent.config import MsyncTarget
from tests.doubles.fixtures import make_double


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
