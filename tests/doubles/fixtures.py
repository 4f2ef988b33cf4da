"""Set up the msync double: a base dir, member mirror dirs, a state dir and an
executable ``msync`` whose interpreter is this Python (not a PATH lookup).

Layout under ``home``: ``state/``, ``bin/msync``, ``members/<name>/``; the
base is ``home/base`` unless given. Everything the double writes stays
inside ``jail`` (``home`` unless given).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.doubles.double_state import Drops

__all__ = ["MsyncDouble", "make_double", "msync_double", "write_file"]

_REPO = Path(__file__).resolve().parents[2]
_SCRIPT = """#!{python} -I
import sys
sys.path.insert(0, {repo!r})
from tests.doubles.msync_double import main
sys.exit(main())
"""
_BOUND_SCRIPT = """#!{python} -I
import os
import sys
os.environ.setdefault("MSYNC_DOUBLE_STATE", {state!r})
sys.path.insert(0, {repo!r})
from tests.doubles.msync_double import main
sys.exit(main())
"""


@dataclass
class MsyncDouble:
    """A configured double: edit members with ``set_member``, run with ``run``."""

    home: Path
    base: Path
    jail: Path

    @property
    def state(self) -> Path:
        return self.home / "state"

    @property
    def msync(self) -> Path:
        return self.home / "bin" / "msync"

    @property
    def bound_msync(self) -> Path:
        """An ``msync`` that finds its state without ``MSYNC_DOUBLE_STATE``: for
        a real ``agent run``, which gives msync a scrubbed environment."""
        return self.home / "bin" / "msync-bound"

    def env(self) -> dict[str, str]:
        """Extra environment the msync process needs."""
        return {"MSYNC_DOUBLE_STATE": str(self.state)}

    def config(self) -> dict:
        return json.loads((self.state / "config.json").read_text())

    def write_config(self, cfg: dict) -> None:
        tmp = self.state / "config.json.tmp"
        tmp.write_text(json.dumps(cfg, indent=1))
        tmp.replace(self.state / "config.json")

    def update(self, **values: object) -> None:
        cfg = self.config()
        cfg.update(values)
        self.write_config(cfg)

    def set_member(self, name: str, **values: object) -> None:
        cfg = self.config()
        cfg["members"][name].update(values)
        self.write_config(cfg)

    def member_dir(self, name: str) -> Path:
        return Path(self.config()["members"][name]["dir"])

    def member_dirs(self) -> list[Path]:
        return [Path(m["dir"]) for m in self.config()["members"].values()]

    def run(self, *args: str | bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the double like a shell user would, argv only."""
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env(), **(env or {})}
        return subprocess.run(
            [str(self.msync), *args], capture_output=True, env=full_env, timeout=60, check=False
        )

    def _read_log(self, name: str) -> list[list[bytes]]:
        path = self.state / name
        if not path.exists():
            return []
        return [[x.encode("latin-1") for x in json.loads(ln)] for ln in path.read_text().splitlines()]

    def console_lines(self) -> list[bytes]:
        """Every command line the daemon received, in order."""
        return [rec[0] for rec in self._read_log("console.log")]

    def invocations(self) -> list[list[bytes]]:
        """argv (without argv[0]) of every msync run, in order."""
        return self._read_log("invocations.log")

    def spans(self) -> list[tuple[float, float, list[bytes]]]:
        """(start, end, argv) of every finished msync run, wall-clock seconds."""
        return [(float(rec[0]), float(rec[1]), rec[2:]) for rec in self._read_log("spans.log")]

    def drops(self) -> Drops:
        """The sender's dropped members (kept across invocations)."""
        return Drops(self.state, 0.0)

    def dropped(self) -> set[str]:
        path = self.state / "dropped.json"
        return set(json.loads(path.read_text())) if path.exists() else set()

    def model_seconds(self) -> list[float]:
        """What each finished invocation would have cost on a real cluster, in order."""
        return [float(rec[0]) for rec in self._read_log("timing.log")]

    def stalls(self) -> list[tuple[int, bytes, bytes]]:
        """(msync pid, member, path) of every dead-member stall that began."""
        path = self.state / "stalls.log"
        lines = path.read_bytes().splitlines() if path.exists() else []
        return [(int(pid), member, rel) for pid, member, rel in (ln.split(b" ", 2) for ln in lines)]

    def outside_chmods(self) -> list[bytes]:
        path = self.state / "chmod_outside.log"
        return path.read_bytes().splitlines() if path.exists() else []


def make_double(
    home: Path,
    *,
    base: Path | None = None,
    members: Sequence[str] = ("mk2", "mk3"),
    listening: Sequence[str] = ("tcp:127.0.0.1:5000",),
    password: str | None = None,
    jail: Path | None = None,
) -> MsyncDouble:
    """Create the state, the ``msync`` executable and one mirror dir per member."""
    home.mkdir(parents=True, exist_ok=True)
    base = base or home / "base"
    base.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "bin", "members"):
        (home / sub).mkdir(exist_ok=True)
    dbl = MsyncDouble(home=home, base=base, jail=jail or home)
    script = _SCRIPT.format(python=sys.executable, repo=str(_REPO))
    dbl.msync.write_text(script)
    dbl.msync.chmod(0o755)
    dbl.bound_msync.write_text(
        _BOUND_SCRIPT.format(python=sys.executable, repo=str(_REPO), state=str(dbl.state))
    )
    dbl.bound_msync.chmod(0o755)
    cfg_members = {}
    for i, name in enumerate(members):
        mdir = home / "members" / name
        mdir.mkdir(exist_ok=True)
        cfg_members[name] = {"dir": str(mdir), "ip": f"10.77.0.{i + 2}", "state": "up", "timeout_after": 0}
    dbl.write_config(
        {
            "base": str(base),
            "jail": str(dbl.jail),
            "listening": list(listening),
            "password": password,
            "timeout_delay": 0.0,
            "time_scale": 0.0,
            "members": cfg_members,
        }
    )
    return dbl


@pytest.fixture
def msync_double(tmp_path: Path) -> Iterator[MsyncDouble]:
    """A double with two members, mk2 and mk3, both up; base is ``tmp_path/dbl/base``."""
    yield make_double(tmp_path / "dbl")


def write_file(path: Path, data: bytes, mtime: int | None = None) -> Path:
    """Write ``data`` to ``path`` (parents made), optionally with an mtime in seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path
