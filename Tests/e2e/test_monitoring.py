"""monitoring/: the alert rules under promtool, and the Grafana dashboard's queries against a real
Prometheus that scraped a mesh under load."""
import subprocess

import yaml

from harness import ROOT, require_tool

MONITORING = ROOT / "monitoring"


def alert_rules():
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_every_alert_has_a_case_that_fires_it_and_a_healthy_case_that_does_not():
    """In monitoring/alerts.test.yml each alert is expected to fire in some case, and some case of
    healthy series checks that it stays silent (every check of that alert in it expects none)."""
    unit_tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())
    assert unit_tests["rule_files"] == ["alerts.yml"]
    fired, silent = set(), set()
    for case in unit_tests["tests"]:
        checks = {}
        for check in case.get("alert_rule_test", []):
            checks.setdefault(check["alertname"], []).append(bool(check.get("exp_alerts")))
        for name, expected in checks.items():
            if any(expected):
                fired.add(name)
            else:
                silent.add(name)
    names = {rule["alert"] for rule in alert_rules()}
    assert len(names) == len(alert_rules()), "alert names are unique"
    assert names - fired == set(), "alerts no case fires"
    assert names - silent == set(), "alerts with no healthy case"
    assert (fired | silent) - names == set(), "cases of alerts that do not exist"
