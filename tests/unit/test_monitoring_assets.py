"""Monitoring assets: Prometheus alert rules, their promtool unit tests, the Grafana
dashboard and the runbook (docs/monitoring.md) stay consistent with the metric contract."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "helm" / "askelephant-kafka" / "files"
ALERTS = FILES / "alerts.yml"
ALERTS_TEST = FILES / "alerts_test.yml"
DASHBOARD = FILES / "dashboard.json"
CONTRACTS = ROOT / "docs" / "CONTRACTS.md"
MONITORING_DOC = ROOT / "docs" / "monitoring.md"

PREFIX = "askelephant_producer_"
SEVERITIES = {"critical", "warning", "info"}
# Labels Prometheus adds to every scraped series (compose: job/instance; a
# ServiceMonitor adds more, but the assets only select on these).
TARGET_LABELS = {"job", "instance"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# A metric name with our prefix (recording rules `askelephant_producer:...` do not match),
# optionally followed by its label matchers.
_SELECTOR = re.compile(r"(?<![\w:])(" + PREFIX + r"[a-z0-9_]+)(?![\w:])\s*(\{[^}]*\})?")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")


class Metric(NamedTuple):
    type: str  # gauge | counter | histogram
    labels: frozenset[str]


@functools.cache
def contract_metrics() -> dict[str, Metric]:
    """Full metric name -> (type, label names), read from the Metrics section of
    docs/CONTRACTS.md. The one place these tests learn the metric list from."""
    text = CONTRACTS.read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    line = re.compile(r"^([a-z][a-z0-9_]*)(?:\{([^}]*)\})?\s+(gauge|counter|histogram)\b", re.M)
    metrics = {
        PREFIX + name: Metric(kind, frozenset(x.strip() for x in labels.split(",") if x.strip()))
        for name, labels, kind in line.findall(section)
    }
    assert len(metrics) >= 10, f"could not parse the metric list from {CONTRACTS}"
    return metrics


def exposed_series() -> dict[str, frozenset[str]]:
    """Queryable series name -> allowed label names (histograms expose _bucket/_sum/_count)."""
    series: dict[str, frozenset[str]] = {}
    for name, metric in contract_metrics().items():
        labels = metric.labels | TARGET_LABELS
        if metric.type == "histogram":
            series[name + "_bucket"] = labels | {"le"}
            series[name + "_sum"] = labels
            series[name + "_count"] = labels
        else:
            series[name] = labels
    return series


def base_metric(series_name: str) -> str:
    """The contract metric a series belongs to (strips histogram suffixes)."""
    metrics = contract_metrics()
    for suffix in ("_bucket", "_sum", "_count"):
        base = series_name.removesuffix(suffix)
        if base != series_name and base in metrics and metrics[base].type == "histogram":
            return base
    return series_name


def selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric name, label names matched on) for every prefixed selector in a PromQL expr."""
    for match in _SELECTOR.finditer(expr):
        yield match.group(1), set(_MATCHER_LABEL.findall(match.group(2) or ""))


