"""Configuration: the TOML file, quick flags, and every way it can be wrong."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.operate.config import (
    ConfigError,
    LocalTarget,
    MsyncTarget,
    RsyncTarget,
    load_config,
    tracks_of,
)
from agent.operate.config_values import parse_duration
from tests.cli.conftest import AGENT, agent

EXAMPLE = Path(__file__).parents[2] / "ops" / "agent.toml.example"


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "www").mkdir(exist_ok=True)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'root = "{tmp_path}/www"\njournal = "{tmp_path}/j"\n' + body)
    return cfg


def test_full_file_parses(tmp_path: Path) -> None:
    """Every documented key is read into its typed field."""
    cfg = write(
        tmp_path,
        """
exclude = ["*.swp", "cache/"]
settle_ms = 150
quiet_ms = 30
retention = "12h"
log_level = "DEBUG"
metrics_port = 9465
metrics_address = "0.0.0.0"
rescan_interval = "6h"
max_attempts = 3
retry_max = "2m"
scan_helpers = 2

[[target]]
name = "cluster"
kind = "msync"
members = ["web2", "web3"]
console = "unix:/run/makuosan.sock"
password_file = "/etc/makuosan/console.key"
msync = "/usr/local/bin/msync"
base = "www"
batch = 50
concurrency = 2
timeout = "90s"
console_relay = false

[[target]]
name = "dr"
kind = "rsync"
dest = "rsync://backup/www/"
options = ["--password-file=/etc/rs.pw"]

[[target]]
name = "copy"
kind = "local"
path = "mirror"
""",
    )
    c = load_config(cfg, {})
    assert c.root == tmp_path / "www" and c.journal == tmp_path / "j"
    assert (c.exclude, c.settle_ms, c.quiet_ms, c.retention_s, c.log_level) == (
        ("*.swp", "cache/"),
        150,
        30,
        43200.0,
        "debug",
    )
    assert (c.metrics_port, c.metrics_address, c.rescan_interval_s) == (9465, "0.0.0.0", 21600.0)
    assert (c.max_attempts, c.retry_max_s, c.scan_helpers) == (3, 120.0, 2)
    cluster, dr, copy = c.targets
    assert cluster == MsyncTarget(
        name="cluster",
        members=("web2", "web3"),
        console="unix:/run/makuosan.sock",
        password_file=Path("/etc/makuosan/console.key"),
        msync="/usr/local/bin/msync",
        base=tmp_path / "www",
        batch=50,
        concurrency=2,
        timeout_s=90.0,
        console_relay=False,
    )
    assert dr == RsyncTarget(name="dr", dest="rsync://backup/www/", options=("--password-file=/etc/rs.pw",))
    assert copy == LocalTarget(name="copy", path=tmp_path / "mirror")
    assert tracks_of(cluster) == ("cluster/web2", "cluster/web3")


def test_example_file_is_valid(tmp_path: Path) -> None:
    """ops/agent.toml.example parses (with its root pointed at a real directory)."""
    text = EXAMPLE.read_text().replace('"/var/www"', f'"{tmp_path}"', 1)
    text = text.replace('"/var/lib/msync-agent"', f'"{tmp_path}-journal"', 1)
    cfg = tmp_path.parent / f"{tmp_path.name}.toml"
    cfg.write_text(text)
    c = load_config(cfg, {})
    assert {t.kind for t in c.targets} == {"msync", "rsync", "local"}


def test_flags_override_file(tmp_path: Path) -> None:
    """Quick flags replace the file's values; spec names get -2, -3 suffixes."""
    cfg = write(tmp_path, 'exclude = ["*.tmp"]\n[[target]]\nname = "x"\nkind = "local"\npath = "/m"\n')
    other = tmp_path / "other"
    other.mkdir()
    c = load_config(
        cfg,
        {
            "root": str(other),
            "targets": ["local:/a", "local:/b", "rsync:host:/x", "msync", "msync:unix:/s", "local:/c"],
            "exclude": ["*.bak"],
            "log_level": "warning",
        },
    )
    assert c.root == other and c.exclude == ("*.bak",) and c.log_level == "warning"
    assert [t.name for t in c.targets] == ["local", "local-2", "rsync", "msync", "msync-2", "local-3"]
    assert c.targets[4] == MsyncTarget(name="msync-2", console="unix:/s")
    assert c.targets[2] == RsyncTarget(name="rsync", dest="host:/x")


