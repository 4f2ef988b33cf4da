"""The msync double reproduces docs/msync.md, quirks included; each test cites its section."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from tests.doubles.double_daemon import tokenize
from tests.doubles.fixtures import MsyncDouble, make_double, write_file


def test_version(msync_double: MsyncDouble) -> None:
    """docs/msync.md intro: ``msync -V`` prints the version."""
    r = msync_double.run("-V")
    assert (r.returncode, r.stdout) == (0, b"msync version 1.3.6 (CLI for makuosan)\n")


def test_members_lists_up_members_only(msync_double: MsyncDouble) -> None:
    """§6/§7: --members prints NAME IP (Ver1.3.6) lines and a total; down members are absent."""
    msync_double.set_member("mk3", state="down")
    r = msync_double.run("--members")
    assert r.stdout.splitlines() == [b"mk2 10.77.0.2 (Ver1.3.6)", b"Total: 1 members"]


def test_send_updates_members_at_v(msync_double: MsyncDouble) -> None:
    """§4/§5: send copies content, mode and whole-second mtime; -v prints update HOST:P."""
    src = write_file(msync_double.base / "d/f.txt", b"hello", mtime=1_700_000_000)
    src.chmod(0o640)
    r = msync_double.run("-v", "d/f.txt")
    assert r.returncode == 0 and sorted(r.stdout.splitlines()) == [
        b"update mk2:d/f.txt",
        b"update mk3:d/f.txt",
    ]
    for m in msync_double.member_dirs():
        st = (m / "d/f.txt").stat()
        assert (m / "d/f.txt").read_bytes() == b"hello"
        assert (stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (0o640, 1_700_000_000)
        assert stat.S_IMODE((m / "d").stat().st_mode) == 0o755  # parents made 0755 (§5)


def test_skip_at_level_2_and_silence_at_level_0(msync_double: MsyncDouble) -> None:
    """§6: an unchanged file gives ``skip   HOST:P`` at -l 2 and nothing at level 0."""
    write_file(msync_double.base / "f", b"x", mtime=1_700_000_000)
    assert msync_double.run("f").stdout == b""
    r = msync_double.run("-l", "2", "--sync", "f")
    assert sorted(r.stdout.splitlines()) == [b"skip   mk2:f", b"skip   mk3:f"]


def test_same_second_same_size_rewrite_is_lost(msync_double: MsyncDouble) -> None:
    """§5: statcmp never compares content: a same-second same-size rewrite stays unsent; --check sees NG."""
    f = write_file(msync_double.base / "c/same.txt", b"AAAA\n", mtime=1_700_000_000)
    msync_double.run("c/same.txt")
    write_file(f, b"BBBB\n", mtime=1_700_000_000)
    r = msync_double.run("-v", "c/same.txt")
    assert r.stdout == b"" and r.stderr == b""
    assert (msync_double.member_dir("mk2") / "c/same.txt").read_bytes() == b"AAAA\n"
    chk = msync_double.run("--check", "c/same.txt")
    assert sorted(chk.stdout.splitlines()) == [b"mk2: NG c/same.txt", b"mk3: NG c/same.txt"]


def test_check_ok_and_missing(msync_double: MsyncDouble) -> None:
    """§6: --check prints HOST: OK P at -v and error: No such file or directory HOST:P."""
    write_file(msync_double.base / "k", b"k")
    msync_double.run("-t", "mk2", "k")
    r = msync_double.run("-v", "--check", "k")
    assert r.stdout == b"mk2: OK k\n" and r.stderr == b"error: No such file or directory mk3:k\n"


def test_unescaped_space_sends_last_word(msync_double: MsyncDouble) -> None:
    """§3: the daemon tokenises on spaces; the last word is the path."""
    write_file(msync_double.base / "n/with space.txt", b"s")
    r = msync_double.run("n/with space.txt")
    assert (r.returncode, r.stderr) == (0, b"error: No such file or directory space.txt\n")
    r = msync_double.run("-v", "n/with\\ space.txt")
    assert b"update mk2:n/with space.txt" in r.stdout


def test_tokenize_rules() -> None:
    """§2/§3: backslash-space joins, double and leading spaces work, a trailing space cannot."""
    assert tokenize(b"send two\\ \\ spaces") == [b"send", b"two  spaces"]
    assert tokenize(b"send \\ lead") == [b"send", b" lead"]
    assert tokenize(b"send trail\\ ") == [b"send", b"trail\\"]
    assert tokenize(b"a b c d e f g h i j") == [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"]


def test_leading_dash_is_an_option(msync_double: MsyncDouble) -> None:
    """§3: a path starting with '-' becomes a daemon option; -n alone prints the send help."""
    write_file(msync_double.base / "-dash.txt", b"d")
    r = msync_double.run("--", "-dash.txt")
    assert (r.returncode, r.stdout) == (0, b"invalid option -- d\n")
    r = msync_double.run("--", "-n")
    assert r.returncode == 0 and r.stdout.startswith(b"send [-n] [-r] [-t host] [path]\n")
    r = msync_double.run("-v", "./-dash.txt")
    assert (msync_double.member_dir("mk2") / "-dash.txt").read_bytes() == b"d"


def test_top_level_dash_r_sends_whole_base(msync_double: MsyncDouble) -> None:
    """§3: a top-level name '-r' becomes ``send -r``, a send of the whole base."""
    write_file(msync_double.base / "other", b"o")
    msync_double.run("--", "-r")
    assert (msync_double.member_dir("mk3") / "other").read_bytes() == b"o"


def test_carriage_return_truncates(msync_double: MsyncDouble) -> None:
    """§3: \\r truncates the name."""
    r = msync_double.run(b"n/cr\rname")
    assert (r.returncode, r.stderr) == (0, b"error: No such file or directory n/cr\n")


def test_newline_desyncs(msync_double: MsyncDouble) -> None:
    """§3/§6: \\n splits the line: the second half runs as a command, quit error?!, rc 1."""
    r = msync_double.run(b"x\nname", "after")
    assert r.returncode == 1 and b"mexec: command error 'name'" in r.stdout
    assert r.stderr.endswith(b"quit error?!\n")
    assert all(b"after" not in ln for ln in msync_double.console_lines())


def test_command_length_limit(msync_double: MsyncDouble) -> None:
    """§3: "<cmd> PATH" up to 254 bytes: 249 for sync, 242 with -t mk2; later paths not processed."""
    ok, bad = "a" * 240 + "/" + "b" * 8, "a" * 240 + "/" + "b" * 9  # 249 and 250 bytes
    write_file(msync_double.base / ok, b"1")
    write_file(msync_double.base / bad, b"2")
    write_file(msync_double.base / "z2", b"3")
    assert msync_double.run("--sync", ok).returncode == 0
    r = msync_double.run("--sync", bad, "z2")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        b"error: command too long",
        b"error: makuosan socket error. (sync " + bad.encode() + b")",
    ]
    assert not (msync_double.member_dir("mk2") / "z2").exists()
    assert msync_double.run("-t", "mk2", "--sync", "a" * 242).returncode == 0
    assert msync_double.run("-t", "mk2", "--sync", "a" * 243).returncode == 1


def test_component_over_240_bytes_fails_on_members(msync_double: MsyncDouble) -> None:
    """§3: members fail names over 240 bytes with File name too long, rc 0."""
    write_file(msync_double.base / ("c" * 240), b"ok")
    write_file(msync_double.base / ("c" * 241), b"no")
    assert msync_double.run("c" * 240).stderr == b""
    r = msync_double.run("c" * 241)
    assert r.returncode == 0 and sorted(r.stderr.splitlines()) == [
        b"error: File name too long mk2:" + b"c" * 241,
        b"error: File name too long mk3:" + b"c" * 241,
    ]


def test_absolute_path_lands_under_base(msync_double: MsyncDouble) -> None:
    """§3: an absolute path is written on members as BASE/abs/path."""
    f = write_file(msync_double.base / "abs.txt", b"a")
    msync_double.run(str(f))
    assert (msync_double.member_dir("mk2") / str(f).lstrip("/")).read_bytes() == b"a"


def test_dotdot_escapes_the_base(msync_double: MsyncDouble) -> None:
    """§3: ``..`` writes outside the base on every member (kept inside the test dir)."""
    write_file(msync_double.home / "evil.txt", b"e")
    msync_double.run("../evil.txt")
    assert (msync_double.home / "members" / "evil.txt").read_bytes() == b"e"


def test_sync_missing_deletes_recursively_and_sync_r_does_not(msync_double: MsyncDouble) -> None:
    """§4: --sync of a missing path deletes it on members (delete HOST:P at -v); --sync -r does not."""
    write_file(msync_double.base / "t/a/b", b"b")
    msync_double.run("-r", "t")
    (msync_double.base / "t/a/b").unlink()
    (msync_double.base / "t/a").rmdir()
    r = msync_double.run("--sync", "-r", "t/a")
    assert r.stderr == b"error: No such file or directory t/a\n"
    assert (msync_double.member_dir("mk2") / "t/a/b").exists()
    r = msync_double.run("-v", "--sync", "t/a")
    assert sorted(r.stdout.splitlines()) == [b"delete mk2:t/a", b"delete mk3:t/a"]
    assert not (msync_double.member_dir("mk3") / "t/a").exists()


def test_send_missing_is_an_error_line_rc0(msync_double: MsyncDouble) -> None:
    """§4/§6: send of a missing path: error: No such file or directory P, rc 0, nothing deleted."""
    r = msync_double.run("nope")
    assert (r.returncode, r.stderr) == (0, b"error: No such file or directory nope\n")


def test_dryrun_lists_members_that_still_have_it(msync_double: MsyncDouble) -> None:
    """§4: ``-n -v --sync P`` with P missing lists exactly the members that still have P."""
    write_file(msync_double.member_dir("mk3") / "old", b"o")
    r = msync_double.run("-n", "-v", "--sync", "old")
    assert r.stdout == b"(dryrun) delete mk3:old\n"
    assert msync_double.run("-n", "--sync", "old").stdout == b"(dryrun) [delete:old]\n"
    assert (msync_double.member_dir("mk3") / "old").exists()


def test_delete_removes_direct_children_only(msync_double: MsyncDouble) -> None:
    """§4: --delete P removes P's direct children that the sender lacks; -r the subtree."""
    write_file(msync_double.base / "tree3/sub1/keep", b"k")
    msync_double.run("-r", "tree3")
    for m in msync_double.member_dirs():
        write_file(m / "tree3/extra", b"x")
        write_file(m / "tree3/sub1/sub2/deep", b"x")
    r = msync_double.run("-v", "--delete", "tree3")
    assert b"delete mk2:tree3/extra" in r.stdout
    m2 = msync_double.member_dir("mk2")
    assert not (m2 / "tree3/extra").exists() and (m2 / "tree3/sub1/sub2").exists()
    msync_double.run("--delete", "-r")
    assert not (m2 / "tree3/sub1/sub2").exists() and (m2 / "tree3/sub1/keep").exists()


