from agent.watch.vanished import VanishedDirs


def test_paths_are_taken_and_forgotten_by_subtree() -> None:
    v = VanishedDirs(10)
    for p in (b"a/b", b"a/b/c", b"a-b", b"x"):
        assert v.add(p)
    assert v.take_under(b"a") == [b"a/b", b"a/b/c"]
    v.forget(b"a-b")
    assert v.take_under(b"") == [b"x"]
    assert len(v) == 0


def test_a_full_set_refuses_and_empties() -> None:
    v = VanishedDirs(2)
    assert v.add(b"a") and v.add(b"b")
    assert not v.add(b"c")
    assert len(v) == 0
