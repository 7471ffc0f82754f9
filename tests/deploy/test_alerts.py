"""Each alert of deploy/observability fires in the situation its description names, and no other alert does:
`promtool test rules` (Prometheus' own rule evaluation, `for:` and all) over two replicas' series, healthy
but for the situation. The series have the shapes a running daemon gives them (tests/deploy/
test_observability.py checks the names and labels against one): a task whose starts keep failing is
`pending` during each round of tries and `failed` between rounds; a counter child appears at its first
increment unless the daemon creates it at 0.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.deploy.daemon_facts import ROOT

# On PATH, or where ./dev puts the one it takes from Debian's prometheus package.
PROMTOOL = shutil.which("promtool") or shutil.which("promtool", path=str(ROOT / ".cache" / "promtool"))
RULES = ROOT / "deploy" / "observability" / "prometheus-rules.yaml"
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="no promtool (./dev test fetches it into .cache/promtool)")

STEP = 30  # seconds between two scrapes (the ServiceMonitor's interval)
SAMPLES = 160  # 80 minutes: CapctlCoverageBelowTarget needs a 30 min average held for 30 min
STATUSES = ("pending", "running", "stopped", "failed", "done", "dormant", "removed", "unknown")
Samples = Sequence[float | None]  # one value per scrape; None: not scraped
NEW, OLD = "68b998ac1d66", "67e150550466"  # two spec sets' digests
REASONS = ("vendor-auth", "vendor-unavailable", "vendor-rejected", "state-write", "state-read", "other")


def flat(value: float) -> Samples:
    return [value] * SAMPLES


def counter(per_sample: float) -> Samples:
    return [per_sample * i for i in range(SAMPLES)]


def rounds(every: int, busy: int, inside: float, outside: float) -> Samples:
    """`inside` for `busy` samples out of each `every`, else `outside` (a round of tries, then a wait)."""
    return [inside if i % every < busy else outside for i in range(SAMPLES)]


def healthy() -> dict[str, Samples]:
    """Two replicas, `a` leading: 10 tasks running, starts answered, nothing held or rejected."""
    series: dict[str, Samples] = {}
    for pod, leads in (("a", 1), ("b", 0)):
        series[f'capctl_leader{{pod="{pod}"}}'] = flat(leads)
        series[f'capctl_spec_set_valid{{pod="{pod}"}}'] = flat(1)
        series[f'capctl_state_store_reachable{{pod="{pod}"}}'] = flat(1)
        for reason in REASONS:
            series[f'capctl_reconcile_errors_total{{pod="{pod}",reason="{reason}"}}'] = flat(0)
        for reason in ("max-prune", "grace", "provider-missing"):
            series[f'capctl_prune_blocked{{pod="{pod}",reason="{reason}"}}'] = flat(0)
        series[f'capctl_wall_clock_steps_total{{pod="{pod}"}}'] = flat(0)  # served from 0
        series[f'capctl_leadership_changes_total{{pod="{pod}"}}'] = flat(leads)  # `a` took the lead once
        series[f'capctl_spec_set_info{{pod="{pod}",digest="sha256:{NEW}"}}'] = flat(1)
        for vendor in ("volcengine", "zego"):
            series[f'capctl_callbacks_total{{pod="{pod}",vendor="{vendor}",outcome="rejected"}}'] = flat(0)
    for status in STATUSES:  # only the leader exports tasks
        series[f'capctl_tasks{{pod="a",status="{status}"}}'] = flat(10 if status == "running" else 0)
    series['capctl_vendor_calls_total{pod="a",api="StartSnapshot",outcome="ok"}'] = counter(1)
    series['capctl_vendor_calls_total{pod="a",api="GetSnapshotTask",outcome="ok"}'] = counter(5)
    series['capctl_rooms_active{pod="a",job_name="SnapshotJob/audit"}'] = flat(10)
    series['capctl_rooms_captured{pod="a",job_name="SnapshotJob/audit"}'] = flat(10)
    return series


@dataclass
class Situation:
    fires: set[str]  # the alerts firing at the end, and only they
    series: dict[str, Samples] = field(default_factory=dict)  # replaces or adds to healthy()


def failing_starts(round_samples: int, outcome: str) -> dict[str, Samples]:
    """One task whose re-issue fails: a round of 6 tries (`pending`) every 12 samples, `failed` between."""
    return {
        f'capctl_vendor_calls_total{{pod="a",api="StartSnapshot",outcome="{outcome}"}}': [
            6.0 * (i // 12 + 1) for i in range(SAMPLES)
        ],
        'capctl_tasks{pod="a",status="running"}': flat(9),
        'capctl_tasks{pod="a",status="pending"}': rounds(12, round_samples, 1, 0),
        'capctl_tasks{pod="a",status="failed"}': rounds(12, round_samples, 0, 1),
    }


def vendor_down(start: int, end: int, api: str = "GetSnapshotTask", per_sample: float = 5.0) -> dict[str, Samples]:
    """Every `api` call fails (`retryable`: a 5xx, a timeout) from sample `start` to `end`; the tasks are
    `unknown` meanwhile (their last look failed) and no start is made (none is known stopped)."""
    down = [start <= i < end for i in range(SAMPLES)]
    ok, failed = [], []
    for i in range(SAMPLES):
        ok.append(per_sample * (i - sum(down[:i])))
        failed.append(per_sample * sum(down[:i]))
    return {
        f'capctl_vendor_calls_total{{pod="a",api="{api}",outcome="ok"}}': ok,
        f'capctl_vendor_calls_total{{pod="a",api="{api}",outcome="retryable"}}': failed,
        'capctl_reconcile_errors_total{pod="a",reason="vendor-unavailable"}': failed,
        'capctl_tasks{pod="a",status="running"}': [0 if d else 10 for d in down],
        'capctl_tasks{pod="a",status="unknown"}': [10 if d else 0 for d in down],
    }


def restarted(samples: Samples, at: int, pod_gone: bool = False) -> Samples:
    """A counter's samples when its process restarts at sample `at`: the new process's child appears at its
    first increment and counts from 0 (or, `pod_gone`, the pod is replaced and its series ends)."""
    base = samples[at - 1] or 0.0
    after = [None if pod_gone or (v or 0.0) - base <= 0 else (v or 0.0) - base for v in samples[at:]]
    return [*samples[:at], *after]


def failover_in_outage(at: int) -> dict[str, Samples]:
    """The vendor down from sample 100; the leader `a` is lost at `at` and `b` takes the lead: `b`'s children
    appear at its first failed look."""
    down = vendor_down(100, SAMPLES)
    failed = down['capctl_vendor_calls_total{pod="a",api="GetSnapshotTask",outcome="retryable"}']
    series: dict[str, Samples] = {k: restarted(v, at, pod_gone=True) for k, v in down.items()}
    series['capctl_vendor_calls_total{pod="b",api="GetSnapshotTask",outcome="retryable"}'] = [
        None if i < at else (failed[i] or 0.0) - (failed[at - 1] or 0.0) for i in range(SAMPLES)
    ]
    series['capctl_tasks{pod="b",status="unknown"}'] = [None] * at + [10] * (SAMPLES - at)
    series['capctl_leader{pod="a"}'] = [1] * at + [None] * (SAMPLES - at)
    series['capctl_leader{pod="b"}'] = [0] * at + [1] * (SAMPLES - at)
    series['capctl_leadership_changes_total{pod="b"}'] = [0] * at + [1] * (SAMPLES - at)
    return series


def staging(series: dict[str, Samples]) -> dict[str, Samples]:
    """`series` of pod `c` of a second deployment (namespace staging, its own spec set and leader)."""
    return {
        'capctl_leader{namespace="staging",pod="c"}': flat(1),
        f'capctl_spec_set_info{{namespace="staging",pod="c",digest="sha256:{OLD}"}}': flat(1),
        **{name.replace("{", '{namespace="staging",pod="c",', 1): v for name, v in series.items()},
    }


SITUATIONS: dict[str, Situation] = {
    "healthy": Situation(set()),
    "no replica leads": Situation({"CapctlLeaderMissing"}, {'capctl_leader{pod="a"}': [1] * 10 + [0] * 150}),
    "no daemon scraped": Situation(
        {"CapctlLeaderMissing"}, {f'capctl_leader{{pod="{p}"}}': [None] * SAMPLES for p in "ab"}
    ),
    # A vendor that hangs: each round is 6 timeouts (about a minute, `pending`), then the queue's backoff.
    "re-issues time out": Situation({"CapctlReissuesFailing"}, failing_starts(2, "retryable")),
    # A vendor that answers 500 at once: a round of about 12 s.
    "re-issues refused": Situation({"CapctlReissuesFailing"}, failing_starts(1, "retryable")),
    # Walk 37c-1: Volcengine answers every call 500 (or hangs) from 30 minutes ago: every look fails, the tasks are
    # `unknown`, none is seen stopped, so nothing is re-issued and no start fails: only this alert says it.
    "the vendor down": Situation({"CapctlVendorUnavailable"}, vendor_down(100, SAMPLES)),
    # Down for 15 minutes, back 15 minutes ago: the alert fired, and clears without a human.
    "the vendor back": Situation(set(), vendor_down(100 - 60, 100 - 30)),
    # One poll in six fails (a flaky gateway): the retries absorb it, nobody is paged.
    "a flaky vendor": Situation(
        set(),
        {
            'capctl_vendor_calls_total{pod="a",api="GetSnapshotTask",outcome="ok"}': counter(5),
            'capctl_vendor_calls_total{pod="a",api="GetSnapshotTask",outcome="retryable"}': counter(1),
        },
    ),
    # Walk 38c: the outage's alert on each vendor's APIs, whatever the traffic, through restarts and failovers.
    "ZEGO down": Situation({"CapctlVendorUnavailable"}, vendor_down(100, SAMPLES, "DescribeRecordStatus")),
    "ZEGO down, one task looked at a minute": Situation(
        {"CapctlVendorUnavailable"}, vendor_down(100, SAMPLES, "DescribeRecordStatus", per_sample=0.5)
    ),
    # Walk 38c-4: one task's starts answered 500 (a round of 6 tries) at the retry backoff's cap, every 5
    # minutes, and no other start made: CapctlReissuesFailing says it; no outage besides (the looks answer).
    "one task's starts failing at the backoff cap": Situation(
        {"CapctlReissuesFailing"},
        {
            **failing_starts(1, "retryable"),
            'capctl_vendor_calls_total{pod="a",api="StartSnapshot",outcome="ok"}': flat(0),
            'capctl_vendor_calls_total{pod="a",api="StartSnapshot",outcome="retryable"}': [
                6.0 * (i // 10 + 1) for i in range(SAMPLES)
            ],
        },
    ),
    "the vendor down through a restart": Situation(
        {"CapctlVendorUnavailable"}, {k: restarted(v, 130) for k, v in vendor_down(100, SAMPLES).items()}
    ),
    "the vendor down through a failover": Situation({"CapctlVendorUnavailable"}, failover_in_outage(130)),
    # A daemon with almost nothing to do: its one call in 10 minutes fails (the 5 minutes between hold none).
    "one failed call in ten minutes": Situation(
        set(),
        {
            'capctl_vendor_calls_total{pod="a",api="DescribeRecordStatus",outcome="retryable"}': [
                float(i // 20 + 1) for i in range(SAMPLES)
            ]
        },
    ),
    # One bad job: the vendor refuses its every start (a 4xx: the spec's fault, not an outage).
    "a bad job refused at every start": Situation(
        set(),
        {
            'capctl_vendor_calls_total{pod="a",api="StartSnapshot",outcome="ok"}': flat(0),
            'capctl_vendor_calls_total{pod="a",api="StartSnapshot",outcome="terminal"}': counter(1),
        },
    ),
    # Walk 38c-1: staging's small account throttled on every call; production's healthy calls to the same API
    # (10 times as many) diluted its share to 17 % when the rule summed the namespaces.
    "a second deployment throttled": Situation(
        {"CapctlVendorThrottled"},
        {
            'capctl_vendor_calls_total{pod="a",api="DescribeRecordStatus",outcome="ok"}': counter(10),
            **staging(
                {
                    'capctl_vendor_calls_total{api="DescribeRecordStatus",outcome="throttled"}': counter(2),
                    'capctl_vendor_throttled_total{api="DescribeRecordStatus"}': counter(2),
                }
            ),
        },
    ),
    "throttled": Situation(
        {"CapctlVendorThrottled"}, {'capctl_vendor_throttled_total{pod="a",api="GetSnapshotTask"}': counter(6)}
    ),
    # Walk 37c-2: ZEGO throttles every call of a small deployment (2 tasks looked at every 30 s, about 0.07
    # calls/s): the rate stays under 0.1/s, yet nothing is known of those tasks.
    "every call of a small account throttled": Situation(
        {"CapctlVendorThrottled"},
        {
            'capctl_vendor_calls_total{pod="a",api="DescribeRecordStatus",outcome="ok"}': [60] * 100 + [60] * 60,
            'capctl_vendor_calls_total{pod="a",api="DescribeRecordStatus",outcome="throttled"}': [0] * 100
            + [2.0 * i for i in range(1, 61)],
            'capctl_vendor_throttled_total{pod="a",api="DescribeRecordStatus"}': [0] * 100
            + [2.0 * i for i in range(1, 61)],
        },
    ),
    # One poll in a hundred throttled: paced right, nobody is paged.
    "a throttled call now and then": Situation(
        set(),
        {
            'capctl_vendor_calls_total{pod="a",api="GetSnapshotTask",outcome="throttled"}': counter(0.05),
            'capctl_vendor_throttled_total{pod="a",api="GetSnapshotTask"}': counter(0.05),
        },
    ),
    # One forged callback, to the standby: its `rejected` series moves from 0 to 1 once.
    "a callback rejected": Situation(
        {"CapctlCallbacksRejected"},
        {'capctl_callbacks_total{pod="b",vendor="zego",outcome="rejected"}': [0] * 140 + [1] * 20},
    ),
    "prune held": Situation({"CapctlPruneHeld"}, {'capctl_prune_blocked{pod="a",reason="max-prune"}': flat(3)}),
    # A replica that led before keeps its last count: not the leader's word.
    "a standby's old prune count": Situation(set(), {'capctl_prune_blocked{pod="b",reason="max-prune"}': flat(3)}),
    "prune within its grace": Situation(set(), {'capctl_prune_blocked{pod="a",reason="grace"}': flat(3)}),
    "database down": Situation(
        {"CapctlStateStoreUnreachable", "CapctlLeaderMissing"},
        {
            **{f'capctl_state_store_reachable{{pod="{p}"}}': [1] * 10 + [0] * 150 for p in "ab"},
            **{f'capctl_leader{{pod="{p}"}}': [1 if p == "a" else 0] * 10 + [0] * 150 for p in "ab"},
        },
    ),
    "state writes fail": Situation(
        {"CapctlStateStoreUnreachable"},
        {'capctl_reconcile_errors_total{pod="a",reason="state-write"}': counter(1)},
    ),
    "one replica's specs invalid": Situation({"CapctlSpecSetInvalid"}, {'capctl_spec_set_valid{pod="b"}': flat(0)}),
    "a revoked vendor secret": Situation(
        {"CapctlReconcileErrors"}, {'capctl_reconcile_errors_total{pod="a",reason="vendor-auth"}': counter(1)}
    ),
    "rooms captured late": Situation(
        {"CapctlCoverageBelowTarget"}, {'capctl_rooms_captured{pod="a",job_name="SnapshotJob/audit"}': flat(9)}
    ),
    # The leader loses its lead every 5 minutes and takes it back 2 s later (a starved CPU), for 20 minutes.
    "the lead flaps": Situation(
        {"CapctlLeadershipFlapping"},
        {'capctl_leadership_changes_total{pod="a"}': [1 + 2 * max(0, (i - 110) // 10 + 1) for i in range(SAMPLES)]},
    ),
    # One failover (`a` lost the lead, `b` took it) and `a` restarted by a rollout since: no flapping.
    "a failover, then a rollout": Situation(
        set(),
        {
            'capctl_leader{pod="a"}': [1] * 80 + [0] * 80,
            'capctl_leader{pod="b"}': [0] * 80 + [1] * 80,
            'capctl_leadership_changes_total{pod="a"}': [1] * 80 + [2] * 20 + [0] * 60,
            'capctl_leadership_changes_total{pod="b"}': [0] * 80 + [1] * 80,
            'capctl_tasks{pod="b",status="running"}': [None] * 80 + [10] * 80,
            'capctl_tasks{pod="a",status="running"}': [10] * 80 + [None] * 80,
        },
    ),
    # One pod's git-sync is stuck on an old commit (valid: nothing else fires); a failover would act on it.
    "a replica on old specs": Situation(
        {"CapctlSpecSetsDiffer"},
        {
            f'capctl_spec_set_info{{pod="b",digest="sha256:{NEW}"}}': [None] * SAMPLES,
            f'capctl_spec_set_info{{pod="b",digest="sha256:{OLD}"}}': flat(1),
        },
    ),
    # A roll-out under way for 10 minutes: `a` has the new commit, `b` not yet (a slow git-sync).
    "a git-sync roll-out": Situation(
        set(),
        {
            f'capctl_spec_set_info{{pod="a",digest="sha256:{OLD}"}}': [1] * 140 + [None] * 20,
            f'capctl_spec_set_info{{pod="a",digest="sha256:{NEW}"}}': [None] * 140 + [1] * 20,
            f'capctl_spec_set_info{{pod="b",digest="sha256:{NEW}"}}': [None] * SAMPLES,
            f'capctl_spec_set_info{{pod="b",digest="sha256:{OLD}"}}': flat(1),
        },
    ),
    # Walk 18H-3: one Prometheus scrapes a second deployment (its own namespace and spec repository). Its
    # other spec set is no stuck git-sync; its replicas leading nowhere is a missing leader, whoever leads here.
    "a second deployment on its own specs": Situation(
        set(),
        {
            'capctl_leader{namespace="staging",pod="c"}': flat(1),
            f'capctl_spec_set_info{{namespace="staging",pod="c",digest="sha256:{OLD}"}}': flat(1),
        },
    ),
    # Staging runs the same job, every room captured: production's 10 % lost still shows (it was 100 of 101).
    "rooms lost beside a second deployment's": Situation(
        {"CapctlCoverageBelowTarget"},
        {
            'capctl_rooms_captured{pod="a",job_name="SnapshotJob/audit"}': flat(9),
            'capctl_leader{namespace="staging",pod="c"}': flat(1),
            f'capctl_spec_set_info{{namespace="staging",pod="c",digest="sha256:{OLD}"}}': flat(1),
            'capctl_rooms_active{namespace="staging",pod="c",job_name="SnapshotJob/audit"}': flat(1000),
            'capctl_rooms_captured{namespace="staging",pod="c",job_name="SnapshotJob/audit"}': flat(1000),
        },
    ),
    "a second deployment without a leader": Situation(
        {"CapctlLeaderMissing"},
        {
            'capctl_leader{namespace="staging",pod="c"}': [1] * 10 + [0] * 150,
            f'capctl_spec_set_info{{namespace="staging",pod="c",digest="sha256:{OLD}"}}': flat(1),
        },
    ),
    # Walk 52D-2: staging's pods all gone (crash-looping, an image that does not pull): its series end. Production
    # still answers, so `absent()` saw a capctl_leader and nothing fired for staging.
    "a second deployment's pods all gone": Situation(
        {"CapctlLeaderMissing"},
        {
            'capctl_leader{namespace="staging",pod="c"}': [1] * 100 + [None] * 60,
            f'capctl_spec_set_info{{namespace="staging",pod="c",digest="sha256:{OLD}"}}': [1] * 100 + [None] * 60,
        },
    ),
    # A deployment removed on purpose: its alert clears an hour after its last series.
    "a second deployment removed over an hour ago": Situation(
        set(),
        {
            'capctl_leader{namespace="staging",pod="c"}': [1] * 20 + [None] * 140,
            f'capctl_spec_set_info{{namespace="staging",pod="c",digest="sha256:{OLD}"}}': [1] * 20 + [None] * 140,
        },
    ),
    # The leader's host stepped half an hour ago (NTP): a warning for the hour after it.
    "the wall clock stepped": Situation(
        {"CapctlWallClockStepped"}, {'capctl_wall_clock_steps_total{pod="a"}': [0] * 100 + [1] * 60}
    ),
    "a clock step over an hour ago": Situation(set(), {'capctl_wall_clock_steps_total{pod="a"}': [0] * 20 + [1] * 140}),
    # A replica restarted after a step: its counter starts again from 0, which is no step.
    "a restart after an old step": Situation(
        set(), {'capctl_wall_clock_steps_total{pod="a"}': [0] * 20 + [1] * 20 + [0] * 120}
    ),
}


def values(samples: Samples) -> str:
    return " ".join("_" if v is None else f"{v:g}" for v in samples)


def firing(name: str, fires: set[str], matcher: str = "") -> dict[str, object]:
    """At the end, exactly `fires` are firing among the alerts `matcher` (label matchers, or "") selects."""
    return {
        # The test's name as a label: promtool's report names no test, only the expression.
        "expr": f'label_replace(count by (alertname) (ALERTS{{alertstate="firing"{matcher}}}), '
        f'"situation", "{name}", "", "")',
        "eval_time": f"{(SAMPLES - 1) * STEP}s",
        "exp_samples": [{"labels": f'{{alertname="{a}",situation="{name}"}}', "value": 1} for a in sorted(fires)],
    }


def firing_test(
    name: str, series: dict[str, Samples], fires: set[str], where: Sequence[str] = ("",)
) -> dict[str, object]:
    """One promtool test: firing() holds for each matcher of `where` (one evaluation of the rules serves all)."""
    return {
        "name": name,
        "interval": f"{STEP}s",
        "input_series": [{"series": s, "values": values(v)} for s, v in series.items()],
        "promql_expr_test": [firing(name, fires, matcher) for matcher in where],
    }


def promtool_tests(situations: dict[str, Situation]) -> list[dict[str, object]]:
    return [firing_test(name, healthy() | situation.series, situation.fires) for name, situation in situations.items()]


def run_promtool(tmp_path: Path, tests: list[dict[str, object]]) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    spec = tmp_path / "alerts_test.yaml"
    document = {"rule_files": [str(RULES)], "evaluation_interval": f"{STEP}s", "tests": tests}
    spec.write_text(yaml.safe_dump(document, sort_keys=False))
    return subprocess.run([PROMTOOL, "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)


def test_the_rules_parse() -> None:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def own_namespace(name: str, series: dict[str, Samples]) -> dict[str, Samples]:
    """`series` under the namespace `name` (a second deployment's, `staging`, under `name|staging`)."""
    return {
        s.replace('namespace="staging"', f'namespace="{name}|staging"', 1)
        if 'namespace="staging"' in s
        else s.replace("{", f'{{namespace="{name}",', 1): v
        for s, v in series.items()
    }


def together(situations: dict[str, Situation]) -> dict[str, object]:
    """One promtool test of `situations` side by side, each in its own namespace: what fires in it (or in its
    second deployment's) is checked as if it were alone."""
    assert all(re.fullmatch(r"[\w ,'-]+", name) for name in situations), "a name that is no plain regex"
    series: dict[str, Samples] = {}
    for name, situation in situations.items():
        series |= own_namespace(name, healthy() | situation.series)
    return {
        "name": f"{len(situations)} situations, each in its own namespace",
        "interval": f"{STEP}s",
        "input_series": [{"series": s, "values": values(v)} for s, v in series.items()],
        "promql_expr_test": [
            firing(name, situation.fires, f',namespace=~"{name}(\\\\|staging)?"')
            for name, situation in situations.items()
        ],
    }


def test_each_alert_fires_in_its_situation_and_no_other(tmp_path: Path) -> None:
    """Each situation is evaluated beside the others, in its own namespace (the rules keep `namespace`), all in
    one promtool test: its cost is the evaluation steps (160 a test, about 0.5 s alone, whatever its series)
    far more than the series, and one test per situation took 22 s alone and over 120 s under load. Fewer
    steps would not do: CapctlCoverageBelowTarget holds a 30 minute average for 30 minutes. Series without a
    `namespace` label (most deployments'): "no daemon scraped" (`absent()` sees every namespace's series) and
    "healthy" are evaluated alone here; test_each_alert_names_the_deployment_it_fires_for fires each alert
    on them."""
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    assert {a for situation in SITUATIONS.values() for a in situation.fires} == alerts, "an alert without a situation"
    side_by_side = {name: s for name, s in SITUATIONS.items() if name != "no daemon scraped"}
    result = run_promtool(tmp_path, [together(side_by_side)])
    assert result.returncode == 0, result.stdout + result.stderr
    alone = {name: SITUATIONS[name] for name in ("healthy", "no daemon scraped")}
    result = run_promtool(tmp_path, promtool_tests(alone))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_fails_when_an_alert_stays_quiet(tmp_path: Path) -> None:
    """The check can fail: a situation whose alert does not fire, or where another one does, is reported, alone
    or beside others (and only it)."""
    wrong = {
        "healthy, said to fire": Situation({"CapctlSpecSetInvalid"}),
        "leader gone, said quiet": Situation(set(), SITUATIONS["no replica leads"].series),
    }
    for tests in (promtool_tests(wrong), [together(wrong | {"healthy": SITUATIONS["healthy"]})]):
        result = run_promtool(tmp_path, tests)
        assert result.returncode != 0
        assert "healthy, said to fire" in result.stdout + result.stderr
        assert "leader gone, said quiet" in result.stdout + result.stderr
        assert 'situation="healthy"' not in result.stdout + result.stderr


def in_staging(series: dict[str, Samples]) -> dict[str, Samples]:
    """`series` as a second deployment's (namespace staging) with the same pods and names."""
    return {name.replace("{", '{namespace="staging",', 1): v for name, v in series.items()}


def test_each_alert_names_the_deployment_it_fires_for(tmp_path: Path) -> None:
    """Walk 52d-1: one Prometheus watches production and staging, each in an alert's situation: the alert fires
    for staging with `namespace="staging"` (rules that summed the namespaces away paged with no word of which
    database, secret or spec set was at fault, and Alertmanager could not route by it), and for production,
    whose series have no `namespace` label (as most deployments' do)."""
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    tests = []
    for alert in sorted(alerts):
        # The first situation that fires it in one deployment (`absent()` has no namespace to name).
        name, situation = next(
            (n, s)
            for n, s in SITUATIONS.items()
            if alert in s.fires and n != "no daemon scraped" and not any("namespace=" in k for k in s.series)
        )
        series = healthy() | situation.series | in_staging(healthy() | situation.series)
        where = (',namespace="staging"', ',namespace=""')
        tests.append(firing_test(f"{alert} in staging and production ({name})", series, situation.fires, where))
    result = run_promtool(tmp_path, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboards_held_prunes_are_the_leaders_alone(tmp_path: Path) -> None:
    """Walk 52D-3: a replica that led keeps its last `capctl_prune_blocked` counts; the dashboard's panel summed
    every replica's, so after a failover it showed the old leader's hold beside (or instead of) the new one's."""
    dashboard = json.loads((ROOT / "deploy" / "observability" / "grafana-dashboard.json").read_text())
    (expr,) = [
        t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "capctl_prune_blocked" in t["expr"]
    ]
    series = healthy() | {
        'capctl_prune_blocked{pod="a",reason="max-prune"}': flat(2),  # the leader holds 2
        'capctl_prune_blocked{pod="b",reason="max-prune"}': flat(3),  # the standby's count from when it led
        'capctl_prune_blocked{pod="b",reason="grace"}': flat(1),
    }
    held = {"max-prune": 2, "grace": 0, "provider-missing": 0}
    test: dict[str, object] = {
        "interval": f"{STEP}s",
        "input_series": [{"series": s, "values": values(v)} for s, v in series.items()],
        "promql_expr_test": [
            {
                "expr": expr,
                "eval_time": f"{(SAMPLES - 1) * STEP}s",
                "exp_samples": [{"labels": f'{{reason="{r}"}}', "value": n} for r, n in held.items()],
            }
        ],
    }
    result = run_promtool(tmp_path, [test])
    assert result.returncode == 0, result.stdout + result.stderr
