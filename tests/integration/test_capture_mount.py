"""Neither capture nor verify's audits cross a mount point inside the tree.

A child process in a private mount namespace (the machine's mounts never
change) mounts a tmpfs full of files at ``sub/mnt``, ships a directory moved
in with the real replayer and LocalShipper, then runs verify's local audit
and the local mirror compare; it prints what each saw as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import errno, json, os, subprocess, sys
from pathlib import Path
root, mirror, jdir = (os.fsencode(a) for a in sys.argv[1:4])
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", root + b"/sub/mnt"]).returncode:
    sys.exit(77)
os.mkdir(root + b"/sub/mnt/deep")
for rel in (b"/sub/mnt/inner", b"/sub/mnt/deep/more"):
    fd = os.open(root + rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.write(fd, b"on another filesystem")
    os.close(fd)
from agent.operate.audit import compare_trees
from agent.operate.config import LocalTarget
from agent.tree.excludes import Excludes
from agent.tree.fsstate import capture_in
from agent.ship.replayer import Replayer
from agent.ship.local.shipper import LocalShipper
from agent.operate.verify import local_audit
from agent.tree.walk import root_dev
from journal import IS_DIR, Entry, Journal, Op
out = {}
with Journal.open(os.fsdecode(jdir), root=os.fsdecode(root), tracks=["t"]) as j:
    shipper = LocalShipper(LocalTarget("t", Path(os.fsdecode(mirror))), Path(os.fsdecode(root)))
    j.append([Entry(Op.MOVE, b"away", b"sub", flags=IS_DIR)])
    replayer = Replayer(j, shipper, os.fsdecode(root), settle_s=0.0)
    for _ in range(20):
        if replayer.step().idle:
            break
    shipper.close()
    out["manifest"] = sorted(p.hex() for p, _ in j.manifest_items())
    out["audit"] = sorted(f.path.hex() for f in local_audit(root, j, Excludes(()))[0])
try:
    capture_in(root, b"sub/mnt/inner", root_dev(root))
    out["capture"] = "read"
except OSError as exc:
    out["capture"] = errno.errorcode[exc.errno]
out["compare"] = sorted(f.path.hex() for f in compare_trees(root, mirror, Excludes(())))
out["mirror"] = sorted(os.fsencode(os.path.relpath(os.path.join(d, n), mirror)).hex()
                       for d, ds, fs in os.walk(mirror) for n in ds + fs)
print(json.dumps(out))
"""


def test_capture_and_audits_stay_off_a_mount_point(tmp_path: Path) -> None:
    """Nothing below the mount point reaches the manifest, the mirror or a
    finding; capturing a path below it is refused as another filesystem."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a tmpfs in a private mount namespace")
    root, mirror = tmp_path / "root", tmp_path / "mirror"
    (root / "sub" / "mnt").mkdir(parents=True)
    (root / "sub" / "plain").write_bytes(b"on the tree's filesystem")
    mirror.mkdir()
    argv = ["unshare", "-m", "--propagation", "private", "--", sys.executable, "-c", CHILD]
    proc = subprocess.run(
        [*argv, str(root), str(mirror), str(tmp_path / "journal")], cwd=REPO, capture_output=True, timeout=60
    )
    if proc.returncode == 77 or b"unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {proc.stderr[-200:]!r}")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    seen = {key: [bytes.fromhex(p) for p in out[key]] for key in ("manifest", "audit", "compare", "mirror")}
    for key, paths in seen.items():
        assert not [p for p in paths if p.startswith(b"sub/mnt/")], key
    assert b"sub/plain" in seen["manifest"] and b"sub/plain" in seen["mirror"]
    assert out["capture"] == "EXDEV"


MSYNC_CHILD = r"""
import json, os, subprocess, sys
from pathlib import Path
root, state, msync = sys.argv[1:4]
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", root + "/d/mnt"]).returncode:
    sys.exit(77)
