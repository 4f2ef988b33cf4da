"""Read-only commands given only ``--journal`` (and the targets): the journal
records its root; a ``--root`` that disagrees with it stays an error."""

from __future__ import annotations

import json

from tests.cli.conftest import Site, agent


def test_read_only_commands_take_the_root_from_the_journal(site: Site) -> None:
    """verify, replay --dry-run, dead and status work without --root and see
    the journal's root; verify still finds a damaged mirror."""
    site.journal_tree()
    site.ship_all()
    flags = ["--journal", str(site.journal), "--target", f"local:{site.mirror}"]
    res = agent("verify", "--json", *flags)
    assert res.returncode == 0, res.stdout + res.stderr
    (site.mirror / "index.html").write_bytes(b"damaged\n")
    res = agent("verify", *flags)
    assert res.returncode == 1 and b"index.html" in res.stdout, res.stdout + res.stderr
    res = agent("replay", "--since", "1h", "--dry-run", *flags)
    assert res.returncode == 0 and b"index.html" in res.stdout, res.stderr
    res = agent("dead", "--json", *flags)
    assert res.returncode == 0 and json.loads(res.stdout) == {"dead_letters": []}, res.stderr
    res = agent("status", "--json", *flags)
    assert res.returncode == 0, res.stderr


def test_a_root_that_disagrees_with_the_journal_is_refused(site: Site, tmp_path) -> None:
    """--root must name the journal's own root; nothing is written."""
    site.journal_tree()
    other = tmp_path / "other"
    other.mkdir()
    before = (site.journal / "data.mdb").read_bytes()
    res = agent(
        "verify", "--root", str(other), "--journal", str(site.journal), "--target", f"local:{site.mirror}"
    )
    assert res.returncode == 2 and b"belongs to root" in res.stderr, res.stderr
    assert (site.journal / "data.mdb").read_bytes() == before


def test_no_journal_and_no_root_is_a_clear_error(tmp_path) -> None:
    """Without --root and without a journal to read it from: exit 2, hint."""
    res = agent("verify", "--journal", str(tmp_path / "none"), "--target", f"local:{tmp_path}")
    assert res.returncode == 2
    assert b"error: root: missing" in res.stderr and b"hint:" in res.stderr