def test_flags_alone_without_default_file(tmp_path: Path) -> None:
    """--root and --journal suffice when no config file exists anywhere."""
    (tmp_path / "r").mkdir()
    c = load_config(None, {"root": str(tmp_path / "r"), "journal": str(tmp_path / "j")})
    assert c.targets == () and c.retention_s == 7 * 86400


BAD_CASES = {
    "unknown top key": ('colour = "red"\n', "colour"),
    "wrong type": ('settle_ms = "fast"\n', "settle_ms"),
    "bool for int": ("max_attempts = true\n", "max_attempts"),
    "bad retention": ('retention = "7 days"\n', "retention"),
    "negative retention": ("retention = -5\n", "retention"),
    "bad log level": ('log_level = "loud"\n', "log_level"),
    "port range": ("metrics_port = 70000\n", "metrics_port"),
    "too many scan helpers": ("scan_helpers = 64\n", "scan_helpers"),
    "exclude not list": ('exclude = "*.swp"\n', "exclude"),
    "exclude negation": ('exclude = ["!keep"]\n', "exclude"),
    "unknown target key": ('[[target]]\nname = "a"\nkind = "local"\npath = "/m"\nspeed = 3\n', "speed"),
    "bad kind": ('[[target]]\nname = "a"\nkind = "ftp"\n', "kind"),
    "missing name": ('[[target]]\nkind = "local"\npath = "/m"\n', "name"),
    "missing path": ('[[target]]\nname = "a"\nkind = "local"\n', "path"),
    "slash in name": ('[[target]]\nname = "a/b"\nkind = "msync"\n', "name"),
    "members not strings": ('[[target]]\nname = "a"\nkind = "msync"\nmembers = [1]\n', "members"),
    "duplicate names": (
        '[[target]]\nname = "a"\nkind = "local"\npath = "/m"\n[[target]]\nname = "a"\nkind = "msync"\n',
        "name",
    ),
    "bad toml": ("root = \n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_config_names_the_key(tmp_path: Path, case: str) -> None:
    """Each invalid setting raises ConfigError naming the offending key."""
    body, key = BAD_CASES[case]
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, body), {})


def test_bad_paths(tmp_path: Path) -> None:
    """Missing root, root inside journal and journal inside root are refused."""
    (tmp_path / "r" / "j").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"root: .* does not exist"):
        load_config(None, {"root": str(tmp_path / "nope"), "journal": str(tmp_path / "j")})
    with pytest.raises(ConfigError, match=r"journal: .* inside the watched root"):
        load_config(None, {"root": str(tmp_path / "r"), "journal": str(tmp_path / "r" / "j")})
    with pytest.raises(ConfigError, match=r"root: .* inside the journal"):
        load_config(None, {"root": str(tmp_path / "r" / "j"), "journal": str(tmp_path / "r")})
    with pytest.raises(ConfigError, match="root: missing"):
        cfg = tmp_path / "noroot.toml"
        cfg.write_text(f'journal = "{tmp_path}/j"\n')
        load_config(cfg, {})


@pytest.mark.parametrize("spec", ["ftp:/x", "local:", "rsync:", "local"])
def test_bad_target_spec(tmp_path: Path, spec: str) -> None:
    """A malformed --target spec is a ConfigError with a usage hint."""
    (tmp_path / "r").mkdir()
    with pytest.raises(ConfigError, match="--target") as info:
        load_config(None, {"root": str(tmp_path / "r"), "journal": str(tmp_path / "j"), "targets": [spec]})
    assert "local:PATH" in info.value.hint


def test_cli_reports_config_error_exit_2(tmp_path: Path) -> None:
    """The CLI prints 'error:' and 'hint:' on stderr and exits 2."""
    cfg = write(tmp_path, 'retention = "forever"\n')
    res = agent("status", "--config", cfg)
    assert res.returncode == 2
    err = res.stderr.decode()
    assert err.startswith("error: retention:") and "\nhint: " in err
    res = agent("status", env={"AGENT_CONFIG": str(tmp_path / "missing.toml")})
    assert res.returncode == 2 and b"missing.toml does not exist" in res.stderr


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["", "s", "m", "h", "d", "w"]))
def test_parse_duration_units(n: int, unit: str) -> None:
    """'<n><unit>' is n times the unit in seconds; a bare number is seconds."""
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{n}{unit}", "k") == n * factor
    assert parse_duration(n, "k") == n


