"""Pure classification of rsync results: exit codes, per-path errors and the delete probe.

rsync reports one exit status per invocation. Codes 23 and 24 mean "some
paths failed"; which ones is read from the error lines on stderr, where
rsync quotes each name with unprintable bytes escaped as ``\\#ooo``. A
line that names none of the invocation's paths makes every path of that
invocation RETRY: no path is ever reported OK that rsync may not have sent.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.ship.base import Outcome

__all__ = [
    "ExitClass",
    "CodeRule",
    "EXIT_CODES",
    "classify_exit",
    "rsync_escape",
    "attribute_errors",
    "PathOutcome",
    "PROBE_FORMAT",
    "deleted_names",
]


class ExitClass(enum.Enum):
    """What one rsync exit status says of the invocation's paths."""

    OK = "ok"  # every path of the invocation made it
    PARTIAL = "partial"  # some paths failed: read stderr per path
    RETRY = "retry"  # nothing is proven: retry every path later
    FAILED = "failed"  # the invocation itself is wrong: retrying will not help


@dataclass(frozen=True, slots=True)
class CodeRule:
    exit_class: ExitClass
    meaning: str


EXIT_CODES: dict[int, CodeRule] = {
    0: CodeRule(ExitClass.OK, "success"),
    1: CodeRule(ExitClass.FAILED, "syntax or usage error"),
    2: CodeRule(ExitClass.FAILED, "protocol incompatibility"),
    3: CodeRule(ExitClass.RETRY, "errors selecting input/output files or dirs (mirror missing?)"),
    4: CodeRule(ExitClass.FAILED, "requested action not supported"),
    5: CodeRule(ExitClass.RETRY, "error starting client-server protocol (daemon down or refusing)"),
    6: CodeRule(ExitClass.RETRY, "daemon unable to append to log-file"),
    10: CodeRule(ExitClass.RETRY, "error in socket I/O (target unreachable)"),
    11: CodeRule(ExitClass.RETRY, "error in file I/O (mirror full or read-only?)"),
    12: CodeRule(ExitClass.RETRY, "error in rsync protocol data stream (connection lost)"),
    13: CodeRule(ExitClass.RETRY, "errors with program diagnostics"),
    14: CodeRule(ExitClass.RETRY, "error in IPC code"),
    20: CodeRule(ExitClass.RETRY, "received SIGUSR1 or SIGINT"),
    21: CodeRule(ExitClass.RETRY, "some error returned by waitpid()"),
    22: CodeRule(ExitClass.RETRY, "error allocating core memory buffers"),
    23: CodeRule(ExitClass.PARTIAL, "partial transfer due to error"),
    24: CodeRule(ExitClass.PARTIAL, "partial transfer due to vanished source files"),
    25: CodeRule(ExitClass.RETRY, "the --max-delete limit stopped deletions"),
    30: CodeRule(ExitClass.RETRY, "timeout in data send/receive"),
    35: CodeRule(ExitClass.RETRY, "timeout waiting for daemon connection"),
    127: CodeRule(ExitClass.RETRY, "rsync program not found"),
    255: CodeRule(ExitClass.RETRY, "remote shell failed (ssh unreachable?)"),
}


def classify_exit(
    returncode: int, *, timed_out: bool = False, missing: bool = False, fifo_blocked: bool = False
) -> CodeRule:
    """The verdict for one invocation. Anything unknown (signals, new codes)
    is RETRY: never OK without proof, never dead-lettered on a guess."""
    if missing:
        return CodeRule(ExitClass.RETRY, "rsync program could not be started")
    if fifo_blocked:
        return CodeRule(
            ExitClass.RETRY, "rsync waited to open a fifo (a listed file replaced meanwhile); ended"
        )
    if timed_out:
        return CodeRule(ExitClass.RETRY, "rsync timed out and was killed")
    if returncode < 0:
        return CodeRule(ExitClass.RETRY, f"rsync killed by signal {-returncode}")
    return EXIT_CODES.get(returncode, CodeRule(ExitClass.RETRY, f"unknown rsync exit code {returncode}"))


def rsync_escape(name: bytes) -> bytes:
    """A name as rsync prints it in messages: control and non-ASCII bytes,
    and a backslash that would read as an escape, become ``\\#ooo``."""
    out = bytearray()
    for i, b in enumerate(name):
        escape_backslash = b == 0x5C and name[i + 1 : i + 2] == b"#" and name[i + 2 : i + 5].isdigit()
        escape_backslash = escape_backslash and len(name[i + 2 : i + 5]) == 3
        if escape_backslash or (b != 0x09 and (b < 0x20 or b >= 0x7F)):
            out += b"\\#%03o" % b
        else:
            out.append(b)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class PathOutcome:
    """The outcome rsync's output gives one path."""

    outcome: Outcome
    reason: str = ""