def unknown_references(expr: str) -> list[str]:
    problems = []
    series = exposed_series()
    for name, labels in selectors(expr):
        if name not in series:
            problems.append(f"unknown metric {name}")
        elif labels - series[name]:
            problems.append(f"{name}: unknown labels {sorted(labels - series[name])}")
    return problems


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def doc_anchors() -> set[str]:
    text = re.sub(r"^```.*?^```", "", MONITORING_DOC.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {github_anchor(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


# ----------------------------------------------------------------------------- alerts


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(doc) == {"groups"}, "alerts.yml must be a plain rule file with only `groups:`"
    return [rule for group in doc["groups"] for rule in group["rules"]]


def load_alerts() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def alert_ids() -> list[str]:
    return [rule["alert"] for rule in load_alerts()]


def test_contract_metric_list_parses() -> None:
    metrics = contract_metrics()
    assert metrics[PREFIX + "runs_total"] == Metric("counter", frozenset({"resource", "outcome"}))
    assert metrics[PREFIX + "run_duration_seconds"].type == "histogram"
    assert metrics[PREFIX + "kafka_queue_messages"].labels == frozenset()


def test_rule_file_shape() -> None:
    rules = load_rules()
    names = [rule.get("alert") or rule.get("record") for rule in rules]
    assert len(names) == len(set(names)), "duplicate rule names"
    for rule in rules:
        if "record" in rule:
            assert rule["record"].count(":") == 2, "recording rules are named level:metric:ops"
    assert len(load_alerts()) >= 7


@pytest.mark.parametrize("alert", load_alerts(), ids=alert_ids())
def test_alert_metadata(alert: dict[str, Any]) -> None:
    assert alert["alert"].startswith("AskElephantProducer")
    assert alert.get("labels", {}).get("severity") in SEVERITIES
    annotations = alert.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key), f"missing annotation {key}"
    url = annotations["runbook_url"]
    assert url.startswith("https://"), url
    anchor = url.partition("#")[2]
    assert anchor == alert["alert"].lower(), "runbook_url must point at the alert's own section"
    assert anchor in doc_anchors(), f"docs/monitoring.md has no heading for #{anchor}"
    metrics = contract_metrics()
    referenced = [metrics.get(base_metric(name)) for name, _ in selectors(alert["expr"])]
    if any(metric and "resource" in metric.labels for metric in referenced):
        assert "{{ $labels.resource }}" in annotations["summary"]


@pytest.mark.parametrize("rule", load_rules(), ids=lambda r: r.get("alert") or r.get("record"))
def test_rules_reference_only_contract_metrics(rule: dict[str, Any]) -> None:
    expr = rule["expr"]
    assert list(selectors(expr)) or re.search(r"\bup\b", expr), "rule references no metric"
    assert unknown_references(expr) == []


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    suite = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
    assert suite["rule_files"] == [ALERTS.name]
    fires: set[str] = set()
    silent: set[str] = set()
    for group in suite["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    assert set(alert_ids()) - fires == set(), "alerts never shown to fire"
    assert set(alert_ids()) - silent == set(), "alerts never shown to stay quiet"


# -------------------------------------------------------------------------- dashboard


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [
        target["expr"]
        for panel in all_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def test_dashboard_identity_and_variables() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "askelephant-kafka-producer"
    assert dashboard["title"] == "AskElephant \u2192 Kafka producer"
    assert dashboard["schemaVersion"] >= 39
    assert dashboard.get("id") is None
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    resource = variables["resource"]
    assert resource["type"] == "query"
    assert resource["datasource"] == DATASOURCE
    assert re.fullmatch(
        r"label_values\(askelephant_producer_sync_lag_seconds(\{[^}]*\})?, resource\)",
        resource["definition"],
    )


def test_dashboard_uses_only_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    datasources = [value for key, value in walk(dashboard) if key == "datasource"]
    assert datasources, "panels must name their datasource"
    assert all(ds == DATASOURCE for ds in datasources), "hard-coded datasource found"
    for panel in all_panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel.get("datasource") == DATASOURCE, panel["title"]
            assert panel.get("targets"), f"{panel['title']} has no queries"


def test_dashboard_layout() -> None:
    panels = list(all_panels(load_dashboard()["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    boxes = []
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert min(pos["w"], pos["h"]) > 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for other_title, other in boxes:
            overlap = (
                pos["x"] < other["x"] + other["w"]
                and other["x"] < pos["x"] + pos["w"]
                and pos["y"] < other["y"] + other["h"]
                and other["y"] < pos["y"] + pos["h"]
            )
            assert not overlap, f"{panel['title']!r} overlaps {other_title!r}"
        boxes.append((panel["title"], pos))


def test_dashboard_queries_reference_only_contract_metrics() -> None:
    problems = {
        expr: unknown_references(expr)
        for expr in dashboard_exprs(load_dashboard())
        if unknown_references(expr)
    }
    assert problems == {}


def test_dashboard_shows_every_contract_metric() -> None:
    used = {
        base_metric(name)
        for expr in dashboard_exprs(load_dashboard())
        for name, _ in selectors(expr)
    }
    assert set(contract_metrics()) - used == set()


def test_runbook_documents_every_metric() -> None:
    text = MONITORING_DOC.read_text(encoding="utf-8")
    missing = [name for name in contract_metrics() if name not in text]
    assert missing == []


# --------------------------------------------------------------------------- promtool


@pytest.fixture(scope="module")
def promtool() -> str:
    local = Path(os.environ.get("ASKELEPHANT_TOOLS_BIN") or ROOT / ".tools" / "bin") / "promtool"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("promtool")
    if found:
        return found
    message = "promtool not found in .tools/bin or on PATH: run scripts/install-tools.sh"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip("run scripts/install-tools.sh")


def run_promtool(promtool: str, *args: str, cwd: Path = FILES) -> str:
    result = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_promtool_check_rules(promtool: str) -> None:
    assert "SUCCESS" in run_promtool(promtool, "check", "rules", ALERTS.name)


def test_promtool_test_rules(promtool: str) -> None:
    assert "SUCCESS" in run_promtool(promtool, "test", "rules", ALERTS_TEST.name)


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Every dashboard query, with Grafana's $__ interval macros filled in, parses."""
    exprs = [
        re.sub(r"\$__\w+", "5m", expr)
        for expr in dashboard_exprs(load_dashboard())
        if not expr.startswith("label_values(")
    ]
    rules = [{"record": f"dashboard:query_{i}:check", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool(promtool, "check", "rules", path.name, cwd=tmp_path)
