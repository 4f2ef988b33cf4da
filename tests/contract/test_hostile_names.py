"""Hostile names end to end: never a shell word, never an option, byte-exact.

Every name goes out in one batch together with an ordinary file; transports
that can carry any byte name must replicate each one exactly, the others may
answer FAILED with a reason, but nothing else in the batch may suffer.
"""

from __future__ import annotations

import os

from agent.ship.actions import ActionKind
from agent.ship.base import Outcome
from tests.contract.conftest import Rig
from tests.contract.test_shipper_contract import write
from tests.helpers.trees import snapshot

FLAT_NAMES = [
    b"-rf",
    b"--delete",
    b"a b",
    b"two  spaces",
    b"trailing ",
    b"$(touch pwned)",
    b"`touch pwned`",
    b"x\ny",
    b"\xff\xfe",
    b"tab\there",
    b'quote"d',
    b"back\\#012slash",
    b"c" * 240,
    b"caf\xc3\xa9",  # NFC
    b"cafe\xcc\x81",  # NFD: a different name on Linux
]


def _nested(total: int, tag: bytes) -> bytes:
    """A path of at least ``total`` bytes built from 99-byte components."""
    parts, size = [], 0
    while size < total:
        parts.append(tag + b"%02d" % len(parts) + b"d" * 95)
        size += len(parts[-1]) + 1
    return b"/".join(parts)


NESTED = [_nested(300, b"m"), _nested(3000, b"L")]


def _no_pwned(*roots: object) -> None:
    for root in roots:
        for rel in snapshot(root):
            assert not rel.endswith(b"pwned"), f"a command ran: {rel!r} exists under {root}"


def _check_results(rig: Rig, results, hostile: list[bytes]) -> set[bytes]:
    """Returns the hostile paths the shipper refused (allowed only without exact_names)."""
    refused = set()
    for r in results:
        if r.path == b"plain.txt" or rig.exact_names:
            assert r.outcome is Outcome.OK, r
        elif r.outcome is not Outcome.OK:
            assert r.outcome is Outcome.FAILED and r.reason, r
            refused.add(r.path)
    return refused


def test_hostile_names_replicate(rig: Rig, tmp_path, monkeypatch) -> None:
    """Each hostile name arrives byte-exact (or is refused with a reason), the
    plain file beside them arrives, and no command or option was injected."""
    monkeypatch.chdir(tmp_path)
    for name in FLAT_NAMES:
        write(rig, name, b"content of " + name)
    for path in NESTED:
        write(rig, path, b"deep")
    write(rig, b"plain.txt", b"plain")
    tops = [p.split(b"/")[0] for p in NESTED]
    actions = [rig.action(ActionKind.PUT, n) for n in [*FLAT_NAMES, b"plain.txt"]]
    actions += [rig.action(ActionKind.PUT, t, recursive=True) for t in tops]
    refused = _check_results(rig, rig.ship(*actions), [*FLAT_NAMES, *tops])
    rig.assert_mirrored(exclude=refused)
    _no_pwned(tmp_path, *rig.mirrors)
    assert not os.path.exists(os.path.join(os.getcwd(), "pwned"))

    os.unlink(rig.src(b"-rf"))
    os.rename(rig.src(b"x\ny"), rig.src(b"--delete\nmoved"))
    moved = [
        rig.action(ActionKind.DELETE, b"-rf"),
        rig.action(ActionKind.DELETE, b"x\ny"),
        rig.action(ActionKind.PUT, b"--delete\nmoved"),
    ]
    refused |= _check_results(rig, rig.ship(*moved), [])
    rig.assert_mirrored(exclude=refused)


# Names a list-driven transport could read as something other than a name:
# rsync takes ``#``/``;`` lines of --files-from for comments, a leading
# ``-`` for an option, ``./``-like dots for path syntax.
LIST_SYNTAX_NAMES = [
    b"#index.html#",
    b"#",
    b";",
    b";semi colon",
    b"# spaced #",
    b"#\nnewline",
    b";\xff\xfe",
    b"-",
    b"-dash",
    b".hidden",
    b"..dots",
    b"...",
    b".#lock",
]
LIST_SYNTAX_NESTED = [b"#dir/#inner#", b"#dir/;inner", b";dir/.x/#deep", b"-d/-e"]


def _mirror_bytes(rig: Rig, rel: bytes) -> list[bytes | None]:
    out: list[bytes | None] = []
    for m in rig.mirrors:
        try:
            fd = os.open(os.fsencode(m) + b"/" + rel, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            out.append(None)
            continue
        with os.fdopen(fd, "rb") as f:
            out.append(f.read())
    return out


def _absent(rig: Rig, rel: bytes) -> bool:
    return all(not os.path.lexists(os.fsencode(m) + b"/" + rel) for m in rig.mirrors)


def test_list_syntax_names_put_and_delete(rig: Rig) -> None:
    """Names starting with ``#``, ``;``, ``-`` or dots arrive byte for byte
    when listed one by one, and their deletes remove exactly them; an OK
    result for a name the mirror does not hold fails."""
    paths = [*LIST_SYNTAX_NAMES, *LIST_SYNTAX_NESTED]
    for rel in paths:
        write(rig, rel, b"content of " + rel)
    write(rig, b"plain.txt", b"plain")
    parents = sorted({p[:i] for p in LIST_SYNTAX_NESTED for i in range(len(p)) if p[i : i + 1] == b"/"})
    actions = [rig.action(ActionKind.PUT, p) for p in [*parents, *paths, b"plain.txt"]]
    refused = _check_results(rig, rig.ship(*actions), paths)
    for rel in paths:
        if rel not in refused:
            assert _mirror_bytes(rig, rel) == [b"content of " + rel] * len(rig.mirrors), rel
    rig.assert_mirrored(exclude=refused)

    gone = [p for p in paths if p not in refused]
    for rel in gone:
        os.unlink(rig.src(rel))
    results = rig.ship(*(rig.action(ActionKind.DELETE, p) for p in gone))
    assert all(r.outcome is Outcome.OK for r in results), [r for r in results if r.outcome is not Outcome.OK]
    for rel in gone:
        assert _absent(rig, rel), f"{rel!r} still on the mirror after an OK delete"
    rig.assert_mirrored(exclude=refused)


def test_list_syntax_names_vanished_put_deletes(rig: Rig) -> None:
    """A PUT of such a name that is gone from the source removes it from the mirror."""
    names = [b"#gone#", b";gone", b"-gone"]
    for rel in names:
        write(rig, rel, b"x")
    rig.put_ok(*names)
    rig.assert_mirrored()
    assert all(not _absent(rig, rel) for rel in names)
    for rel in names:
        os.unlink(rig.src(rel))
    rig.put_ok(*names)
    for rel in names:
        assert _absent(rig, rel), rel
    rig.assert_mirrored()
