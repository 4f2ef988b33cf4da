"""Mirror audits for ``agent verify``: what each mirror holds that the tree does not.

One audit per target kind: a direct compare for a local mirror, an rsync
checksum dry run (itemized, NUL-safe) for rsync, ``msync --check`` per member
for msync. Every external program runs through ``agent.shippers._exec``.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from agent.config import LocalTarget, MsyncTarget, RsyncTarget, TargetConfig
from agent.errors import AgentError
from agent.excludes import Excludes
from agent.fsstate import kind_of
from agent.logs import safe_path
from agent.shippers import _exec
from journal import FileKind

__all__ = [
    "Finding",
    "AuditError",
    "compare_trees",
    "classify_item",
    "parse_itemized",
    "parse_msync_check",
    "audit_rsync",
    "audit_msync",
    "audit_target",
]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Finding:
    path: bytes
    why: str
    track: str | None = None  # one msync member's track; None = every track of the target


class AuditError(AgentError):
    """A mirror could not be audited (unreachable, tool missing)."""


# ---------------------------------------------------------------------- local mirror
def _same_content(a: bytes, b: bytes) -> bool:
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _entry_diff(src: bytes, dst: bytes, s: os.stat_result, d: os.stat_result) -> str | None:
    ks, kd = kind_of(s.st_mode), kind_of(d.st_mode)
    if ks != kd:
        return f"type differs (source {ks.name.lower()}, mirror {kd.name.lower()})"
    if ks == FileKind.SYMLINK:
        return None if os.readlink(src) == os.readlink(dst) else "symlink target differs"
    if stat.S_IMODE(s.st_mode) != stat.S_IMODE(d.st_mode):
        return f"mode differs (source {stat.S_IMODE(s.st_mode):o}, mirror {stat.S_IMODE(d.st_mode):o})"
    if ks == FileKind.FILE and (s.st_size != d.st_size or not _same_content(src, dst)):
        return "content differs"
    return None


def _listing(path: bytes, rel: bytes, excludes: Excludes) -> dict[bytes, os.stat_result]:
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for de in entries:
        child = rel + b"/" + de.name if rel else de.name
        try:
            st = de.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not excludes.match_self(child, stat.S_ISDIR(st.st_mode)):
            out[de.name] = st
    return out


def compare_trees(src_root: bytes, dst_root: bytes, excludes: Excludes) -> list[Finding]:
    """Direct compare of a tree with its mirror: content, type, mode, symlink
    target, and extra entries on the mirror (reported once, at their top)."""
    if not os.path.isdir(dst_root):
        raise AuditError(f"mirror {safe_path(dst_root)} is not a directory")
    findings: list[Finding] = []
    stack = [b""]
    while stack:
        rel = stack.pop()
        src_dir, dst_dir = os.path.join(src_root, rel), os.path.join(dst_root, rel)
        src_list, dst_list = _listing(src_dir, rel, excludes), _listing(dst_dir, rel, excludes)
        for name in sorted(dst_list.keys() - src_list.keys()):
            findings.append(Finding(rel + b"/" + name if rel else name, "extra on the mirror"))
        for name in sorted(src_list):
            child = rel + b"/" + name if rel else name
            s, d = src_list[name], dst_list.get(name)
            if d is None:
                findings.append(Finding(child, "missing on the mirror"))
            else:
                try:
                    why = _entry_diff(os.path.join(src_root, child), os.path.join(dst_root, child), s, d)
                except FileNotFoundError:
                    why = None
                if why:
                    findings.append(Finding(child, why))
            if stat.S_ISDIR(s.st_mode):
                stack.append(child)
    return findings


# ---------------------------------------------------------------------- rsync
_ESCAPE = re.compile(rb"\\#([0-7]{3})")
_ATTR_WHY = {
    2: "content differs",
    3: "size differs",
    5: "mode differs",
    6: "owner differs",
    7: "group differs",
}


def _unescape(name: bytes) -> bytes:
    """rsync prints unprintable bytes (and a backslash before '#') as ``\\#ooo``."""
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), name)


def classify_item(item: str) -> str | None:
    """Why an rsync itemize code (``>fc.t......``) means drift; None for
    differences the mirror contract ignores (times)."""
    if item.startswith("*deleting"):
        return "extra on the mirror"
    if item[2:] == "+" * 9:
        return "missing on the mirror"
    whys = [why for pos, why in _ATTR_WHY.items() if len(item) > pos and item[pos] not in ". "]
    if item[1:2] == "L" and "content differs" in whys:
        whys[whys.index("content differs")] = "symlink target differs"
    if "content differs" in whys and "size differs" in whys:
        whys.remove("size differs")
    return ", ".join(whys) or None


