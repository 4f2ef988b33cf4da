"""Audit of an msync target for ``agent verify``: per member, ``--check -r``
(content) and a ``--delete -r`` dry run (makuosan's metadata comparison,
extras)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from agent.ship import process as _exec
from agent.ship.findings import AuditError, Finding
from agent.ship.msync.commands import daemon_options
from agent.ship.msync.filters import makuosan_patterns
from agent.ship.targets import MsyncTarget

__all__ = ["audit_msync", "parse_msync_check", "parse_msync_dryrun"]

_NG = re.compile(rb"^(\S+): NG (.+)$")
_MISSING = re.compile(rb"^error: No such file or directory (\S*?):(.+)$")


def parse_msync_check(stdout: bytes, stderr: bytes, host: str) -> list[tuple[bytes, str]]:
    """(base-relative path, why) from ``msync --check`` output for ``host``."""
    out = []
    for line in stdout.splitlines():
        if (m := _NG.match(line.rstrip(b"\r"))) and m.group(1).decode(errors="replace") == host:
            out.append((m.group(2), "content differs (msync --check NG)"))
    for line in stderr.splitlines():
        if (m := _MISSING.match(line.rstrip(b"\r"))) and m.group(1).decode(errors="replace") == host:
            out.append((m.group(2), "missing on the member"))
    return out


_DRY = re.compile(rb"^\(dryrun\) (update|delete) (\S*?):(.+)$")
_DRY_WHY = {
    b"update": "differs on the member (msync dry run: type, size, mode, owner or mtime)",
    b"delete": "extra on the member",
}


def parse_msync_dryrun(stdout: bytes, host: str) -> list[tuple[bytes, str]]:
    """(base-relative path, why) from ``msync -n -v --delete -r`` for ``host``:
    what a send would update there (makuosan's own comparison) or delete."""
    out = []
    for line in stdout.splitlines():
        if (m := _DRY.match(line.rstrip(b"\r"))) and m.group(2).decode(errors="replace") == host:
            out.append((m.group(3), _DRY_WHY[m.group(1)]))
    return out


def _msync_run(target: MsyncTarget, argv: list[str | bytes], env: dict[str, str] | None) -> _exec.ExecResult:
    prefix = [
        os.fsencode(target.msync),
        *daemon_options(
            os.fsencode(target.console) if target.console else None,
            os.fsencode(target.password_file) if target.password_file else None,
        ),
    ]
    result = _exec.run([*prefix, *argv], timeout=target.timeout_s, env=env)
    if result.returncode != 0 or result.missing:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip()[-200:]
        raise AuditError(f"msync {' '.join(argv)} failed (rc {result.returncode}): {detail}")
    return result


# A member writes NAME.makuoNNNNNNNNN, then renames it to NAME; one cut off
# mid-transfer keeps the temp file until makuosan's receive GC removes it.
_MAKUO_TEMP = re.compile(rb"(?:^|/)[^/]+\.makuo[0-9]{6,9}$")


def _makuo_temp(path: bytes, why: str) -> bool:
    """An extra on a member that is makuosan's own temp file: not drift."""
    return why == _DRY_WHY[b"delete"] and _MAKUO_TEMP.search(path) is not None


def _member_findings(
    root: bytes,
    target: MsyncTarget,
    member: str,
    specials: set[bytes],
    env: dict[str, str] | None,
    excludes: Sequence[str],
) -> list[Finding]:
    """``--check -r`` (content of regular files) and a ``--delete -r`` dry
    run (makuosan's metadata comparison, and extras) for one member. A
    special file's path is skipped: members never keep a fifo's mtime, so
    its dry run always answers update. makuosan's temp files left by a cut
    transfer are not drift either: the member never shows them as NAME."""
    base = os.fsencode(target.base) if target.base else root
    skip = [b"--exclude=" + p for p in makuosan_patterns(excludes, os.path.realpath(root))]
    check = _msync_run(target, [*skip, "-t", member, "--check", "-r"], env)
    dry = _msync_run(target, [*skip, "-t", member, "-n", "-v", "--delete", "-r"], env)
    found: dict[bytes, str] = {}
    for path, why in [
        *parse_msync_check(check.stdout, check.stderr, member),
        *parse_msync_dryrun(dry.stdout, member),
    ]:
        rel = os.path.relpath(os.path.join(base, path), root)
        if rel in (b".", b"..") or rel.startswith(b"../") or rel in specials or _makuo_temp(rel, why):
            continue
        found.setdefault(rel, why)
    return [Finding(p, w, track=f"{target.name}/{member}") for p, w in sorted(found.items())]


def audit_msync(
    root: bytes,
    target: MsyncTarget,
    env: dict[str, str] | None = None,
    specials: Sequence[bytes] = (),
    excludes: Sequence[str] = (),
) -> tuple[list[Finding], str | None]:
    """Every expected member's findings; absent members are an error.
    ``env`` is extra environment for msync (e.g. ``MSYNC_TARGET``); the
    exclude patterns reach makuosan's own walks, translated."""
    listing = _msync_run(target, ["--members"], env)
    present = {
        line.split()[0].decode(errors="replace") for line in listing.stdout.splitlines() if line.strip()
    }
    absent = [m for m in target.members if m not in present]
    findings: list[Finding] = []
    for member in (m for m in target.members if m in present):
        findings += _member_findings(root, target, member, set(specials), env, excludes)
    return findings, (f"members absent from msync --members: {', '.join(absent)}" if absent else None)