_SUMMARY_PREFIXES = (b"rsync error:", b"rsync warning:", b"*** Skipping any contents")
_MAX_LINES = 1000
# errnos that retrying will not heal: the mirror forbids the change (EPERM,
# EACCES), has a non-directory where a path goes through (ENOTDIR), or cannot
# hold the name (ENAMETOOLONG, EILSEQ). They end as dead letters, not retries.
_PERMANENT_ERRNOS = {b"1", b"13", b"20", b"36", b"84"}
_ERRNO_RE = re.compile(rb"\((\d+)\)\Z")  # rsync ends an OS error line with "(errno)"
_PERMANENT_MARKERS = (b"daemon refused to receive",)
_OPENERS = (b'"', b"/", b"(")
_CLOSERS = (b'"', b"/", b")")


def _mentions(line: bytes, needle: bytes) -> bool:
    """True when ``needle`` appears in ``line`` as a whole quoted name or as
    the tail of a quoted path: preceded by a quote, a slash or an opening
    parenthesis (``unlink(NAME) failed``), followed by a quote, a slash or a
    closing one."""
    start = 0
    while (i := line.find(needle, start)) >= 0:
        before = line[i - 1 : i] if i else b""
        after = line[i + len(needle) : i + len(needle) + 1]
        if before in _OPENERS and after in _CLOSERS:
            return True
        start = i + 1
    return False


def _tmp_name(path: bytes) -> bytes:
    """rsync's temp file prefix for ``path``: ``dir/.base.`` (suffix random)."""
    head, _, base = path.rpartition(b"/")
    return (head + b"/" if head else b"") + b"." + base + b"."


def _line_hits(line: bytes, path: bytes) -> bool:
    """Does this error line concern ``path``: the path itself, something under
    it, one of its parents (an implied directory that failed), or its temp file?"""
    if _mentions(line, rsync_escape(path)):
        return True
    parts = path.split(b"/")
    for n in range(1, len(parts)):
        if _mentions(line, rsync_escape(b"/".join(parts[:n]))):
            return True
    return rsync_escape(_tmp_name(path)) in line


def _is_permanent(line: bytes) -> bool:
    """The errno at the end of the line (not a "(1)" inside a quoted name)
    or a daemon refusal says retrying cannot help."""
    m = _ERRNO_RE.search(line)
    return (m is not None and m.group(1) in _PERMANENT_ERRNOS) or any(k in line for k in _PERMANENT_MARKERS)


def _error_lines(stderr: bytes) -> Iterable[bytes]:
    for line in stderr.splitlines():
        line = line.strip()
        if line and not line.startswith(_SUMMARY_PREFIXES):
            yield line


def attribute_errors(paths: Sequence[bytes], stderr: bytes, fallback_reason: str) -> dict[bytes, PathOutcome]:
    """Per-path outcomes for a partial transfer (exit 23/24). Paths named by
    an error line RETRY (or FAIL for permanent name errors); the rest are OK,
    unless some error line names no path at all, then every path RETRYs."""
    lines = list(_error_lines(stderr))
    if len(lines) > _MAX_LINES:  # attribution is lines x paths: past this, just retry all
        reason = f"{fallback_reason}: {len(lines)} error lines"
        return {p: PathOutcome(Outcome.RETRY, reason) for p in paths}
    outcomes = {p: PathOutcome(Outcome.OK) for p in paths}
    for line in lines:
        hit = [p for p in paths if _line_hits(line, p)]
        if not hit:
            reason = f"{fallback_reason}: {line.decode('utf-8', 'backslashreplace')}"
            return {p: PathOutcome(Outcome.RETRY, reason) for p in paths}
        permanent = _is_permanent(line)
        outcome = Outcome.FAILED if permanent else Outcome.RETRY
        for p in hit:
            if outcomes[p].outcome is not Outcome.RETRY:  # RETRY wins over FAILED: it may heal
                outcomes[p] = PathOutcome(outcome, line.decode("utf-8", "backslashreplace"))
    return outcomes


PROBE_FORMAT = "%i|%n"  # itemized flags, a bar, the name: "*deleting  |dir/name" (a directory ends in "/")
_DELETING = b"*deleting"


def deleted_names(paths: Sequence[bytes], stdout: bytes) -> set[bytes] | None:
    """The listed paths a ``--dry-run --out-format=PROBE_FORMAT`` of deletes
    would remove (what is below them is ignored); None when a line is not such
    a deletion of a listed path or of something below one."""
    wanted = {rsync_escape(p): p for p in paths}
    found: set[bytes] = set()
    for line in stdout.split(b"\n"):
        if not line:
            continue
        flags, bar, name = line.partition(b"|")
        if not bar or not flags.startswith(_DELETING):
            return None
        name = name[:-1] if name.endswith(b"/") else name
        if name in wanted:
            found.add(wanted[name])
        elif not _below_any(name, wanted):
            return None
    return found


def _below_any(name: bytes, wanted: Mapping[bytes, bytes]) -> bool:
    """Is some ancestor of ``name`` listed (one lookup per ``/``, since a
    deleted tree prints a line per entry)?"""
    i = name.find(b"/")
    while i > 0:
        if name[:i] in wanted:
            return True
        i = name.find(b"/", i + 1)
    return False
