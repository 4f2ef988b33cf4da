"""Mirror audits for ``agent verify``: each backend audits its own mirrors
(agent/ship/local/audit.py, rsync/audit.py, msync/audit.py); this picks the
one for a target."""

from __future__ import annotations

import os
from collections.abc import Sequence

from agent.ship.findings import AuditError, Finding
from agent.ship.local.audit import compare_trees
from agent.ship.msync.audit import audit_msync, parse_msync_check, parse_msync_dryrun
from agent.ship.rsync.audit import audit_rsync, classify_item, literal_rule, parse_itemized
from agent.ship.targets import LocalTarget, RsyncTarget, TargetConfig
from agent.tree.excludes import Excludes

__all__ = [
    "Finding",
    "AuditError",
    "compare_trees",
    "classify_item",
    "literal_rule",
    "parse_itemized",
    "parse_msync_check",
    "parse_msync_dryrun",
    "audit_rsync",
    "audit_msync",
    "audit_target",
]


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
