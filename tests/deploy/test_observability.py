"""The Grafana dashboard and the Prometheus rules in deploy/observability use only metrics (and labels) that a
running daemon really serves: a `capctl run` against the simulator, after it started a task and rejected a
forged callback, is scraped, and every name in every PromQL expression is looked up in what it answered
(labels and their values too, where the daemon's samples show them).
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reconciler.daemon.metrics import Metrics
from reconciler.providers.base import ErrorKind
from reconciler.providers.family import VENDORS
from tests.deploy.daemon_facts import ROOT
from tests.e2e.conftest import Workdir
from tests.e2e.test_cli_run import start_daemon
from tests.specdocs import snapshot_job

OBSERVABILITY = ROOT / "deploy" / "observability"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}
METRIC = re.compile(r"\b(capctl_[a-z_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")

Served = dict[str, dict[str, set[str]]]  # sample name -> label name -> values seen
# Values the code gives a label beyond those the healthy daemon served: a vendor call's outcome is `ok` or an
# error kind, whose child appears at the first such failure (walk 38c-3: rules wrote `=~"retryable"` to pass).
DECLARED = {("capctl_vendor_calls_total", "outcome"): {"ok", *(kind.value for kind in ErrorKind)}}
LITERAL = re.compile(r"[\w-]*")  # a `=~` value that is one plain value, checked as `=` is


def served(exposition: str) -> Served:
    """Every sample name the exposition declares (by its families' types, so a labelled counter that has not
    moved yet still counts) and the labels and values of the samples it holds."""
    names: Served = {}
    for family in text_string_to_metric_families(exposition):
        for suffix in SUFFIXES[family.type]:
            names.setdefault(family.name + suffix, {})
        for sample in family.samples:
            labels = names.setdefault(sample.name, {})
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    return names


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load((OBSERVABILITY / "prometheus-rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule['alert']}", rule["expr"]


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['title']!r}", target["expr"]


def problems(where: str, expr: str, names: Served) -> list[str]:
    """What in `expr` the daemon does not serve: a metric, a label, or (where samples show them) a label value."""
    # `le`: a histogram's bucket bound; `namespace`: put on every series by the scrape (the Prometheus Operator).
    found, used_labels = [], {"le", "namespace"}
    metrics = METRIC.findall(expr)
    # A family without samples (nothing throttled yet) shows no labels: its groupings cannot be checked.
    labels_known = all(names.get(name) for name, _ in metrics)
    if not metrics:
        found.append(f"{where}: uses no capctl metric: {expr}")
    for name, selector in metrics:
        if name not in names:
            found.append(f"{where}: {name} is not served")
            continue
        used_labels |= set(names[name])
        for label, op, value in MATCHER.findall(selector):
            seen = names[name].get(label)
            one_value = op == "=" or (op == "=~" and LITERAL.fullmatch(value))
            if seen is None and names[name]:
                found.append(f"{where}: {name} has no label {label!r} (it has {sorted(names[name])})")
            elif seen is not None and one_value and value not in seen | DECLARED.get((name, label), set()):
                found.append(f"{where}: {name}{{{label}={value!r}}} never served (seen: {sorted(seen)})")
    for grouping in GROUPING.findall(expr) if labels_known else ():
        for label in filter(None, (s.strip() for s in grouping.split(","))):
            if label not in used_labels:
                found.append(f"{where}: groups by {label!r}, a label none of its metrics has")
    return found


@pytest.fixture
def metrics(work: Workdir) -> Served:
    work.write("jobs.yaml", snapshot_job("audit", ["lobby"]))
    daemon, _, http = start_daemon(work, "--resync", "1s")
    try:
        # A start call (vendor calls, tasks) and a forged callback (callbacks{outcome="rejected"}).
        deadline = time.monotonic() + 60
        while not work.sim.tasks("volcengine", state="running") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert work.sim.tasks("volcengine", state="running"), "the daemon started no task"
        assert http.post("/callbacks/zego", content=b'{"forged": true}').status_code >= 400
        return served(http.get("/metrics").text)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def test_every_metric_in_the_dashboard_and_rules_is_served(metrics: Served) -> None:
    exprs = [*rule_exprs(), *dashboard_exprs()]
    assert len(exprs) > 10
    assert [p for where, expr in exprs for p in problems(where, expr, metrics)] == []


def test_the_check_flags_a_metric_that_does_not_exist_yet(metrics: Served) -> None:
    """The check can fail: a metric the daemon does not serve, or a label the metric lacks."""
    assert problems("rule", "max(capctl_no_such_metric) < 1", metrics) == ["rule: capctl_no_such_metric is not served"]
    wrong_label = problems("rule", 'sum by (room) (capctl_callbacks_total{room="x"})', metrics)
    assert len(wrong_label) == 2 and "no label 'room'" in wrong_label[0]
    # A misspelt value, `=` or `=~` alike; an outcome the daemon serves at its first failure is no problem.
    misspelt = problems("rule", 'capctl_vendor_calls_total{outcome=~"retryabel"}', metrics)
    assert len(misspelt) == 1 and "outcome='retryabel'} never served" in misspelt[0], misspelt
    assert problems("rule", 'capctl_vendor_calls_total{outcome="retryable"}', metrics) == []


ALERTS = {  # issue 19's alerts, by what they watch
    "coverage below target": "CapctlCoverageBelowTarget",
    "leader missing": "CapctlLeaderMissing",
    "re-issues failing": "CapctlReissuesFailing",
    "throttling": "CapctlVendorThrottled",
    "callbacks rejected": "CapctlCallbacksRejected",
    "state store unreachable": "CapctlStateStoreUnreachable",
    "a prune held for a human": "CapctlPruneHeld",  # docs/daemon.md: "alert on it"
}


def test_rules_are_complete_alerts() -> None:
    rules: dict[str, Any] = {
        rule["alert"]: rule
        for group in yaml.safe_load((OBSERVABILITY / "prometheus-rules.yaml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert set(ALERTS.values()) <= set(rules)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and re.fullmatch(r"\d+[smh]", rule["for"]), name


def test_dashboard_panels_are_unique_and_use_the_datasource_variable() -> None:
    dashboard = json.loads(Path(OBSERVABILITY / "grafana-dashboard.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {"${datasource}"}
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]


def test_the_runbook_lists_every_alert_with_its_severity() -> None:
    """docs/operations.md's alert table is what an on-call engineer looks a firing alert up in: it names each
    rule of prometheus-rules.yaml, with its severity, and no alert that does not exist."""
    rules = {
        rule["alert"]: rule["labels"]["severity"]
        for group in yaml.safe_load((OBSERVABILITY / "prometheus-rules.yaml").read_text())["groups"]
        for rule in group["rules"]
    }
    guide = (ROOT / "docs" / "operations.md").read_text()
    table = guide[guide.index("| alert | fires when |") :].split("\n\n")[0]
    documented = dict(re.findall(r"^\| `(\w+)` \((\w+)\) \|", table, re.M))
    assert documented == rules


def test_replica_level_alerts_fire_on_any_replica() -> None:
    """Gauges every replica exports for itself are alerted on the worst replica: `max` over the replicas
    hid a pod whose specs do not load (it stands by for good) behind the others' valid sets."""
    exprs = dict(rule_exprs())
    for alert, gauge in (
        ("CapctlSpecSetInvalid", "capctl_spec_set_valid"),
        ("CapctlStateStoreUnreachable", "capctl_state_store_reachable"),
    ):
        assert f"min by (namespace) ({gauge}) < 1" in exprs[f"rule {alert}"], alert