def parse_itemized(stdout: bytes) -> list[Finding]:
    """Findings from ``rsync -i --out-format='%i %n'`` output; a deleted
    directory's children are folded into it."""
    findings: dict[bytes, str] = {}
    for line in stdout.split(b"\n"):
        if len(line) < 13 or line[11:12] != b" ":
            continue
        item, name = line[:11].decode("ascii", "replace"), _unescape(line[12:]).rstrip(b"/")
        why = classify_item(item)
        if why and name not in (b"", b"."):
            findings[name] = why
    deleted = {p for p, w in findings.items() if w == "extra on the mirror"}
    return [
        Finding(p, w)
        for p, w in sorted(findings.items())
        if not (w == "extra on the mirror" and _below(p, deleted))
    ]


def _below(path: bytes, tops: set[bytes]) -> bool:
    """True when a proper parent of ``path`` is in ``tops``."""
    while b"/" in path:
        path = path.rsplit(b"/", 1)[0]
        if path in tops:
            return True
    return False


def audit_rsync(root: bytes, target: RsyncTarget, excludes: Excludes) -> list[Finding]:
    dest = target.dest if target.dest.endswith("/") else target.dest + "/"
    argv = [
        target.rsync,
        "-a",
        "--dry-run",
        "--checksum",
        "--itemize-changes",
        "--delete",
        "--out-format=%i %n",
        *(f"--exclude={p}" for p in excludes.patterns),
        *target.options,
        root.rstrip(b"/") + b"/",
        dest,
    ]
    result = _exec.run(argv, timeout=target.timeout_s)
    if result.missing or result.timed_out or result.returncode not in (0, 24):
        detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise AuditError(f"rsync check of {target.dest} failed (rc {result.returncode}): {detail[0]}")
    return [f for f in parse_itemized(result.stdout) if not excludes.match(f.path, False)]


# ---------------------------------------------------------------------- msync
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


def _msync_base_argv(target: MsyncTarget) -> list[str]:
    argv = [target.msync]
    if target.console:
        argv += ["-c", target.console]
    if target.password_file:
        argv += ["-K", str(target.password_file)]
    return argv


def audit_msync(
    root: bytes, target: MsyncTarget, env: dict[str, str] | None = None
) -> tuple[list[Finding], str | None]:
    """``msync --check -r`` per expected member; absent members are an error.
    ``env`` is extra environment for msync (e.g. ``MSYNC_TARGET``)."""
    base = os.fsencode(target.base) if target.base else root
    listing = _exec.run([*_msync_base_argv(target), "--members"], timeout=target.timeout_s, env=env)
    if listing.returncode != 0 or listing.missing:
        detail = (listing.stderr or listing.stdout).decode(errors="replace").strip()[-200:]
        raise AuditError(f"msync --members failed (rc {listing.returncode}): {detail}")
    present = {
        line.split()[0].decode(errors="replace") for line in listing.stdout.splitlines() if line.strip()
    }
    absent = [m for m in target.members if m not in present]
    findings: list[Finding] = []
    for member in (m for m in target.members if m in present):
        argv = [*_msync_base_argv(target), "-t", member, "--check", "-r"]
        result = _exec.run(argv, timeout=target.timeout_s, env=env)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip()[-200:]
            raise AuditError(f"msync --check -t {member} failed (rc {result.returncode}): {detail}")
        for path, why in parse_msync_check(result.stdout, result.stderr, member):
            rel = os.path.relpath(os.path.join(base, path), root)
            findings.append(Finding(rel, why, track=f"{target.name}/{member}"))
    return findings, (f"members absent from msync --members: {', '.join(absent)}" if absent else None)


# ---------------------------------------------------------------------- command
def audit_target(root: bytes, target: TargetConfig, excludes: Excludes) -> tuple[list[Finding], str | None]:
    """Mirror findings of one target and an error text (None when audited)."""
    try:
        if isinstance(target, LocalTarget):
            return compare_trees(root, os.fsencode(target.path), excludes), None
        if isinstance(target, RsyncTarget):
            return audit_rsync(root, target, excludes), None
        return audit_msync(root, target)
    except (AuditError, OSError) as exc:
        return [], str(exc)