def test_symlink_send_chmods_target(msync_double: MsyncDouble) -> None:
    """§5: sending a symlink chmods its target to 0777 on members; the link is verbatim."""
    f = write_file(msync_double.base / "c/own.txt", b"o")
    f.chmod(0o644)
    msync_double.run("c/own.txt")
    os.symlink("own.txt", msync_double.base / "c/sym")
    msync_double.run("c/sym")
    m2 = msync_double.member_dir("mk2")
    assert os.readlink(m2 / "c/sym") == "own.txt"
    assert stat.S_IMODE((m2 / "c/own.txt").stat().st_mode) == 0o777


def test_non_dir_to_dir_fails(msync_double: MsyncDouble) -> None:
    """§5: a member holding a file where a directory goes answers error: File exists HOST:P."""
    write_file(msync_double.member_dir("mk2") / "p", b"file")
    (msync_double.base / "p").mkdir()
    r = msync_double.run("p")
    assert r.returncode == 0 and r.stderr == b"error: File exists mk2:p\n"


def test_down_member_is_skipped_silently(msync_double: MsyncDouble) -> None:
    """§6: members missing from the list are not sent to, and nothing is said."""
    msync_double.set_member("mk3", state="absent")
    write_file(msync_double.base / "down2.txt", b"d")
    r = msync_double.run("-v", "down2.txt")
    assert (r.stdout, r.stderr) == (b"update mk2:down2.txt\n", b"")


