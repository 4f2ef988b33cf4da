"""Audit of an rsync mirror for ``agent verify``: a checksum dry run, itemized
and NUL-safe, with the exclude patterns as the agent reads them."""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.ship import process as _exec
from agent.ship.findings import AuditError, Finding
from agent.ship.rsync.filters import exclude_args
from agent.ship.rsync.shipper import FIFO_WAIT_LIMIT_S
from agent.ship.targets import RsyncTarget
from agent.tree.excludes import Excludes

__all__ = ["audit_rsync", "classify_item", "literal_rule", "parse_itemized"]

_RULES_BUDGET = 256 * 1024  # argv bytes spent on excluding the source's special files

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
    result = _exec.run(argv, timeout=target.timeout_s, fifo_wait_limit=FIFO_WAIT_LIMIT_S)
    if result.fifo_blocked:
        raise AuditError(
            f"rsync check of {target.dest} waited to open a fifo (a file replaced during the check); "
            "run verify again"
        )
    if result.missing or result.timed_out or result.returncode not in (0, 24):
        detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise AuditError(f"rsync check of {target.dest} failed (rc {result.returncode}): {detail[0]}")
    return [f for f in parse_itemized(result.stdout) if not excludes.match(f.path, False)]
