"""What "the mirror holds the source" means in the multi-host tests.

rsync carries content, kind, mode, symlink targets, ownership (numeric ids)
and file mtimes, so all of these are compared. Directory mtimes are not: a
directory's mtime moves on the mirror whenever an entry in it is added or
removed, after the directory itself was shipped. The roots are not compared
(their attributes belong to the test's temp dirs). Symlink mtimes are not
kept by rsync through a daemon, so they are not compared either.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.trees import diff_trees

__all__ = ["tree_diff", "trees_equal"]

_POLICY = {"mtime": True, "dir_mtime": False, "link_mtime": False, "owner": True}


def tree_diff(src: Path, dst: Path) -> list[str]:
    """Human-readable differences, empty when ``dst`` holds exactly ``src``."""
    return diff_trees(src, dst, **_POLICY)


def trees_equal(src: Path, dst: Path) -> bool:
    """Race-tolerant predicate for polling: a path vanishing mid-walk means "not yet"."""
    try:
        return not tree_diff(src, dst)
    except (FileNotFoundError, NotADirectoryError):
        return False