def test_timeout_drops_member_for_the_rest(msync_double: MsyncDouble) -> None:
    """§6/§7: a dead member gives receive time out lines and is then skipped silently."""
    msync_double.set_member("mk3", state="timeout", timeout_after=1)
    for n in ("a", "b", "c"):
        write_file(msync_double.base / n, n.encode())
    r = msync_double.run("-v", "a", "b", "c")
    assert r.returncode == 0
    assert r.stderr.splitlines() == [
        b"error: receive time out: send b",
        b"error: receive time out: 10.77.0.3(mk3)",
    ]
    assert sorted(r.stdout.splitlines()[:2]) == [b"update mk2:a", b"update mk3:a"]
    assert r.stdout.splitlines()[2:] == [b"update mk2:b", b"update mk2:c"]


def test_unknown_target_host(msync_double: MsyncDouble) -> None:
    """§4: -t with an unknown host prints HOST is not contained in members on stdout, rc 0."""
    write_file(msync_double.base / "f", b"f")
    r = msync_double.run("-t", "mk9", "f")
    assert (r.returncode, r.stdout) == (0, b"mk9 is not contained in members\n")


def test_connect_and_password(tmp_path: Path) -> None:
    """§6: no daemon at the target: can't connect, rc 1; a wrong -K password: remote socket close."""
    dbl = make_double(tmp_path / "d", listening=["unix:/run/mk.sock"], password="s3cret")
    write_file(dbl.base / "f", b"f")
    r = dbl.run("f")
    assert (r.returncode, r.stderr) == (1, b"can't connect tcp:127.0.0.1:5000\n")
    key = write_file(tmp_path / "key", b"wrong\n")
    r = dbl.run("-c", "unix:/run/mk.sock", "-K", str(key), "f")
    assert (r.returncode, r.stderr) == (1, b"remote socket close\n")
    key.write_bytes(b"s3cret\n")
    r = dbl.run("-v", "-K", str(key), "f", env={"MSYNC_TARGET": "unix:/run/mk.sock"})
    assert (r.returncode, r.stdout.count(b"update")) == (0, 2)


