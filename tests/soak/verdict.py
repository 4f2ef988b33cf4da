"""Does ``agent verify`` agree with the independent comparer, path by path?

verify prints paths in a printable form (the text itself, or its Python
repr when it holds control characters or undecodable bytes); they are
turned back into bytes here so its findings can be matched with the
comparer's. The comparer lists only the top of a missing or extra subtree,
verify may list every path below it: a finding at or below the other
side's path counts as the same difference.
"""

from __future__ import annotations

import ast
import json
import os

from tests.soak.compare import Difference, Node, show

__all__ = ["verify_path", "disagreements"]


def verify_path(text: str) -> bytes:
    if text[:1] in ("'", '"'):
        text = ast.literal_eval(text)
    return os.fsencode(text)


def _at_or_below(path: bytes, tops: set[bytes]) -> bool:
    parts = path.split(b"/")
    return any(b"/".join(parts[:n]) in tops for n in range(1, len(parts) + 1))


def _target(name: str, drift: list[dict], diffs: list[Difference], src: dict[bytes, Node]) -> list[str]:
    said = {verify_path(d["path"]): d.get("why", "") for d in drift}
    found = {d.path for d in diffs}
    out = []
    for path, why in sorted(said.items()):
        if not _at_or_below(path, found) and not any(f.startswith(path + b"/") for f in found):
            kind = src[path].kind if path in src else "absent"
            out.append(f"verify {name}: false drift {show(path)}: {why} (source: {kind})")
    for path in sorted(found):
        if not _at_or_below(path, set(said)) and not any(p.startswith(path + b"/") for p in said):
            out.append(f"verify {name}: missed {show(path)} (the comparer sees it)")
    return out


def disagreements(
    code: int | None, doc: dict, differences: dict[str, list[Difference]], src: dict[bytes, Node]
) -> list[str]:
    """Every way verify's verdict differs from the comparer's (empty when they agree)."""
    found = any(differences.values())
    if code not in (0, 1):
        return [f"verify: exit {code} (error): {json.dumps(doc)[:800]}"]
    out = []
    if (code == 0) == found:
        out.append(f"verify: exit {code} but the comparer found {'differences' if found else 'nothing'}")
    if doc.get("clean") != (code == 0):
        out.append(f"verify: exit {code} but clean={doc.get('clean')}")
    for finding in doc.get("local", []):
        path = verify_path(finding["path"])
        kind = src[path].kind if path in src else "absent"
        out.append(f"verify local audit: {show(path)}: {finding.get('why')} (source: {kind})")
    for name, diffs in differences.items():
        target = doc.get("targets", {}).get(name) or doc.get("targets", {}).get(name.split("/")[0]) or {}
        if target.get("error"):
            out.append(f"verify {name}: error {target['error']}")
        drift = [d for d in target.get("drift", []) if d.get("track", name) == name]
        out += _target(name, drift, diffs, src)
    return out
