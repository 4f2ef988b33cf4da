"""The manifest is shared by every track; each state remembers the newest
entry it was recorded from, so a track settling an old removal never makes
the manifest forget what another track shipped from a newer entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from journal import FileKind, FileState, Journal

STATE = FileState(FileKind.FILE, 9, 0o644, 1, 2, 10**18, 10**18 + 5, 77, b"d" * 32, b"")
NEWER = FileState(FileKind.FILE, 10, 0o644, 1, 2, 10**18 + 1, 10**18 + 6, 78, b"e" * 32, b"")
DIR = FileState(FileKind.DIR, 0, 0o755, 0, 0, 10**18, 10**18, 5, b"", b"")
LONG = b"X/" + b"l" * 600  # a hashed key: cleared by the pass over long paths


@pytest.fixture
def journal(tmp_path: Path):
    with Journal.open(tmp_path / "j", root="/r", tracks=["early", "late"]) as j:
        yield j


def test_a_removal_from_an_older_entry_keeps_a_newer_state(journal: Journal) -> None:
    journal.mark_done(
        "early", [], {b"X": DIR, b"X/y": STATE, LONG: STATE}, origin={b"X": 2, b"X/y": 3, LONG: 3}
    )
    journal.mark_done("late", [], {}, cleared={b"X": 1})
    assert journal.manifest_get(b"X/y") == STATE and journal.manifest_get(LONG) == STATE
    journal.mark_done("late", [], {b"X/y": None}, origin={b"X/y": 1})
    assert journal.manifest_get(b"X/y") == STATE, "a removal from entry 1 keeps what entry 3 recorded"
    journal.mark_done("late", [], {b"X/y": None}, origin={b"X/y": 3})
    assert journal.manifest_get(b"X/y") == STATE, "the same entry finding it gone proves nothing newer"


def test_a_removal_from_a_newer_entry_drops_it(journal: Journal) -> None:
    journal.mark_done(
        "early", [], {b"X/y": STATE, b"X/z": STATE, LONG: STATE}, origin={b"X/y": 3, b"X/z": 3, LONG: 3}
    )
    journal.mark_done("late", [], {b"X/y": None}, origin={b"X/y": 4})
    assert journal.manifest_get(b"X/y") is None
    journal.mark_done("late", [], {}, cleared={b"X": 4})
    assert journal.manifest_get(b"X/z") is None and journal.manifest_get(LONG) is None
    journal.mark_done("early", [], {b"X/y": NEWER}, origin={b"X/y": 5})
    journal.mark_done("late", [], {b"X/y": None}, origin={b"X/y": 4})
    assert journal.manifest_get(b"X/y") == NEWER, "a state put again forgot nothing of its newer origin"


def test_a_state_keeps_the_newest_origin_it_had(journal: Journal) -> None:
    """A slow track shipping an old entry again records the current state,
    but must not lower the entry it is known from."""
    journal.mark_done("early", [], {b"p": STATE}, origin={b"p": 7})
    journal.mark_done("late", [], {b"p": NEWER}, origin={b"p": 2})
    journal.mark_done("late", [], {b"p": None}, origin={b"p": 5})
    assert journal.manifest_get(b"p") == NEWER


def test_without_origins_removals_are_unconditional(journal: Journal) -> None:
    """A baseline and callers that know the tree (no origin) behave as before."""
    journal.mark_done("early", [], {b"X/y": STATE, b"q": STATE}, origin={b"X/y": 9, b"q": 9})
    journal.mark_done("late", [], {b"q": None})
    journal.mark_done("late", [], {}, cleared=[b"X"])
    assert journal.manifest_get(b"q") is None and journal.manifest_get(b"X/y") is None


@pytest.mark.parametrize("path", [b"A/B/y", b"A/B/" + b"l" * 600])
def test_nested_removals_drop_what_the_outer_one_covers(journal: Journal, path: bytes) -> None:
    """A state below two removed trees goes when either removal is newer
    than its origin, for a path stored as a key and for a hashed long one."""
    journal.mark_done("early", [], {path: STATE}, origin={path: 3})
    journal.mark_done("late", [], {}, cleared={b"A/B": 1, b"A": 9})
    assert journal.manifest_get(path) is None