@pytest.mark.parametrize("args", [["--bogus"], [], ["--delete", "--members"]])
def test_usage_errors(msync_double: MsyncDouble, args: list[str]) -> None:
    """§6: usage errors print usage on stdout with rc 1."""
    r = msync_double.run(*args)
    assert r.returncode == 1 and r.stdout.startswith(b"usage: msync")


def test_timeout_delay_is_configurable(msync_double: MsyncDouble) -> None:
    """§7: the 60 s wait is simulated; an optional delay stands in for it."""
    msync_double.set_member("mk2", state="timeout")
    msync_double.update(timeout_delay=0.2)
    write_file(msync_double.base / "f", b"f")
    start = time.monotonic()
    r = msync_double.run("f")
    assert b"receive time out" in r.stderr and time.monotonic() - start >= 0.2


def test_failed_sync_delete_is_silent_but_delete_reports(msync_double: MsyncDouble) -> None:
    """§6: a --sync delete failing on a member (chattr +i) says nothing; --delete prints delete error."""
    for m in msync_double.member_dirs():
        write_file(m / "d/locked", b"l")
    (msync_double.base / "d").mkdir()
    msync_double.set_member("mk3", immutable=["d/locked"])
    r = msync_double.run("-v", "--sync", "d/locked")
    assert (r.stdout, r.stderr) == (b"delete mk2:d/locked\n", b"")
    assert msync_double.run("-n", "-v", "--sync", "d/locked").stdout == b"(dryrun) delete mk3:d/locked\n"
    r = msync_double.run("--delete", "d")
    assert r.stdout == b"delete error (Operation not permitted) mk3:d/locked\n"


def test_exclude_applies_to_walks_and_dsync_only(msync_double: MsyncDouble) -> None:
    """§4: --exclude skips entries in -r walks and dsync; a named path is sent anyway."""
    write_file(msync_double.base / "w/keep", b"k")
    write_file(msync_double.base / "w/x.swp", b"s")
    msync_double.run("--exclude=*.swp", "-r", "w")
    m2 = msync_double.member_dir("mk2")
    assert (m2 / "w/keep").exists() and not (m2 / "w/x.swp").exists()
    msync_double.run("--exclude=*.swp", "w/x.swp")
    assert (m2 / "w/x.swp").read_bytes() == b"s"
    write_file(m2 / "w/extra.swp", b"e")
    msync_double.run("--exclude=*.swp", "--delete", "w")
    assert (m2 / "w/extra.swp").exists()


def test_readonly_member_accepts_nothing_silently(msync_double: MsyncDouble) -> None:
    """§6 silent failure 4: a makuosan -r receiver takes nothing; skipro shows only at -l 3."""
    msync_double.set_member("mk3", state="readonly")
    write_file(msync_double.base / "f", b"f")
    assert msync_double.run("-v", "f").stdout == b"update mk2:f\n"
    assert b"skipro mk3:f" in msync_double.run("-l", "3", "f").stdout
    assert not (msync_double.member_dir("mk3") / "f").exists()


def test_update_is_not_a_completion_receipt(msync_double: MsyncDouble) -> None:
    """§6: a member may agree (update HOST:P) and then time out during the transfer."""
    msync_double.set_member("mk3", state="timeout", update_then_timeout=True)
    write_file(msync_double.base / "big.bin", b"b")
    r = msync_double.run("-v", "big.bin")
    assert b"update mk3:big.bin" in r.stdout and b"receive time out: 10.77.0.3(mk3)" in r.stderr
    assert not (msync_double.member_dir("mk3") / "big.bin").exists()


