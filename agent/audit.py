"""Mirror audits for ``agent verify``: what each mirror holds that the tree does not.

One audit per target kind: a direct compare for a local mirror, an rsync
checksum dry run (itemized, NUL-safe) for rsync, ``msync --check`` per member
for msync. Every external program runs through ``agent.shippers._exec``.
"""

from __future__ import annotations

import errno
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
from agent.walk import Walk, join, open_dir, root_dev, split
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
_Stat = os.stat_result
_Listing = tuple[int | None, dict[bytes, _Stat]]
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class Finding:
    path: bytes
    why: str
    track: str | None = None  # one msync member's track; None = every track of the target


class AuditError(AgentError):
    """A mirror could not be audited (unreachable, tool missing)."""


# ---------------------------------------------------------------------- local mirror
def _same_content(a: bytes, b: bytes) -> bool:
    fa, fb = os.open(a, _OPEN_FILE), None
    try:
        fb = os.open(b, _OPEN_FILE)
        while True:
            ca, cb = os.read(fa, _CHUNK), os.read(fb, _CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True
    finally:
        os.close(fa)
        if fb is not None:
            os.close(fb)


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


def _mirror_listing(
    dst_root: bytes, rel: bytes, excludes: Excludes, dev: int
) -> tuple[int | None, dict[bytes, _Stat]]:
    """(open fd, name -> lstat) of the mirror's directory ``rel``, reached
    without following a symlink or crossing a mount point; (None, {}) when
    the mirror holds no such directory there."""
    try:
        fd = open_dir(dst_root, rel, strict=True, dev=dev)
    except (FileNotFoundError, NotADirectoryError):
        return None, {}
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV):
            return None, {}  # a link or a mount where the directory should be: its type is reported above
        raise
    out: dict[bytes, _Stat] = {}
    for name in map(os.fsencode, os.listdir(fd)):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not excludes.match_self(join(rel, name), stat.S_ISDIR(st.st_mode)):
            out[name] = st
    return fd, out


def compare_trees(src_root: bytes, dst_root: bytes, excludes: Excludes) -> list[Finding]:
    """Direct compare of a tree with its mirror: content, type, mode, symlink
    target, and extra entries on the mirror (reported once, at their top).
    The source is read by the tree's one walker (no symlink followed, no
    mount point crossed); a mount point's name is neither compared nor, on
    the mirror, called extra."""
    if not os.path.isdir(dst_root):
        raise AuditError(f"mirror {safe_path(dst_root)} is not a directory")
    findings: list[Finding] = []
    tree = Walk(src_root, excludes, root_dev(src_root))
    mirror_dev, seen = root_dev(dst_root), 0
    for listing in tree:
        rel, fresh, seen = listing.rel, tree.skipped[seen:], len(tree.skipped)
        hidden = {split(p)[1] for p in fresh if split(p)[0] == rel}  # mount points of this directory
        mfd, dst_list = _mirror_listing(dst_root, rel, excludes, mirror_dev)
        try:
            src_list = dict(zip(listing.names, listing.stats))
            for name in sorted(dst_list.keys() - src_list.keys() - hidden):
                findings.append(Finding(join(rel, name), "extra on the mirror"))
            for name in listing.names:
                why = _compare_entry(listing.fd, mfd, name, src_list[name], dst_list.get(name))
                if why:
                    findings.append(Finding(join(rel, name), why))
        finally:
            if mfd is not None:
                os.close(mfd)
    return findings


def _compare_entry(sfd: int, mfd: int | None, name: bytes, s: os.stat_result, d: _Stat | None) -> str | None:
    """Why one entry differs, read through both directories' checked fds."""
    if d is None or mfd is None:
        return "missing on the mirror"
    try:
        return _entry_diff(_at(sfd, name), _at(mfd, name), s, d)
    except FileNotFoundError:
        return None


def _at(dir_fd: int, name: bytes) -> bytes:
    """A path naming ``name`` in the open directory ``dir_fd`` itself (not
    whatever a path from the root would lead to now)."""
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


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
        "-xx",  # a mount point and what lies below it are not part of the tree
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
