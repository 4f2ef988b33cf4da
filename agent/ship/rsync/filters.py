"""The agent's exclude patterns as rsync filter rules.

rsync matches patterns much as the agent does (``*``, ``?`` and ``[...]``
stay within a name; a trailing ``/`` means directories only; a pattern
without ``/`` matches a name at any depth), with two differences this
module translates away:

- the agent anchors a pattern with an inner ``/`` at the root, rsync
  matches it at any depth: the rule gets a leading ``/``;
- the agent's ``**`` segment matches zero or more whole directories, rsync's
  ``**`` matches one or more characters including ``/`` but never nothing:
  every ``**`` segment that is not the last is written once present and
  once absent (``a/**/b`` -> ``/a/**/b`` and ``/a/b``).

Excluded entries are neither sent nor, on the receiver, deleted (rsync
protects excluded paths from ``--delete``): a mirror keeps what it holds at
an excluded path, as the local shipper does.
"""

from __future__ import annotations

import itertools

from agent.tree.excludes import Excludes

__all__ = ["exclude_args", "exclude_rules"]

_GLOBSTAR = b"**"
_WILD = (b"*", b"?", b"[")


def _segment(seg: bytes) -> bytes:
    """rsync reads a backslash as an escape only in a pattern with a
    wildcard; the agent's patterns never escape (fnmatch semantics)."""
    if b"\\" in seg and any(w in seg for w in _WILD):
        return seg.replace(b"\\", b"\\\\")
    return seg


def _variants(segments: tuple[bytes, ...]) -> list[tuple[bytes, ...]]:
    """Each non-final ``**`` segment present or absent."""
    optional = [i for i, s in enumerate(segments) if s == _GLOBSTAR and i < len(segments) - 1]
    out = []
    for dropped in itertools.product((False, True), repeat=len(optional)):
        gone = {i for i, d in zip(optional, dropped) if d}
        out.append(tuple(s for i, s in enumerate(segments) if i not in gone))
    return out


def exclude_rules(excludes: Excludes) -> list[bytes]:
    """rsync patterns (for ``--exclude=``) excluding what ``excludes`` excludes."""
    rules: list[bytes] = []
    for rule in excludes.rules:
        tail = b"/" if rule.dir_only else b""
        if not rule.anchored:
            rules.append(_segment(rule.segments[0]) + tail)
            continue
        for segments in _variants(rule.segments):
            if segments:
                rules.append(b"/" + b"/".join(_segment(s) for s in segments) + tail)
    return list(dict.fromkeys(rules))


def exclude_args(excludes: Excludes) -> list[bytes]:
    return [b"--exclude=" + r for r in exclude_rules(excludes)]
