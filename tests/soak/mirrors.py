"""The mirrors a soak run keeps: a local directory, an rsync daemon module on
loopback and, optionally, one member of the msync double.

Each is named by its progress track (``local``, ``rsync``, ``cluster/mk2``)
with the directory the comparer reads and whether the target keeps mtimes
in whole seconds only (rsync and msync) or in nanoseconds (local).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.doubles.fixtures import make_double
from tests.fixtures.rsyncd import RsyncDaemon, start_rsyncd

__all__ = ["Mirrors", "start_mirrors"]

MEMBER = "mk2"
_REPO = Path(__file__).resolve().parents[2]
# the agent gives msync a scrubbed environment: the wrapper names the double's state itself
_WRAPPER = """#!{python} -I
import os, sys
os.environ["MSYNC_DOUBLE_STATE"] = {state!r}
sys.path.insert(0, {repo!r})
from tests.doubles.msync_double import main
sys.exit(main())
"""


@dataclass
class Mirrors:
    flags: list[str]  # what every agent command gets
    dirs: dict[str, tuple[Path, bool]]  # track -> (directory, whole seconds only)
    daemon: RsyncDaemon | None = None

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def start_mirrors(work: Path, src: Path, journal: Path, msync: bool) -> Mirrors:
    """Make the mirror directories and start the rsync daemon (the caller stops it)."""
    local, module = work / "local", work / "rsync"
    local.mkdir()
    module.mkdir()
    daemon = start_rsyncd(work / "rsyncd", module)
    dirs = {"local": (local, False), "rsync": (module, True)}
    targets = [("local", "local", {"path": str(local)}), ("rsync", "rsync", {"dest": daemon.url})]
    if msync:
        dbl = make_double(work / "msync", base=src, members=(MEMBER,))
        wrapper = dbl.home / "bin" / "msync-soak"
        wrapper.write_text(_WRAPPER.format(python=sys.executable, state=str(dbl.state), repo=str(_REPO)))
        wrapper.chmod(0o755)
        targets.append(("cluster", "msync", {"members": [MEMBER], "msync": str(wrapper)}))
        dirs[f"cluster/{MEMBER}"] = (dbl.member_dir(MEMBER), True)
    lines = [f"root = {_toml(str(src))}", f"journal = {_toml(str(journal))}"]
    for name, kind, options in targets:
        lines += ["", "[[target]]", f"name = {_toml(name)}", f"kind = {_toml(kind)}"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    config = work / "agent.toml"
    config.write_text("\n".join(lines) + "\n")
    return Mirrors(["--config", str(config)], dirs, daemon)
