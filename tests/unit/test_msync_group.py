"""Whole planned directories go out as one ``-l 2 -r`` send (msync_group),
and no member is ever marked done for a path it did not acknowledge."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.operate.config import MsyncTarget
from agent.ship.actions import Action, ActionKind
from agent.ship.base import Outcome
from agent.ship.msync.group import Candidate, Cover, find_groups, list_dir
from tests.doubles.fixtures import make_double
from tests.unit.test_msync_shipper import OLD, Rig, mirrored, put, write


@pytest.fixture(name="rig")
def _rig(tmp_path: Path) -> Rig:
    root = tmp_path / "root"
    root.mkdir()
    dbl = make_double(tmp_path / "dbl", base=root, jail=tmp_path)
    target = MsyncTarget(name="c", members=("mk2", "mk3"), msync=str(dbl.msync), base=root, batch=50)
    return Rig(root, dbl, target)


# ---------------------------------------------------------------------------- pure decision
TREE = {
    b"r": [(b"a", "file"), (b"b", "file"), (b"s", "dir")],
    b"r/s": [(b"c", "file")],
    b"q": [(b"x", "file"), (b"y", "file")],
}


def listdir(tree: dict[bytes, list[tuple[bytes, str]]]):
    return lambda rel, most=None: tree.get(rel)


def cands(*paths: bytes, key: object = None, dirs: tuple[bytes, ...] = ()) -> dict[bytes, Candidate]:
    return {p: Candidate(p in dirs, key) for p in paths}


def never(rel: bytes, is_dir: bool) -> bool:
    return False


def planned(groups: dict[bytes, Cover]) -> dict[bytes, list[bytes]]:
    return {d: c.planned for d, c in groups.items()}


def test_a_wholly_planned_tree_is_one_group() -> None:
    c = cands(b"r", b"r/a", b"r/b", b"r/s", b"r/s/c", dirs=(b"r", b"r/s"))
    got = find_groups(c, listdir(TREE), never)
    assert list(got) == [b"r"]
    assert sorted(got[b"r"].planned) == sorted(c) and got[b"r"].unplanned == []


def test_unplanned_settled_files_go_along_up_to_as_many_as_planned() -> None:
    c = cands(b"r/a", b"r/s", b"r/s/c", dirs=(b"r/s",))  # r/b is not planned
    got = find_groups(c, listdir(TREE), never)
    assert {d: (sorted(g.planned), g.unplanned) for d, g in got.items()} == {
        b"r": (sorted([b"r/a", b"r/s", b"r/s/c"]), [b"r/b"])
    }
    tree = {b"q": [(b"x", "file"), (b"y", "file"), (b"z", "file"), (b"w", "file")]}
    assert planned(find_groups(cands(b"q/x", b"q/y"), listdir(tree), never)) == {b"q": [b"q/x", b"q/y"]}
    tree[b"q"].append((b"v", "file"))  # three unplanned for two planned: sent one by one
    assert find_groups(cands(b"q/x", b"q/y"), listdir(tree), never) == {}


def test_an_unplanned_subdirectory_or_fresh_file_keeps_its_directory_out() -> None:
    tree = {**TREE, b"q": [(b"x", "file"), (b"y", "file"), (b"sub", "dir")], b"q/sub": []}
    assert find_groups(cands(b"q/x", b"q/y"), listdir(tree), never) == {}
    tree = {**TREE, b"q": [(b"x", "file"), (b"y", "file"), (b"now", "fresh")]}
    assert find_groups(cands(b"q/x", b"q/y"), listdir(tree), never) == {}
    tree = {**TREE, b"q": [(b"x", "file"), (b"y", "file"), (b"a\nb", "file")]}
    assert find_groups(cands(b"q/x", b"q/y"), listdir(tree), never) == {}


def test_the_directory_itself_need_not_be_planned() -> None:
    c = cands(b"q/x", b"q/y")
    assert planned(find_groups(c, listdir(TREE), never)) == {b"q": [b"q/x", b"q/y"]}


def test_a_symlink_special_or_mount_point_inside_keeps_it_out() -> None:
    tree = {**TREE, b"q": [(b"x", "file"), (b"y", "file"), (b"l", "other")]}
    assert find_groups(cands(b"q/x", b"q/y"), listdir(tree), never) == {}


def test_entries_for_other_members_never_share_a_send() -> None:
    c = {b"q/x": Candidate(False, None), b"q/y": Candidate(False, (b"mk3",))}
    assert find_groups(c, listdir(TREE), never) == {}


def test_excluded_entries_need_no_plan() -> None:
    tree = {**TREE, b"q": [(b"x", "file"), (b"y", "file"), (b"y.tmp", "file")]}
    excluded = lambda rel, is_dir: rel.endswith(b".tmp")  # noqa: E731
    assert planned(find_groups(cands(b"q/x", b"q/y"), listdir(tree), excluded)) == {b"q": [b"q/x", b"q/y"]}


def test_unreadable_directory_space_in_name_and_too_small_are_not_grouped() -> None:
    assert find_groups(cands(b"gone/x", b"gone/y"), listdir(TREE), never) == {}
    tree = {b"a b": [(b"x", "file"), (b"y", "file")]}
    assert find_groups(cands(b"a b/x", b"a b/y"), listdir(tree), never) == {}
    assert (
        find_groups(cands(b"q/x", b"q/y"), listdir({b"q": [(b"x", "file"), (b"y", "file")]}), never, 3) == {}
    )


def test_a_directory_is_read_knowing_how_many_entries_a_cover_allows() -> None:
    """A directory can be carried only if its entries are its planned files,
    its covered subdirectories and at most as many unplanned files as all
    the planned paths below it: ``listdir`` gets that bound, so a directory
    holding one planned file among many need not be read in full."""
    tree = {b"r": [(b"a", "file"), (b"s", "dir"), (b"u", "file")], b"r/s": [(b"c", "file")]}
    asked: dict[bytes, int | None] = {}

    def spy(rel: bytes, most: int | None = None):
        asked[rel] = most
        return tree.get(rel)

    find_groups(cands(b"r/a", b"r/s/c"), spy, never)
    assert asked == {b"r/s": 2, b"r": 1 + 1 + 2}


def test_list_dir_gives_up_on_more_entries_than_allowed(tmp_path: Path) -> None:
    for n in ("a", "b", "c"):
        write(tmp_path, b"d/" + n.encode(), b"x")
    root, dev = os.fsencode(tmp_path), os.stat(tmp_path).st_dev
    assert list_dir(root, b"d", dev, 0.0, most=2) is None
    assert sorted(list_dir(root, b"d", dev, 0.0, most=3)) == [(b"a", "file"), (b"b", "file"), (b"c", "file")]


# ---------------------------------------------------------------------------- against the double
def burst(rig: Rig, top: bytes = b"rel", dirs: int = 3, per: int = 4) -> list[Action]:
    """A new tree: ``top/dN/fM``; actions as the planner gives them (parents first)."""
    actions = [put(top)]
    for d in range(dirs):
        actions.append(put(b"%s/d%d" % (top, d)))
        for f in range(per):
            write(rig.root, b"%s/d%d/f%d" % (top, d, f), b"x" * (d + f))
    for d in range(dirs):
        actions += [put(b"%s/d%d/f%d" % (top, d, f)) for f in range(per)]
    for dirpath, _, _ in os.walk(os.path.join(os.fsencode(rig.root), top)):
        os.utime(dirpath, (OLD, OLD))
    return actions


def sends(rig: Rig) -> list[bytes]:
    return [ln for ln in rig.dbl.console_lines() if ln.startswith((b"send", b"sync", b"dsync"))]


def test_a_new_tree_goes_out_as_one_recursive_send_with_acks_per_member(rig: Rig) -> None:
    actions = burst(rig)
    res = rig.ship(*actions)
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    assert set(res) == {(t, a.path) for a in actions for t in ("c/mk2", "c/mk3")}
    assert [ln for ln in sends(rig) if b"-r" in ln] == [b"send -r rel"]
    assert not [ln for ln in sends(rig) if ln.startswith(b"sync") and b"/f" in ln]
    assert all(mirrored(rig, a.path) for a in actions)
    assert any(b"-l" in argv and b"2" in argv and b"-r" in argv for argv in rig.dbl.invocations())


def test_a_tree_with_too_many_unplanned_files_is_sent_path_by_path(rig: Rig) -> None:
    actions = burst(rig)
    for i in range(6):  # more than the four files and the directory planned
        write(rig.root, b"rel/d0/unplanned%d" % i, b"u")
    res = rig.ship(*actions)
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    assert b"send -r rel" not in sends(rig)
    assert b"send -r rel/d1" in sends(rig)  # the other directories still go whole
    assert not (rig.dbl.member_dir("mk2") / "rel/d0/unplanned0").exists()


def test_unplanned_files_sent_along_are_never_checked_nor_judged(rig: Rig) -> None:
    """A file -r sends along that a member skips with other content (a
    same-size rewrite with its mtime kept) is not the plan's business: no
    --check, no verdict; the planned paths are done."""
    actions = burst(rig, per=6)
    write(rig.root, b"rel/d0/other", b"first")
    assert {r.outcome for r in rig.ship(*actions, put(b"rel/d0/other")).values()} == {Outcome.OK}
    write(rig.root, b"rel/d0/other", b"OTHER")  # same size, same mtime: members skip it
    before = len(rig.dbl.invocations())
    res = rig.ship(*[a for a in actions if a.path.startswith(b"rel/d0/")])
    assert set(res) == {
        (t, a.path) for a in actions if a.path.startswith(b"rel/d0/") for t in ("c/mk2", "c/mk3")
    }
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    assert b"send -r rel/d0" in sends(rig)
    checked = [p for a in rig.dbl.invocations()[before:] if b"--check" in a for p in a]
    assert b"rel/d0/f1" in checked and b"rel/d0/other" not in checked


def test_grouped_paths_for_an_absent_member_stay_pending(rig: Rig) -> None:
    rig.dbl.set_member("mk3", state="down")
    res = rig.ship(*burst(rig))
    assert {r.outcome for (t, _), r in res.items() if t == "c/mk3"} == {Outcome.RETRY}
    assert {r.outcome for (t, _), r in res.items() if t == "c/mk2"} == {Outcome.OK}


def test_grouped_paths_for_a_read_only_member_stay_pending(rig: Rig) -> None:
    rig.dbl.set_member("mk3", state="readonly")
    res = rig.ship(*burst(rig))
    assert {r.outcome for (t, _), r in res.items() if t == "c/mk3"} == {Outcome.RETRY}
    assert {r.outcome for (t, _), r in res.items() if t == "c/mk2"} == {Outcome.OK}


def test_a_member_timing_out_during_a_group_has_nothing_done(rig: Rig) -> None:
    rig.dbl.set_member("mk3", state="timeout", timeout_after=3)
    res = rig.ship(*burst(rig))
    assert {r.outcome for (t, _), r in res.items() if t == "c/mk3"} == {Outcome.RETRY}
    assert {r.outcome for (t, _), r in res.items() if t == "c/mk2"} == {Outcome.OK}


def test_a_same_size_rewrite_inside_a_group_is_never_done(rig: Rig) -> None:
    actions = burst(rig)
    assert {r.outcome for r in rig.ship(*actions).values()} == {Outcome.OK}
    write(rig.root, b"rel/d1/f2", b"Y" * 3)  # same size, same (old) mtime: members skip it
    res = rig.ship(*actions)
    assert {r.outcome for (_, p), r in res.items() if p == b"rel/d1/f2"} == {Outcome.FAILED}
    assert {r.outcome for (_, p), r in res.items() if p != b"rel/d1/f2"} == {Outcome.OK}


def test_a_catch_up_group_goes_with_t(rig: Rig) -> None:
    actions = burst(rig)
    mk3 = frozenset({"c/mk3"})
    res = rig.ship(*[Action(ActionKind.PUT, a.path, tracks=mk3) for a in actions])
    assert set(res) == {("c/mk3", a.path) for a in actions}
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    assert b"send -r -t mk3 rel" in sends(rig)
    assert not (rig.dbl.member_dir("mk2") / "rel").exists()


def test_a_symlink_inside_keeps_the_tree_out_of_a_group(rig: Rig, tmp_path: Path) -> None:
    actions = burst(rig)
    link = os.path.join(os.fsencode(rig.root), b"rel/d2/link")
    os.symlink(b"f0", link)
    os.utime(link, (OLD, OLD), follow_symlinks=False)
    res = rig.ship(*actions, put(b"rel/d2/link"))
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    assert b"send -r rel" not in sends(rig) and b"send -r rel/d2" not in sends(rig)
    assert b"send -r rel/d0" in sends(rig)


def test_parent_directories_are_settled_in_parallel_chunks_per_depth(rig: Rig) -> None:
    """One file rewritten in each of many directories: the directories are
    sent again afterwards (members renamed into them) in up to
    ``concurrency`` silent calls per depth, deepest depth first."""
    actions = []
    for d in range(200):
        write(rig.root, b"top/d%03d/f0" % d, b"v1")
        write(rig.root, b"top/d%03d/f1" % d, b"other")
        actions.append(put(b"top/d%03d/f0" % d))
    for dirpath, _, _ in os.walk(os.path.join(os.fsencode(rig.root), b"top")):
        os.utime(dirpath, (OLD, OLD))
    before = len(rig.dbl.invocations())
    res = rig.ship(*actions, shipper=rig.shipper(batch=500, concurrency=4))
    assert {r.outcome for r in res.values()} == {Outcome.OK}
    settles = [a for a in rig.dbl.invocations()[before:] if a[:2] == [b"-l", b"0"]]
    sizes = sorted(len(a) - a.index(b"--") - 1 for a in settles)
    assert sizes == [1, 50, 50, 50, 50], sizes  # 200 directories in 4 calls, then "top"
    assert settles[-1][-1] == b"top"
    assert all(mirrored(rig, b"top/d%03d" % d) for d in range(200))


def test_restamp_levels_keep_depths_apart_deepest_first() -> None:
    """Each depth is one round of up to ``concurrency`` calls of even size,
    at least ``RESTAMP_CHUNK`` directories each: no round waits behind a
    half-empty one."""
    from agent.ship.msync.jobs import restamp_levels

    deep = [b"a/b/c%03d" % i for i in range(120)]
    mid = [b"a/b", b"a/x"]
    levels = restamp_levels([*deep, *mid, b"a"], concurrency=4)
    assert [[len(c) for c in lv] for lv in levels] == [[60, 60], [2], [1]]
    assert levels[1] == [mid] and levels[2] == [[b"a"]]
    assert [[len(c) for c in lv] for lv in restamp_levels(deep * 20, concurrency=4)] == [[600] * 4]
    assert [[len(c) for c in lv] for lv in restamp_levels(deep, concurrency=2)] == [[60, 60]]
