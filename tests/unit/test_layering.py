"""Imports go one way along the data's path: the journal knows nothing of the
agent; the tree helpers know no stage; watch, scan and ship meet only in the
journal; none of them reads the operator's configuration (the shippers take
typed settings, agent/ship/targets.py); the planner loads no I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# package -> the agent packages it may import (besides itself, agent.errors and journal)
ALLOWED = {
    "tree": set(),
    "watch": {"tree"},
    "scan": {"tree"},
    "ship": {"tree"},
}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, only for type checking) of every ``from ... import``."""
    tree = ast.parse(path.read_text())
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            typing_only.update(id(n) for n in ast.walk(node))
    return [
        (node.module, id(node) in typing_only)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    ]


def test_the_journal_imports_nothing_of_the_agent() -> None:
    for path in (REPO / "journal").rglob("*.py"):
        assert not [m for m, _ in _imports(path) if m.split(".")[0] == "agent"], path


def test_stage_packages_import_only_downward() -> None:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in (REPO / "agent" / package).rglob("*.py"):
            for module, typing_only in _imports(path):
                parts = module.split(".")
                if parts[0] != "agent" or typing_only or len(parts) < 2:
                    continue
                if parts[1] not in {package, "errors", *allowed}:
                    bad.append(f"{path.relative_to(REPO)} imports {module}")
    assert not bad, bad


def test_the_planner_loads_no_io() -> None:
    code = "import sys, agent.ship.planner; print('lmdb' in sys.modules, 'journal.store' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"]
