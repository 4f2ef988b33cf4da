"""Exclude patterns: gitignore-style rules on bytes paths."""

from __future__ import annotations

import fnmatch
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.tree.excludes import Excludes, _required_literal

CASES = [
    # pattern, path, is_dir, expected
    ("*.tmp", b"a.tmp", False, True),
    ("*.tmp", b"x/y/a.tmp", False, True),
    ("*.tmp", b"x/a.tmp/inner", False, True),  # excluded dir excludes its subtree
    ("*.tmp", b"a.tmpx", False, False),
    ("/build", b"build", True, True),
    ("/build", b"build/out.o", False, True),
    ("/build", b"src/build", True, False),
    ("build", b"src/build", True, True),
    ("cache/", b"cache", True, True),
    ("cache/", b"cache", False, False),  # dir-only pattern vs a file
    ("cache/", b"a/cache/f", False, True),
    ("logs/*.gz", b"logs/a.gz", False, True),
    ("logs/*.gz", b"logs/d/a.gz", False, False),  # '*' does not cross '/'
    ("logs/*.gz", b"x/logs/a.gz", False, False),  # inner '/' anchors
    ("logs/**/*.gz", b"logs/a.gz", False, True),
    ("logs/**/*.gz", b"logs/a/b/c.gz", False, True),
    ("**/tmp", b"tmp", True, True),
    ("**/tmp", b"a/b/tmp", True, True),
    ("logs/**", b"logs/a/b", False, True),
    ("logs/**", b"logs", False, False),
    ("a/**/b", b"a/b", True, True),
    ("a/**/b", b"a/x/y/b", True, True),
    ("a/**/b", b"a/x/y/c", True, False),
    ("?.txt", b"a.txt", False, True),
    ("?.txt", b"ab.txt", False, False),
    ("[ab].txt", b"b.txt", False, True),
    ("[!ab].txt", b"b.txt", False, False),
    ("[!ab].txt", b"c.txt", False, True),
    ("*.tmp", b"\xff\xfe.tmp", False, True),  # non-UTF-8 name
    ("*", b"", True, False),  # the root is never excluded
]


@pytest.mark.parametrize(("pattern", "path", "is_dir", "expected"), CASES)
def test_rules(pattern: str, path: bytes, is_dir: bool, expected: bool) -> None:
    """Each documented gitignore-style rule holds on a concrete case."""
    assert Excludes([pattern]).match(path, is_dir) is expected


def test_bool_and_empty_patterns() -> None:
    """An empty set (or only blank patterns) is falsy and matches nothing."""
    assert not Excludes([])
    assert not Excludes(["", "/"])
    assert Excludes(["x"])
    assert not Excludes([]).match(b"anything", False)


def test_negation_is_rejected() -> None:
    """'!' patterns are refused loudly instead of silently excluding more."""
    with pytest.raises(ValueError, match="negation"):
        Excludes(["!keep"])


def test_match_self_ignores_ancestors() -> None:
    """match_self tests only the path itself, for walkers that skip excluded dirs."""
    ex = Excludes(["/build"])
    assert ex.match(b"build/x", False)
    assert not ex.match_self(b"build/x", False)
    assert ex.match_self(b"build", True)


# ---------------------------------------------------------------- properties
name = st.sampled_from([b"a", b"b", b"ab", b"a.c", b"\xff", b"x y", b"-n", b"\n"])
relpath = st.lists(name, min_size=1, max_size=5).map(b"/".join)
seg = st.sampled_from(["a", "b", "*", "?", "a*", "*.c", "**", "[ab]"])
pattern = st.builds(
    lambda lead, segs, trail: lead + "/".join(segs) + trail,
    st.sampled_from(["", "/"]),
    st.lists(seg, min_size=1, max_size=3),
    st.sampled_from(["", "/"]),
)


def _oracle_regex(pat: str) -> tuple[re.Pattern[bytes], bool]:
    """An independent translation of one pattern into a full-path regex."""
    dir_only = pat.endswith("/")
    body = pat.rstrip("/")
    anchored = "/" in body
    segs = [s for s in body.strip("/").split("/") if s]
    out = []
    for i, s in enumerate(segs):
        last = i == len(segs) - 1
        if s == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        piece = re.escape(s).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        piece = piece.replace(r"\[ab\]", "[ab]")
        out.append(piece + ("" if last else "/"))
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(("^" + prefix + "".join(out) + "$").encode(), re.S), dir_only


def _oracle(pat: str, path: bytes, is_dir: bool) -> bool:
    rx, dir_only = _oracle_regex(pat)
    parts = path.split(b"/")
    for i in range(1, len(parts) + 1):
        here_dir = is_dir if i == len(parts) else True
        if dir_only and not here_dir:
            continue
        if rx.match(b"/".join(parts[:i])):
            return True
    return False


@settings(deadline=None)
@given(pattern, relpath, st.booleans())
def test_agrees_with_regex_oracle(pat: str, path: bytes, is_dir: bool) -> None:
    """Matching equals an independent regex translation of the same rules."""
    if not pat.strip("/"):
        return
    assert Excludes([pat]).match(path, is_dir) == _oracle(pat, path, is_dir)


