"""Run a shipper inside a private mount namespace with a faulty mirror.

The child (``unshare -m``) turns the mirror into a read-only bind mount or a
tiny tmpfs, ships a plan, and prints the results as JSON; the host's mounts
never change. Needs root and ``unshare``; ``available()`` says whether it works.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["available", "ship_with_faulty_mirror", "FAULTS"]

_REPO = Path(__file__).resolve().parents[2]
FAULTS = ("readonly", "full")

_CHILD = r"""
import base64, json, subprocess, sys
from pathlib import Path
from agent.operate.config import LocalTarget, RsyncTarget
from agent.ship.actions import Action, ActionKind, Plan
from agent.ship.local.shipper import LocalShipper
from agent.ship.rsync.shipper import RsyncShipper

kind, fault, root, mirror, *paths = sys.argv[1:]
if fault == "readonly":
    subprocess.run(["mount", "--bind", mirror, mirror], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", mirror], check=True)
else:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mirror], check=True)
if kind == "local":
    shipper = LocalShipper(LocalTarget("t", Path(mirror)), Path(root))
else:
    shipper = RsyncShipper(RsyncTarget("t", mirror, timeout_s=60), Path(root))
plan = Plan(tuple(Action(ActionKind.PUT, base64.b64decode(p), True) for p in paths))
out = [[r.track, base64.b64encode(r.path).decode(), r.outcome.value, r.reason] for r in shipper.ship(plan)]
print(json.dumps(out))
"""


def available() -> bool:
    """True when this process may create mount namespaces (root + unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def ship_with_faulty_mirror(
    kind: str, fault: str, root: Path, mirror: Path, paths: list[bytes]
) -> list[tuple[str, bytes, str, str]]:
    """Ship recursive PUTs of ``paths`` with ``kind`` ("local" or "rsync") to
    ``mirror`` made faulty by ``fault``; returns (track, path, outcome, reason)."""
    argv = ["unshare", "-m", "--propagation", "private", "--", sys.executable, "-c", _CHILD]
    argv += [kind, fault, str(root), str(mirror), *(base64.b64encode(p).decode() for p in paths)]
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    proc = subprocess.run(argv, capture_output=True, timeout=120, env=env, cwd=_REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    rows = json.loads(proc.stdout.splitlines()[-1])
    return [(t, base64.b64decode(p), o, r) for t, p, o, r in rows]
