"""The running agent's runtime.json (agent/operate/runtime.py): one typed
record, one writer (``to_json``) and one reader (``from_json``) that takes
files of older versions."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from agent.operate.runtime import (
    FAILING_LISTED,
    FailingPaths,
    Rates,
    Runtime,
    TargetCounters,
    failing_paths,
    failing_reasons,
    read_runtime,
    write_runtime,
)

FULL = Runtime(
    pid=4242,
    started_ns=1,
    updated_ns=2,
    events_in=7,
    entries_journaled=6,
    overflows=1,
    targets={"local": TargetCounters(shipped_ok=4, retries=1, failures=0)},
    rates=Rates(in_per_s=2.5, out_per_s=1.5),
    failing={"local": FailingPaths({b"bad\xff/\n x": ("target down: EPERM", 3)}, more=2)},
)


def test_a_runtime_survives_its_file_byte_exact() -> None:
    """What the agent writes is what status and verify read, non-UTF-8 paths included."""
    assert Runtime.from_json(FULL.to_json()) == FULL


def test_the_file_keeps_its_keys() -> None:
    """The JSON document has the keys older readers (and operators' scripts) know."""
    doc = json.loads(FULL.to_json())
    assert doc["pid"] == 4242 and doc["entries_journaled"] == 6 and doc["overflows"] == 1
    assert doc["targets"] == {"local": {"shipped_ok": 4, "retries": 1, "failures": 0}}
    assert doc["rates"] == {"in_per_s": 2.5, "out_per_s": 1.5}
    assert doc["failing"]["local"]["more"] == 2
    assert [os.fsencode(p) for p, _, _ in doc["failing"]["local"]["paths"]] == [b"bad\xff/\n x"]


def test_an_older_file_without_fields_is_read() -> None:
    """A file from a version that wrote fewer fields reads with defaults;
    a part of the wrong shape is dropped, not fatal."""
    old = {"pid": 7, "updated_ns": 5, "targets": {"t": {"shipped_ok": 3}, "u": "junk"}}
    runtime = Runtime.from_json(json.dumps(old))
    assert runtime.pid == 7 and runtime.updated_ns == 5 and runtime.overflows == 0
    assert runtime.targets == {"t": TargetCounters(shipped_ok=3)}
    assert runtime.rates is None and runtime.failing == {}
    odd = {"pid": "x", "failing": {"v": {"paths": "garbage"}, "w": {"paths": [["p", "why", 1]]}}}
    runtime = Runtime.from_json(json.dumps(odd))
    assert runtime.pid is None and failing_reasons(runtime) == {"w": ({b"p": "why"}, 0)}
    with pytest.raises(ValueError):
        Runtime.from_json("[1, 2]")


def test_failing_paths_are_listed_up_to_the_cap() -> None:
    """Past the listing cap failing paths are only counted; verify reads
    the listed ones with their last error."""
    table = {("t", b"x"): ("target down", 3)}
    table.update({("u", b"f%d" % i): ("refused", 1) for i in range(FAILING_LISTED + 2)})
    failing = failing_paths(table)
    assert failing["t"] == FailingPaths({b"x": ("target down", 3)})
    assert len(failing["u"].paths) == FAILING_LISTED and failing["u"].more == 2
    reasons = failing_reasons(Runtime(pid=1, failing=failing))
    assert reasons["t"] == ({b"x": "target down"}, 0) and reasons["u"][1] == 2
    assert failing_reasons(None) == {}


def test_the_file_is_private_and_replaced(tmp_path: Path) -> None:
    """0600 whatever the umask; an unreadable file reads as none."""
    write_runtime(tmp_path, FULL)
    assert stat.S_IMODE(os.stat(tmp_path / "runtime.json").st_mode) == 0o600
    assert read_runtime(tmp_path) == FULL
    (tmp_path / "runtime.json").write_text("{not json")
    assert read_runtime(tmp_path) is None
