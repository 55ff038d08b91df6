"""Dashboards and alerts refer only to metrics the services export (plus Prometheus' `up`)."""
from __future__ import annotations

import json
import re

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from obs_support import ALERTS, DASHBOARDS

DASHBOARD_FILES = ("overview.json", "audits.json", "trainer.json")
PROMETHEUS_OWN = {"up"}  # series Prometheus writes itself for every target

FUNCTIONS_AND_KEYWORDS = {
    # aggregations
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile",
    # binary operators and modifiers
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "atan2",
    # literals
    "inf", "nan",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VARS = re.compile(r"\$\{?\w+\}?")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that stand before `{` or `[` or alone,
    that are not functions (followed by `(`), keywords or label names."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    text = _GRAFANA_VARS.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in FUNCTIONS_AND_KEYWORDS:
            continue
        if re.fullmatch(r"[0-9]*[eE][0-9]+", name):
            continue
        names.add(name)
    return names


def test_the_parser_finds_metric_names():
    expr = ('histogram_quantile(0.99, sum by (le, grpc_method) (rate('
            'grpc_server_handling_seconds_bucket{grpc_type="unary", x="a{b}"}[$__rate_interval])))'
            ' / on(job) group_left up and lambdascope_jobs > 1e3 offset 5m')
    assert metric_names(expr) == {"grpc_server_handling_seconds_bucket", "up", "lambdascope_jobs"}
    assert metric_names('max by (kind) (delta(lambdascope_jobs_queued[30m])) > 0') == {
        "lambdascope_jobs_queued"}


def dashboard_exprs(name: str) -> list[tuple[str, str]]:
    board = json.loads((DASHBOARDS / name).read_text())
    panels = list(board["panels"])
    for panel in board["panels"]:
        panels.extend(panel.get("panels", []))  # collapsed rows
    return [(panel["title"], target["expr"]) for panel in panels
            for target in panel.get("targets", []) if target.get("expr")]


def alert_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load((ALERTS / "alerts.yml").read_text())["groups"]
    return [(rule.get("alert") or rule.get("record"), rule["expr"])
            for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def exported(traffic) -> set[str]:
    """Every sample name the three services expose (histograms: _bucket, _sum, _count)."""
    names = set()
    for text in traffic.scrapes.values():
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_is_provisionable(name):
    board = json.loads((DASHBOARDS / name).read_text())
    assert board["uid"] and board["title"]
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    uids = {json.loads((DASHBOARDS / n).read_text())["uid"] for n in DASHBOARD_FILES}
    assert len(uids) == len(DASHBOARD_FILES)


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_dashboard_queries_use_exported_metrics(name, exported):
    exprs = dashboard_exprs(name)
    assert exprs
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, (title, expr)
        missing = names - exported - PROMETHEUS_OWN
        assert not missing, f"{name}: panel {title!r} queries {sorted(missing)}, which no " \
                            f"service exports: {expr}"


def test_alerts_use_exported_metrics(exported):
    for alert, expr in alert_exprs():
        names = metric_names(expr)
        assert names, alert
        missing = names - exported - PROMETHEUS_OWN
        assert not missing, f"alert {alert} queries {sorted(missing)}: {expr}"


def test_the_overview_shows_what_operators_need():
    exprs = " ".join(e for _, e in dashboard_exprs("overview.json"))
    for needed in ("up{", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
                   "lambdascope_jobs{", "lambdascope_jobs_queued"):
        assert needed in exprs, needed
    audits = " ".join(e for _, e in dashboard_exprs("audits.json"))
    for needed in ("lambdascope_audits_total", "lambdascope_job_duration_seconds",
                   "lambdascope_audit_chain_steps_per_second"):
        assert needed in audits, needed
    trainer = " ".join(e for _, e in dashboard_exprs("trainer.json"))
    for needed in ("lambdascope_training_steps_per_second", 'kind="train"'):
        assert needed in trainer, needed
