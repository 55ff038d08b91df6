"""The alerting rules: valid for Prometheus, their unit tests pass, the PrometheusRule matches."""
from __future__ import annotations

import yaml

from obs_support import ALERTS, run_promtool


def test_promtool_check_rules(promtool):
    result = run_promtool(promtool, "check", "rules", "alerts.yml", cwd=ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_of_the_alerts(promtool):
    result = run_promtool(promtool, "test", "rules", "alerts_test.yml", cwd=ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_tests():
    groups = yaml.safe_load((ALERTS / "alerts.yml").read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    names = {rule["alert"] for rule in alerts}
    assert {"LambdascopeServiceDown", "LambdascopeJobsFailing", "LambdascopeJobQueueGrowing",
            "LambdascopeAuditsMostlyFailing"} <= names
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    tests = yaml.safe_load((ALERTS / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for name in names:  # each alert: a case where it fires and one where it must not
        assert any(c["alertname"] == name and c.get("exp_alerts") for c in cases), name
        assert any(c["alertname"] == name and not c.get("exp_alerts") for c in cases), name


def test_prometheus_rule_carries_exactly_the_groups_of_alerts_yml():
    rule = yaml.safe_load((ALERTS / "prometheus-rule.yaml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"]
    assert rule["spec"]["groups"] == yaml.safe_load((ALERTS / "alerts.yml").read_text())["groups"]