@settings(deadline=None)
@given(st.lists(pattern, max_size=3), relpath, relpath, st.booleans())
def test_excluded_dir_excludes_subtree(pats: list[str], d: bytes, rest: bytes, is_dir: bool) -> None:
    """Whatever is below an excluded directory is excluded too."""
    ex = Excludes(pats)
    if ex.match(d, True):
        assert ex.match(d + b"/" + rest, is_dir)


@settings(deadline=None)
@given(st.lists(pattern, max_size=3), st.lists(pattern, max_size=3), relpath, st.booleans())
def test_union(a: list[str], b: list[str], path: bytes, is_dir: bool) -> None:
    """A set of patterns excludes exactly what any of its patterns excludes."""
    both = Excludes(a + b).match(path, is_dir)
    assert both == (Excludes(a).match(path, is_dir) or Excludes(b).match(path, is_dir))


glob = st.sampled_from(
    ["*.swp", "*~", ".#*", "a*", "*.c", "?", "[ab]", "[!a]*", "x y", "-n", "*\n*", "\xff*"]
)
basename_pattern = st.builds(lambda g, trail: g + trail, glob, st.sampled_from(["", "/"]))


@settings(deadline=None)
@given(st.lists(basename_pattern, max_size=4), name, st.booleans())
def test_combined_basename_regex_agrees_with_fnmatch(pats: list[str], n: bytes, is_dir: bool) -> None:
    """The single regex built from many basename patterns answers what
    fnmatch, pattern by pattern, answers."""
    expected = any(
        fnmatch.fnmatchcase(n, os.fsencode(p.rstrip("/"))) and (is_dir or not p.endswith("/")) for p in pats
    )
    assert Excludes(pats).match_self(b"d/" + n, is_dir) is expected


@settings(deadline=None)
@given(st.lists(st.one_of(pattern, basename_pattern), max_size=4), st.lists(name, max_size=6), st.booleans())
def test_prune_then_child_matcher_equals_match_self(
    pats: list[str], names: list[bytes], is_dir: bool
) -> None:
    """A walker's two steps (prune a listing by name, then check the rest
    after stat with its directory's matcher) exclude exactly what
    match_self excludes."""
    ex = Excludes(pats)
    for parent in (b"", b"a", b"a/b", b"b/a/b"):
        kept = ex.prune_names(list(names))
        check = ex.child_matcher(parent)
        walked = [n for n in kept if not (check is not None and check(n, is_dir))]
        expected = [n for n in names if not ex.match_self(parent + b"/" + n if parent else n, is_dir)]
        assert walked == expected


def test_typed_only_for_dir_only_or_anchored_patterns() -> None:
    """The default patterns need no per-entry check after a listing is pruned."""
    assert not Excludes(["*.swp", "*~", ".#*"]).typed
    assert Excludes(["*.swp", "cache/"]).typed
    assert Excludes(["/build"]).typed
    assert Excludes(["/build", "logs/*.gz"]).child_matcher(b"src/x") is None  # no pattern fits that depth
    assert Excludes(["/build", "logs/*.gz"]).child_matcher(b"src") is None  # nor that parent
    assert Excludes(["a/**/b"]).child_matcher(b"x/y/z") is not None
    assert Excludes(["*.swp", "*~", ".#*"]).prune_names([b"a.swp", b"b", b"c~", b".#d", b"e.swpx"]) == [
        b"b",
        b"e.swpx",
    ]


@settings(deadline=None)
@given(st.text("ab*?[]!.", min_size=1, max_size=6), st.text("ab.[]!*?", max_size=8).map(str.encode))
def test_required_literal_is_in_every_matching_name(glob: str, n: bytes) -> None:
    """The listing pre-check never skips a name the pattern matches."""
    raw = os.fsencode(glob)
    if fnmatch.fnmatchcase(n, raw):
        assert _required_literal(raw) in n


@given(st.lists(st.one_of(pattern, basename_pattern), max_size=4), relpath, st.booleans())
def test_match_is_parent_or_self(pats: list[str], path: bytes, is_dir: bool) -> None:
    """What the watcher relies on (it asks once per parent directory, then
    for the path itself): a path is excluded when its parent directory, as
    a directory with its own ancestors, is, or when the path itself matches."""
    ex = Excludes(pats)
    parent = path.rpartition(b"/")[0]
    by_parent = (bool(parent) and ex.match(parent, True)) or ex.match_self(path, is_dir)
    assert ex.match(path, is_dir) is by_parent


@given(st.lists(st.one_of(pattern, basename_pattern), max_size=4), relpath, st.booleans())
def test_match_self_is_the_last_step_of_match(pats: list[str], path: bytes, is_dir: bool) -> None:
    """match_self answers for the path alone, as match does for its last component."""
    ex = Excludes(pats)
    parts = path.split(b"/")
    assert ex.match_self(path, is_dir) is ex._match_parts(parts, is_dir)
