"""The scanner stays on the root's filesystem: a tmpfs mounted inside the tree
(in a private mount namespace of a child process, so the machine's mounts are
never touched) is neither walked nor taken for deleted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.tree.fsstate import capture
from journal import Journal, Op

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, os, subprocess, sys
root, jdir = sys.argv[1], sys.argv[2]
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", root + "/mnt"]).returncode:
    sys.exit(77)
os.mkdir(root + "/mnt/sub")
with open(root + "/mnt/sub/inner", "w") as f:
    f.write("on another filesystem")
from agent.tree.excludes import Excludes
from agent.scan.scanner import Scanner
from journal import Journal
with Journal.open(jdir, root=root, tracks=["t"]) as j:
    report = Scanner(root, j, Excludes(())).scan(since_ns=None)
    entries = [[int(r.entry.op), r.entry.path.hex()] for r in j.since(seq=1)]
print(json.dumps({"entries": entries, "skipped": report.skipped, "dirs": report.dirs_seen}))
"""


def test_mount_point_is_not_crossed_nor_deleted(tmp_path: Path) -> None:
    """Files below a mount point are not enqueued; manifest paths hidden under it are not deleted."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a tmpfs in a private mount namespace")
    root = tmp_path / "root"
    (root / "mnt").mkdir(parents=True)
    (root / "mnt" / "hidden").write_bytes(b"shadowed by the mount")
    (root / "top").write_bytes(b"top")
    with Journal.open(tmp_path / "journal", root=root, tracks=["t"]) as journal:
        journal.manifest_put(
            {rel: capture(os.fsencode(root / os.fsdecode(rel))) for rel in (b"mnt", b"mnt/hidden", b"top")}
        )
    (root / "new").write_bytes(b"new")
    argv = ["unshare", "-m", "--propagation", "private", "--", sys.executable, "-c", CHILD]
    proc = subprocess.run(
        [*argv, str(root), str(tmp_path / "journal")], cwd=REPO, capture_output=True, timeout=60
    )
    if proc.returncode == 77 or b"unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {proc.stderr[-200:]!r}")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert [(Op(op), bytes.fromhex(p)) for op, p in out["entries"]] == [(Op.CHANGE, b"new")]
    assert out["skipped"] == 1
    assert not (root / "mnt" / "sub").exists()  # the tmpfs is gone with the namespace