os.mkdir(root + "/d/mnt/deep")
for rel in ("/d/mnt/inner", "/d/mnt/deep/more"):
    fd = os.open(root + rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.write(fd, b"on another filesystem")
    os.close(fd)
    os.utime(root + rel, (1_700_000_000, 1_700_000_000))
from agent.operate.config import MsyncTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.msync.shipper import MsyncShipper
target = MsyncTarget(name="c", members=("mk2",), msync=msync, base=Path(root), batch=50)
shipper = MsyncShipper(target, Path(root), env={"MSYNC_DOUBLE_STATE": state})
results = shipper.ship(Plan((Action(ActionKind.PUT, b"d", recursive=True),)))
print(json.dumps([[r.path.hex(), r.outcome.value] for r in results]))
"""


def test_msync_recursive_put_stays_off_a_mount_point(tmp_path: Path) -> None:
    """A recursive msync PUT of a directory holding a mount point sends the
    directory's own files, and nothing of the other filesystem reaches a member."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a tmpfs in a private mount namespace")
    from tests.doubles.fixtures import make_double

    root = tmp_path / "root"
    (root / "d" / "mnt").mkdir(parents=True)
    (root / "d" / "plain").write_bytes(b"on the tree's filesystem")
    for p in (root / "d" / "plain", root / "d"):
        os.utime(p, (1_700_000_000, 1_700_000_000))
    dbl = make_double(tmp_path / "dbl", base=root, jail=tmp_path)
    argv = ["unshare", "-m", "--propagation", "private", "--", sys.executable, "-c", MSYNC_CHILD]
    proc = subprocess.run(
        [*argv, str(root), str(dbl.state), str(dbl.msync)], cwd=REPO, capture_output=True, timeout=120
    )
    if proc.returncode == 77 or b"unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {proc.stderr[-200:]!r}")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    results = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert [outcome for _, outcome in results] == ["ok"]
    member = dbl.member_dir("mk2")
    sent = {os.path.relpath(os.path.join(d, n), member) for d, ds, fs in os.walk(member) for n in ds + fs}
    assert "d/plain" in sent
    assert not [p for p in sent if p.startswith("d/mnt/")], sorted(sent)


RSYNC_CHILD = r"""
import json, os, subprocess, sys
from pathlib import Path
root, mirror = sys.argv[1:3]
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", root + "/d/mnt"]).returncode:
    sys.exit(77)
fd = os.open(root + "/d/mnt/inner", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
os.write(fd, b"on another filesystem")
os.close(fd)
from agent.operate.audit import audit_rsync
from agent.operate.config import RsyncTarget
from agent.tree.excludes import Excludes
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.rsync.shipper import RsyncShipper
target = RsyncTarget("t", mirror, timeout_s=60)
shipper = RsyncShipper(target, Path(root))
results = shipper.ship(Plan((Action(ActionKind.PUT, b"d", recursive=True),)))
findings = audit_rsync(os.fsencode(root), target, Excludes(()))
out = {"results": [r.outcome.value for r in results], "findings": [f.path.hex() for f in findings]}
print(json.dumps(out))
"""


def test_rsync_put_and_audit_stay_off_a_mount_point(tmp_path: Path) -> None:
    """rsync neither copies nor audits what lies below a mount point in the tree."""
    if shutil.which("unshare") is None or shutil.which("rsync") is None or os.geteuid() != 0:
        pytest.skip("needs root, rsync and unshare(1) to mount a tmpfs in a private mount namespace")
    root, mirror = tmp_path / "root", tmp_path / "mirror"
    (root / "d" / "mnt").mkdir(parents=True)
    (root / "d" / "plain").write_bytes(b"on the tree's filesystem")
    mirror.mkdir()
    argv = ["unshare", "-m", "--propagation", "private", "--", sys.executable, "-c", RSYNC_CHILD]
    proc = subprocess.run([*argv, str(root), str(mirror)], cwd=REPO, capture_output=True, timeout=120)
    if proc.returncode == 77 or b"unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {proc.stderr[-200:]!r}")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert out["results"] == ["ok"]
    assert (mirror / "d" / "plain").exists() and not (mirror / "d" / "mnt" / "inner").exists()
    assert not [p for p in map(bytes.fromhex, out["findings"]) if p.startswith(b"d/mnt/")]
