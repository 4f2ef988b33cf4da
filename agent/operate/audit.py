"""Mirror audits for ``agent verify``: what each mirror holds that the tree does not.

One audit per target kind: a direct compare for a local mirror, an rsync
checksum dry run (itemized, NUL-safe) for rsync, ``msync --check`` (content)
and a ``--delete`` dry run (makuosan's metadata comparison, extras) per
member for msync. Every external program runs through ``agent.ship.process``.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agent.errors import AgentError
from agent.operate.config import LocalTarget, MsyncTarget, RsyncTarget, TargetConfig
from agent.operate.logs import safe_path
from agent.ship import process as _exec
from agent.ship.msync.filters import makuosan_patterns
from agent.ship.rsync.filters import exclude_args
from agent.tree.excludes import Excludes
from agent.tree.fsstate import kind_of
from agent.tree.walk import Walk, join, open_dir, root_dev, split
from journal import FileKind

__all__ = [
    "Finding",
    "AuditError",
    "compare_trees",
    "classify_item",
    "parse_itemized",
    "parse_msync_check",
    "parse_msync_dryrun",
    "audit_rsync",
    "audit_msync",
    "audit_target",
]

_CHUNK = 1 << 20
_RULES_BUDGET = 256 * 1024  # argv bytes spent on excluding the source's special files
_OWNERS = os.geteuid() == 0  # a local mirror carries owners only when shipped as root
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


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def _entry_diff(src: bytes, dst: bytes, s: os.stat_result, d: os.stat_result) -> str | None:
    """The first difference of a mirror entry, in the order type, symlink
    target, mode, owner (when this process could have set it), content,
    mtime (ns; files, directories and symlinks alike). mtime is reported
    only when it is the one difference, so a rewritten file reads as a
    content change."""
    ks, kd = kind_of(s.st_mode), kind_of(d.st_mode)
    if ks == FileKind.OTHER:
        return f"not replicated: special file, but the mirror holds a {_kind_name(d.st_mode)}"
    if ks != kd:
        return f"type differs (source {ks.name.lower()}, mirror {kd.name.lower()})"
    if ks == FileKind.SYMLINK and os.readlink(src) != os.readlink(dst):
        return "symlink target differs"
    if ks != FileKind.SYMLINK and stat.S_IMODE(s.st_mode) != stat.S_IMODE(d.st_mode):
        return f"mode differs (source {stat.S_IMODE(s.st_mode):o}, mirror {stat.S_IMODE(d.st_mode):o})"
    if _OWNERS and (s.st_uid, s.st_gid) != (d.st_uid, d.st_gid):
        return f"owner differs (source {s.st_uid}:{s.st_gid}, mirror {d.st_uid}:{d.st_gid})"
    if ks == FileKind.FILE and (s.st_size != d.st_size or not _same_content(src, dst)):
        return "content differs"
    if s.st_mtime_ns != d.st_mtime_ns:
        return f"mtime differs (source {_when(s.st_mtime_ns)}, mirror {_when(d.st_mtime_ns)})"
    return None


def _kind_name(mode: int) -> str:
    kind = kind_of(mode)
    return "special file" if kind == FileKind.OTHER else kind.name.lower()


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
    """Direct compare of a tree with its mirror (see ``_entry_diff``), and
    extra entries on the mirror (reported once, at their top). The source
    is read by the tree's one walker (no symlink followed, no mount point
    crossed); a mount point's name is neither compared nor, on the mirror,
    called extra."""
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
    """Why an rsync itemize code (``>fc.t......``) means drift, or None.
    A time difference (``t``, or ``T`` where rsync cannot keep a time) counts
    only when nothing else differs; rsync compares mtimes in whole seconds."""
    if item.startswith("*deleting"):
        return "extra on the mirror"
    if item[2:] == "+" * 9:
        return "missing on the mirror"
    whys = [why for pos, why in _ATTR_WHY.items() if len(item) > pos and item[pos] not in ". "]
    if item[1:2] == "L" and "content differs" in whys:
        whys[whys.index("content differs")] = "symlink target differs"
    if "content differs" in whys and "size differs" in whys:
        whys.remove("size differs")
    if not whys and len(item) > 4 and item[4] in "tT":
        whys.append("mtime differs")
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


def literal_rule(path: bytes) -> bytes:
    """An rsync filter pattern matching exactly ``path`` (anchored at the
    transfer root). rsync reads backslashes as escapes only in a pattern
    that holds a wildcard, so a name with one gets all four escaped."""
    if any(c in path for c in (b"*", b"?", b"[")):
        path = re.sub(rb"([*?\[\\])", rb"\\\1", path)
    return b"/" + path


def _special_rules(specials: Sequence[bytes]) -> list[bytes]:
    """Sender-side exclude rules (``-s``) for the source's special files, so
    that anything the mirror holds at their paths shows as an extra, while the
    exclude patterns still protect what the mirror holds at excluded paths.
    Past a budget of argv bytes the rest are left out: their
    paths are then only known not to be replicated."""
    out: list[bytes] = []
    budget = _RULES_BUDGET
    for path in specials:
        arg = b"--filter=-s " + literal_rule(path)
        budget -= len(arg) + 1
        if budget < 0:
            break
        out.append(arg)
    return out


def audit_rsync(
    root: bytes, target: RsyncTarget, excludes: Excludes, specials: Sequence[bytes] = ()
) -> list[Finding]:
    dest = target.dest if target.dest.endswith("/") else target.dest + "/"
    rules = _special_rules(specials)
    argv: list[str | bytes] = [
        target.rsync,
        "-a",
        "-xx",  # a mount point and what lies below it are not part of the tree
        "--dry-run",
        "--checksum",
        "--itemize-changes",
        "--delete",
        "--numeric-ids",
        "--out-format=%i %n",
        *rules,
        *exclude_args(excludes),
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
    result = _exec.run([*_msync_base_argv(target), *argv], timeout=target.timeout_s, env=env)
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


# ---------------------------------------------------------------------- command
def audit_target(
    root: bytes, target: TargetConfig, excludes: Excludes, specials: Sequence[bytes] = ()
) -> tuple[list[Finding], str | None]:
    """Mirror findings of one target and an error text (None when audited).
    ``specials``: the source's special files, which are not replicated."""
    try:
        if isinstance(target, LocalTarget):
            return compare_trees(root, os.fsencode(target.path), excludes), None
        if isinstance(target, RsyncTarget):
            return audit_rsync(root, target, excludes, specials), None
        findings, error = audit_msync(root, target, specials=specials, excludes=excludes.patterns)
        return [f for f in findings if not excludes.match(f.path, False)], error
    except (AuditError, OSError) as exc:
        return [], str(exc)
