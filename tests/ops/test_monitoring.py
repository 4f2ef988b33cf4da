"""The shipped alert rules and dashboard against a running agent's metrics:
every metric they use is exported (read from a real scrape over HTTP), and
the metrics the alerts rest on carry the values the alerts expect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.cli.agent_site import Site, msync_site
from tests.cli.conftest import agent
from tests.helpers.metrics import free_port, samples, scrape_text
from tests.helpers.wait import wait_until

OPS = Path(__file__).resolve().parents[2] / "ops"
RULES = OPS / "prometheus" / "msync-agent-rules.yml"
DASHBOARD = OPS / "grafana" / "msync-agent-dashboard.json"

_FUNCTIONS = {"absent", "rate", "increase", "sum", "max", "min", "avg", "count", "histogram_quantile", "time"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset"}
_PROMETHEUS_OWN = {"up"}  # written by Prometheus itself for every scrape target


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads; an unknown function is an error."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = m.group(0)
        if text[m.end() :].lstrip().startswith("("):
            assert token in _FUNCTIONS, f"unexpected function {token} in {expr!r}"
        elif token not in _KEYWORDS:
            names.add(token)
    return names


def test_metric_names_finds_metrics_and_rejects_unknown_functions() -> None:
    """The parser the checks rely on: labels, ranges and grouping are not metrics."""
    expr = 'sum by (instance, track) (rate(a_total{x="y(z)"}[5m])) > 2 * b or absent(c{job="j"})'
    assert metric_names(expr) == {"a_total", "b", "c"}
    try:
        metric_names("bogus_fn(a)")
    except AssertionError:
        pass
    else:
        raise AssertionError("an unknown function was accepted")


def exported(scrape: str) -> set[str]:
    """Sample names a scrape can hold, from its ``# TYPE`` lines (labelled
    metrics without children yet have no samples, but do have a TYPE)."""
    names = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", scrape, re.M):
        name, kind = m.groups()
        suffixes = {"histogram": ("_bucket", "_sum", "_count")}.get(kind, ("",))
        names.update(name + s for s in suffixes)  # a counter's TYPE already names it NAME_total
    return names


def test_rules_and_dashboard_use_only_exported_metrics(tmp_path: Path, sites: list[Site]) -> None:
    """A running agent with an msync target (one member down) and a verify
    run: every metric of the rules file and the dashboard is exported, and
    the member, verify, journal and scan metrics hold what the alerts read."""
    port = free_port()
    site, dbl = msync_site(tmp_path, sites)
    site.config.write_text(site.config.read_text().replace("settle_ms", f"metrics_port = {port}\nsettle_ms"))
    dbl.set_member("mk3", state="down")
    site.start()
    (site.src / "a.txt").write_bytes(b"a")
    wait_until(lambda: (dbl.member_dir("mk2") / "a.txt").exists(), timeout=60, message="not shipped to mk2")
    res = agent("verify", "--config", str(site.config))
    assert res.returncode == 2, res.stdout + res.stderr  # mk3 cannot be checked: an error, not clean
    wait_until(
        lambda: "msync_agent_verify_last_timestamp_seconds 0.0" not in scrape_text(port),
        timeout=30,
        message="the verify trace never reached the metrics",
    )
    text = scrape_text(port)
    values = samples(text)

    names = exported(text) | _PROMETHEUS_OWN
    rules = yaml.safe_load(RULES.read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(exprs) >= 10 and all(rule.get("alert") for g in rules["groups"] for rule in g["rules"])
    dash = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
    for var in dash["templating"]["list"]:
        if m := re.match(r"label_values\((\w+)", str(var.get("query", ""))):
            exprs.append(m.group(1))
    for expr in exprs:
        missing = metric_names(expr) - names
        assert not missing, f"{expr!r} uses metrics the agent does not export: {missing}"

    assert values['msync_agent_member_absent_seconds{track="cluster/mk3"}'] > 0
    assert values['msync_agent_member_absent_seconds{track="cluster/mk2"}'] == 0
    assert values["msync_agent_verify_clean"] == 0
    assert values['msync_agent_verify_error{target="cluster"}'] == 1
    assert values["msync_agent_journal_bytes"] > 0 and values["msync_agent_journal_disk_free_bytes"] > 0
    assert values["msync_agent_journal_full"] == 0
    assert values['msync_agent_scans_total{reason="startup"}'] == 1
    assert 0 <= values["msync_agent_checkpoint_age_seconds"] < 60
    assert values['msync_agent_pending{track="cluster/mk3"}'] >= 1
    status = json.loads(agent("status", "--json", "--config", str(site.config)).stdout)
    assert status["verify"]["result"] == "error" and status["verify"]["targets"]["cluster"]["error"]