def test_member_listed_without_name(msync_double: MsyncDouble) -> None:
    """§7: a member re-added by a stray ack is listed with an empty name; -t cannot reach it."""
    msync_double.set_member("mk3", state="noname")
    write_file(msync_double.base / "f", b"f")
    assert b"    10.77.0.3 (Ver1.3.6)" in msync_double.run("--members").stdout.splitlines()
    assert b"update :f" in msync_double.run("-v", "f").stdout
    assert msync_double.run("-t", "mk3", "f").stdout == b"mk3 is not contained in members\n"


def test_newline_in_tree_aborts_recursive_part_way(msync_double: MsyncDouble) -> None:
    """§3: a name with a newline aborts ``msync -r`` of a tree part way through, rc 1."""
    write_file(msync_double.base / "t/a", b"a")
    write_file(msync_double.base / "t/b\nc", b"x")
    write_file(msync_double.base / "t/z", b"z")
    order = os.listdir(msync_double.base / "t")  # the walk follows directory-read order
    r = msync_double.run("-r", "t")
    assert r.returncode == 1
    m2 = msync_double.member_dir("mk2")
    before, after = order[: order.index("b\nc")], order[order.index("b\nc") + 1 :]
    assert all((m2 / "t" / n).exists() for n in before)
    assert not any((m2 / "t" / n).exists() for n in after)


def test_cant_send_server(msync_double: MsyncDouble) -> None:
    """§6: a makuosan -s daemon answers error: this server can't send, rc 0."""
    msync_double.update(cant_send=True)
    write_file(msync_double.base / "f", b"f")
    r = msync_double.run("f")
    assert (r.returncode, r.stderr) == (0, b"error: this server can't send\n")


def test_recursive_does_not_enter_directories_with_spaces(msync_double: MsyncDouble) -> None:
    """makuosan's -r scanner tests the space-escaped name for being a directory:
    a directory whose name holds a space is sent as an entry, never entered."""
    write_file(msync_double.base / "top/sp dir/child", b"c")
    write_file(msync_double.base / "top/plain/a b", b"f")
    r = msync_double.run("-l", "2", "-r", "top")
    assert r.returncode == 0 and r.stderr == b""
    m2 = msync_double.member_dir("mk2")
    assert (m2 / "top/sp dir").is_dir() and not (m2 / "top/sp dir/child").exists()
    assert (m2 / "top/plain/a b").read_bytes() == b"f"


def test_recursive_root_with_space_is_resplit_at_the_end(msync_double: MsyncDouble) -> None:
    """The scanner sends the -r root last as given: the daemon splits it again."""
    write_file(msync_double.base / "sp dir/child", b"c")
    r = msync_double.run("-l", "2", "-r", "sp\\ dir")
    assert b"update mk2:sp dir/child" in r.stdout
    assert r.stderr == b"error: No such file or directory dir\n"


def test_dsync_reports_every_delete_post_order_at_level_0(msync_double: MsyncDouble) -> None:
    """dsync deletes print at every level; with -r each entry of a removed subtree
    is reported, children first; without -r a removed child once."""
    for m in ("mk2", "mk3"):
        write_file(msync_double.member_dir(m) / "t/gone/deep/f", b"x")
    (msync_double.base / "t").mkdir()
    r = msync_double.run("-r", "--delete", "-t", "mk2", "t")
    assert r.stdout.splitlines() == [
        b"delete mk2:t/gone/deep/f",
        b"delete mk2:t/gone/deep",
        b"delete mk2:t/gone",
    ]
    r = msync_double.run("--delete", "-t", "mk3", "t")
    assert r.stdout.splitlines() == [b"delete mk3:t/gone"]


def test_dryrun_skip_lines_are_marked(msync_double: MsyncDouble) -> None:
    """At -l 2 a dry run prints ``(dryrun) skip   HOST:P`` for up-to-date entries."""
    write_file(msync_double.base / "f", b"f", mtime=1_600_000_000)
    msync_double.run("f")
    r = msync_double.run("-n", "-l", "2", "-t", "mk2", "f")
    assert r.stdout == b"(dryrun) skip   mk2:f\n"


def test_non_directory_parent_is_replaced(msync_double: MsyncDouble) -> None:
    """A member replaces a non-directory parent of an entry it receives (mcreatedir)."""
    write_file(msync_double.member_dir("mk2") / "p", b"file")
    write_file(msync_double.base / "p/inner", b"i")
    r = msync_double.run("-l", "2", "-t", "mk2", "p/inner", "p")
    assert r.returncode == 0 and r.stderr == b""
    assert (msync_double.member_dir("mk2") / "p/inner").read_bytes() == b"i"
