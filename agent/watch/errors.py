"""Errors of the watcher, in the operator's terms: a root that is gone, and
inotify limits with the sysctl that raises them."""

from __future__ import annotations

from pathlib import Path

from agent.errors import AgentError

__all__ = ["RootError", "WatchLimitError", "NoSpace", "read_limit", "read_int"]


class RootError(AgentError):
    """The watched root is missing, not a directory, unreadable, or went away."""

    hint = "check --root; when the root was removed or unmounted, restore it and restart the agent"


class WatchLimitError(AgentError):
    """The kernel refused more inotify watches or instances."""

    def __init__(self, message: str, *, sysctl: str, current: int | None, needed: int | None) -> None:
        super().__init__(
            message,
            hint=f"raise it, e.g. 'sysctl -w {sysctl}=N' with N above {needed or 'the number needed'}"
            " (persist it in /etc/sysctl.d/), then restart the agent",
        )
        self.sysctl, self.current, self.needed = sysctl, current, needed


class NoSpace(Exception):
    """inotify_add_watch said ENOSPC: the watch limit, turned into WatchLimitError above."""


def read_limit(kind: str) -> tuple[str, int | None]:
    """The effective inotify limit (``watches`` or ``instances``) and the sysctl
    that sets it: the per-namespace ``user.`` limit when it is the lower one."""
    candidates = [
        (f"fs.inotify.max_user_{kind}", f"/proc/sys/fs/inotify/max_user_{kind}"),
        (f"user.max_inotify_{kind}", f"/proc/sys/user/max_inotify_{kind}"),
    ]
    found = [(v, name) for name, proc in candidates if (v := read_int(proc)) is not None]
    if not found:
        return candidates[0][0], None
    value, name = min(found)
    return name, value


def read_int(proc_path: str) -> int | None:
    try:
        return int(Path(proc_path).read_text().strip())
    except (OSError, ValueError):
        return None
