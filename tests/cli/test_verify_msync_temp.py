"""A member cut off mid-transfer keeps makuosan's temp file ``NAME.makuoNNNNNNNNN``;
the msync audit does not count it as drift once NAME itself is current."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from agent.operate.audit import Finding, audit_msync
from agent.operate.config import MsyncTarget
from tests.doubles.fixtures import make_double


def test_temp_file_of_a_cut_transfer_is_not_drift(tmp_path: Path) -> None:
    """After the catch-up the member equals the source except for the temp
    file: the audit is clean; a real extra beside it is still found."""
    root = tmp_path / "www"
    (root / "d").mkdir(parents=True)
    (root / "d" / "big.bin").write_bytes(b"0123456789")
    dbl = make_double(tmp_path / "dbl", base=root, members=("mk2", "mk3"), jail=tmp_path)
    dbl.set_member("mk3", state="timeout", update_then_timeout=True)
    dbl.run("-r")
    dbl.set_member("mk3", state="up", update_then_timeout=False)
    dbl.drops().ping("mk3")
    assert dbl.run("-t", "mk3", "-r").returncode == 0
    left = [n for n in os.listdir(dbl.member_dir("mk3") / "d") if re.fullmatch(r"big\.bin\.makuo\d{9}", n)]
    assert left, "the double should keep the cut transfer's temp file"
    target = MsyncTarget(name="cluster", members=("mk2", "mk3"), msync=str(dbl.msync), timeout_s=60)
    assert audit_msync(os.fsencode(root), target, env=dbl.env()) == ([], None)
    (dbl.member_dir("mk3") / "d" / "stray.txt").write_bytes(b"x")
    shutil.copystat(root / "d", dbl.member_dir("mk3") / "d")  # only the extra differs
    findings, _ = audit_msync(os.fsencode(root), target, env=dbl.env())
    assert findings == [Finding(b"d/stray.txt", "extra on the member", track="cluster/mk3")]