@given(st.text(st.characters(blacklist_categories=("Nd",)), min_size=1))
def test_parse_duration_rejects_garbage(text: str) -> None:
    """Anything else is a ConfigError naming the key."""
    with pytest.raises(ConfigError, match=r"^retention"):
        parse_duration(text, "retention")


def test_env_config_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AGENT_CONFIG names the file when --config is absent."""
    monkeypatch.setenv("AGENT_CONFIG", str(write(tmp_path, "settle_ms = 5\n")))
    assert load_config(None, {}).settle_ms == 5


def _tree(top: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every entry below ``top`` (type, size, content or link), links not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if os.path.islink(full):
                out[full] = ("link", 0, os.fsencode(os.readlink(full)))
            elif os.path.isdir(full):
                out[full] = ("dir", 0, b"")
            else:
                with open(full, "rb") as f:
                    out[full] = ("file", st.st_size, f.read())
    return out


def _overlap_site(tmp_path: Path) -> Path:
    site = tmp_path / "srv"
    (site / "www" / "sub").mkdir(parents=True)
    (site / "www" / "index.html").write_bytes(b"source")
    (site / "www" / "sub" / "page").write_bytes(b"page")
    os.symlink(site / "www", tmp_path / "alias")
    return site


OVERLAPS = {
    "inside": "local:{s}/www/mirror",
    "inside-existing-dir": "local:{s}/www/sub",
    "equal": "local:{s}/www",
    "equal-trailing-slash": "local:{s}/www/",
    "parent": "local:{s}",
    "grandparent": "local:{t}",
    "alias-equal": "local:{t}/alias",
    "alias-inside-new": "local:{t}/alias/new/deeper",
    "dotdot-inside": "local:{s}/www2/../www/m",
    "rsync-inside": "rsync:{s}/www/mirror",
    "rsync-parent": "rsync:{s}/",
    "rsync-alias": "rsync:{t}/alias/m",
    "rsync-relative": "rsync:srv/www/m",
    "local-relative": "local:srv/www/m",
}


@pytest.mark.parametrize("case", sorted(OVERLAPS))
@pytest.mark.parametrize("command", ["scan", "run"])
def test_target_overlapping_the_root_is_refused(tmp_path: Path, case: str, command: str) -> None:
    """A local or path-style rsync mirror that is the root, lies inside it or
    contains it (symlinks resolved, also for paths not created yet) is refused
    with exit 2, an error and a hint, and nothing is written anywhere."""
    site = _overlap_site(tmp_path)
    spec = OVERLAPS[case].format(s=site, t=tmp_path)
    before = _tree(tmp_path)
    res = subprocess.run(
        [
            str(AGENT),
            command,
            "--root",
            str(site / "www"),
            "--journal",
            str(tmp_path / "j"),
            "--target",
            spec,
        ],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "AGENT_CONFIG"},
    )
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert err.startswith("error: target ") and "watched root" in err and "\nhint: " in err, err
    assert _tree(tmp_path) == before


def test_overlap_in_the_config_file_is_refused(tmp_path: Path) -> None:
    """The same rule holds for [[target]] tables (paths relative to the file)."""
    site = _overlap_site(tmp_path)
    for kind, key, value in (("local", "path", "srv/www/m"), ("rsync", "dest", f"{site}/www")):
        cfg = tmp_path / "agent.toml"
        cfg.write_text(
            f'root = "{site}/www"\njournal = "{tmp_path}/j"\n'
            f'[[target]]\nname = "m"\nkind = "{kind}"\n{key} = "{value}"\n'
        )
        before = _tree(tmp_path)
        res = agent("scan", "--config", cfg)
        assert res.returncode == 2 and b"watched root" in res.stderr, res.stderr
        assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    "spec",
    [
        "local:{s}/www2",
        "local:{s}/www-mirror/x",
        "rsync:{s}/www2/",
        "rsync:localhost:{s}/www/m",
        "rsync:rsync://h/m/",
    ],
)
def test_sibling_and_remote_targets_are_accepted(tmp_path: Path, spec: str) -> None:
    """A sibling sharing the root's name prefix is not inside it, and remote
    rsync destinations name another machine's paths: both are accepted."""
    site = _overlap_site(tmp_path)
    spec = spec.format(s=site)
    res = agent("scan", "--root", site / "www", "--journal", tmp_path / "j", "--target", spec)
    assert res.returncode != 2, res.stderr
    assert b"error:" not in res.stderr