def test_each_vendors_rejected_callbacks_are_served_from_zero() -> None:
    """CapctlCallbacksRejected takes increase(): a `rejected` series that appeared at its first rejection
    (at 1) showed no increase, and one forged callback fired nothing. Each vendor's series is there at 0."""
    families = {f.name: f for f in text_string_to_metric_families(Metrics().render().decode())}
    rejected = {
        s.labels["vendor"]: s.value
        for s in families["capctl_callbacks"].samples
        if s.name == "capctl_callbacks_total" and s.labels["outcome"] == "rejected"
    }
    assert rejected == {vendor: 0.0 for vendor in VENDORS}


def test_every_metric_an_alert_watches_or_names_is_on_the_dashboard() -> None:
    """The on-call engineer opens the dashboard when an alert fires: what the alert watches, and what its
    description says to look at, is drawn there (coverage and the state store were not)."""
    drawn = {name.removesuffix("_bucket") for _, expr in dashboard_exprs() for name, _ in METRIC.findall(expr)}
    for group in yaml.safe_load((OBSERVABILITY / "prometheus-rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            watched = {name for name, _ in METRIC.findall(rule["expr"] + " " + rule["annotations"]["description"])}
            assert watched <= drawn, f"{rule['alert']}: {sorted(watched - drawn)} not on the dashboard"
