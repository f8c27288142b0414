"""The Prometheus rules that feed the receiver and the Alertmanager example that delivers them.

The rules file is checked by Prometheus's own ``promtool`` (syntax, and unit tests showing each
alert fires with the labels triage reads), and the Alertmanager example by ``amtool`` (syntax,
and which receiver each alert is routed to). The labels are also checked against the
runbook's vocabulary in ``receiver.runbook``, so a renamed error class breaks this test.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from receiver.config import ServerSettings, TriageSettings
from receiver.keys import SETTINGS
from receiver.metrics import Metrics
from receiver.notify.outbox import DESTINATIONS
from receiver.runbook import ErrorClass, Severity
from receiver.triage import classify, severity_of

ROOT = Path(__file__).resolve().parents[1]
RULES_FILE = ROOT / "helm" / "posthog-incident-receiver" / "files" / "posthog-rules.yaml"
RULES_TESTS = Path(__file__).resolve().parent / "alert_rules" / "posthog-rules.test.yaml"
# The drill's rules look back 8 days: their tests run on an hourly evaluation, in a file of
# their own (each file has one evaluation interval).
DRILL_RULES_TESTS = RULES_TESTS.with_name("posthog-drill-rules.test.yaml")
ALERTMANAGER_EXAMPLE = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RECEIVER_NAME = "posthog-incident-receiver"
# The groups that watch the receiver itself (its own metrics), the drill's among them.
RECEIVER_GROUPS = ("posthog-incident-receiver", "posthog-receiver-drill")


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed (Debian package {package}; ./dev.sh test installs it)"
        )
    return path


def run(argv: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


def rule_groups() -> dict[str, list[dict[str, Any]]]:
    data = yaml.safe_load(RULES_FILE.read_text())
    return {group["name"]: group["rules"] for group in data["groups"]}


def receiver_rules() -> list[dict[str, Any]]:
    groups = rule_groups()
    return [rule for name in RECEIVER_GROUPS for rule in groups[name]]


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` accepts the rules file."""
    result = run([tool("promtool", "prometheus"), "check", "rules", str(RULES_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_each_alert_fires_with_the_labels_triage_reads() -> None:
    """`promtool test rules`: each alert fires for its class with its labels, and only then."""
    files = (RULES_TESTS, DRILL_RULES_TESTS)
    for file in files:
        result = run([tool("promtool", "prometheus"), "test", "rules", file.name], cwd=file.parent)
        assert result.returncode == 0, result.stdout + result.stderr
    # The unit tests cover every alert in the file.
    tests = [t for file in files for t in yaml.safe_load(file.read_text())["tests"]]
    tested = {
        case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]
    }
    defined = {rule["alert"] for rules in rule_groups().values() for rule in rules}
    assert tested == defined


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests fail when a rule's labels change (they are not vacuous)."""
    broken = RULES_FILE.read_text().replace("error_type: rate_limited", "error_type: throttled")
    rules = tmp_path / "posthog-rules.yaml"
    rules.write_text(broken)
    tests = yaml.safe_load(RULES_TESTS.read_text())
    tests["rule_files"] = [str(rules)]
    test_file = tmp_path / "posthog-rules.test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = run([tool("promtool", "prometheus"), "test", "rules", str(test_file)])
    assert result.returncode != 0
    assert "PostHogRateLimited" in result.stdout + result.stderr


def test_integration_alerts_speak_the_runbook_vocabulary() -> None:
    """Each integration alert carries a runbook error class and priority, and keeps status_code."""
    classes = set()
    for rule in rule_groups()["posthog-integration"]:
        labels = rule["labels"]
        assert rule["alert"].startswith("PostHog")
        assert ErrorClass(labels["error_type"]) is not ErrorClass.UNKNOWN
        assert Severity(labels["priority"])
        assert labels["severity"] in {"critical", "warning"}
        assert "posthog_errors_total" in rule["expr"]
        if labels["error_type"] != ErrorClass.NETWORK:
            # One alert per status code and integration: the aggregation keeps those labels.
            assert "sum by (namespace, job, cluster, status_code)" in rule["expr"]
        classes.add(labels["error_type"])
    assert classes == {c.value for c in ErrorClass} - {ErrorClass.UNKNOWN.value}


@pytest.mark.parametrize(
    ("alertname", "status_code"),
    [
        ("PostHogAuthErrors", "401"),
        ("PostHogAuthErrors", "403"),
        ("PostHogRateLimited", "429"),
        ("PostHogUpstreamErrors", "500"),
        ("PostHogUpstreamErrors", "501"),
        ("PostHogUpstreamErrors", "503"),
        ("PostHogNetworkErrors", None),
    ],
)
def test_triage_reads_each_alert_as_intended(alertname: str, status_code: str | None) -> None:
    """Triage, with its default rules, gives each alert the class and priority its labels name."""
    (rule,) = [r for r in rule_groups()["posthog-integration"] if r["alert"] == alertname]
    labels = {"alertname": alertname, **rule["labels"]}
    if status_code is not None:
        labels["status_code"] = status_code
    settings = TriageSettings()
    error_class = classify(labels, settings)
    assert error_class == ErrorClass(rule["labels"]["error_type"])
    assert severity_of(labels, error_class, settings) == Severity(rule["labels"]["priority"])


def test_receiver_alerts_watch_its_own_metrics() -> None:
    """The self-monitoring alerts select the receiver's scrape job and its own metric names."""
    for rule in receiver_rules():
        assert rule["alert"].startswith("PostHogReceiver")
        assert f'job="{RECEIVER_NAME}"' in rule["expr"]
        assert Severity(rule["labels"]["priority"])
        assert "error_type" not in rule["labels"]  # never routed to the receiver itself


def test_receiver_alerts_use_metrics_the_receiver_exports() -> None:
    """Every posthog_receiver_* series a rule selects is one the receiver's registry exports."""
    exported = set()
    for family in Metrics().registry.collect():
        exported.update(sample.name for sample in family.samples)
        exported.add(family.name)
    # Counters are exported as <name>_total; a family with labels has no samples until used.
    exported |= {f"{name}_total" for name in exported}
    referenced = set(re.findall(r"posthog_receiver_[a-z_]+", RULES_FILE.read_text()))
    assert referenced
    assert referenced <= exported


def test_amtool_accepts_the_alertmanager_example() -> None:
    """`amtool check-config` accepts the example alertmanager.yml."""
    result = run(
        [tool("amtool", "prometheus-alertmanager"), "check-config", str(ALERTMANAGER_EXAMPLE)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=PostHogAuthErrors", "error_type=auth", "status_code=401"], RECEIVER_NAME),
        (
            ["alertname=PostHogRateLimited", "error_type=rate_limited", "status_code=429"],
            RECEIVER_NAME,
        ),
        (
            ["alertname=PostHogUpstreamErrors", "error_type=upstream_error", "status_code=503"],
            RECEIVER_NAME,
        ),
        (["alertname=PostHogNetworkErrors", "error_type=network"], RECEIVER_NAME),
        (["alertname=PostHogReceiverDown", "severity=critical"], "platform-oncall"),
        (["alertname=PostHogReceiverWebhooksRejected", "outcome=unauthorized"], "platform-oncall"),
        (["alertname=KubePodCrashLooping"], "platform-oncall"),
    ],
)
def test_alertmanager_routes_posthog_alerts_to_the_receiver(
    labels: list[str], receiver: str
) -> None:
    """The PostHog alerts go to the receiver; alerts about the receiver itself go to people."""
    argv = [tool("amtool", "prometheus-alertmanager"), "config", "routes", "test"]
    result = run([*argv, f"--config.file={ALERTMANAGER_EXAMPLE}", *labels])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_alertmanager_example_delivers_what_the_receiver_needs() -> None:
    """Bearer token from a file, resolved alerts sent, no truncation, a group per status code."""
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    (receiver,) = [r for r in config["receivers"] if r["name"] == RECEIVER_NAME]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"].endswith(f":{ServerSettings().port}/webhook/alertmanager")
    assert webhook["send_resolved"] is True
    assert webhook["max_alerts"] == 0
    auth = webhook["http_config"]["authorization"]
    assert auth["type"] == "Bearer"
    assert auth["credentials_file"].endswith("/webhook-token")
    assert "credentials" not in auth
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == RECEIVER_NAME]
    assert {"alertname", "status_code"} <= set(route["group_by"])
    for timing in ("group_wait", "group_interval", "repeat_interval"):
        assert timing in route


# --- the example config, run by a real Alertmanager ---------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _example_with(url: str, token_file: Path) -> dict[str, Any]:
    """The example, delivering to ``url`` with the token in ``token_file``, timings shortened."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    (receiver,) = [r for r in config["receivers"] if r["name"] == RECEIVER_NAME]
    webhook = receiver["webhook_configs"][0]
    webhook["url"] = url
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s")
    return config


@pytest_asyncio.fixture()
async def alertmanager_delivering_here(
    tmp_path: Path,
) -> AsyncIterator[tuple[str, str, asyncio.Queue[tuple[dict[str, str], dict[str, Any]]]]]:
    """A real Alertmanager on the example config, delivering webhooks to a server in this test.

    Yields Alertmanager's URL, the bearer token and a queue of (headers, payload) received.
    """
    binary = tool("prometheus-alertmanager", "prometheus-alertmanager")
    received: asyncio.Queue[tuple[dict[str, str], dict[str, Any]]] = asyncio.Queue()

    async def webhook(request: web.Request) -> web.Response:
        await received.put((dict(request.headers), await request.json()))
        return web.json_response({"status": "stored"})

    app = web.Application()
    app.router.add_post("/webhook/alertmanager", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server_port = runner.addresses[0][1]
    token = "token-from-the-chart-secret"
    token_file = tmp_path / "webhook-token"
    token_file.write_text(token + "\n")
    config_file = tmp_path / "alertmanager.yml"
    url = f"http://127.0.0.1:{server_port}/webhook/alertmanager"
    config_file.write_text(yaml.safe_dump(_example_with(url, token_file)))
    port = _free_port()
    am_url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config_file}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={am_url}",
        "--cluster.listen-address=",
        stdout=log,
        stderr=log,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{am_url}/-/ready") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            else:
                log.flush()
                output = (tmp_path / "alertmanager.log").read_text()[-2000:]
                pytest.fail(f"Alertmanager did not become ready:\n{output}")
        yield am_url, token, received
    finally:
        process.terminate()
        await process.wait()
        log.close()
        await runner.cleanup()


async def _post_alerts(am_url: str, alerts: list[dict[str, Any]]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{am_url}/api/v2/alerts", json=alerts) as response,
    ):
        assert response.status == 200, await response.text()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_example_config_delivers_to_the_receiver_with_its_token(
    alertmanager_delivering_here: tuple[
        str, str, asyncio.Queue[tuple[dict[str, str], dict[str, Any]]]
    ],
) -> None:
    """Real Alertmanager on the example: PostHog alerts sent with the token, per code, resolved."""
    am_url, token, received = alertmanager_delivering_here
    now = datetime.now(UTC)
    labels = {"alertname": "PostHogAuthErrors", "error_type": "auth", "status_code": "401",
              "severity": "critical", "priority": "P1", "namespace": "posthog",
              "job": "posthog-integration"}  # fmt: skip
    about_receiver = {"alertname": "PostHogReceiverDown", "severity": "critical"}
    await _post_alerts(
        am_url,
        [
            {"labels": labels, "startsAt": now.isoformat()},
            {"labels": about_receiver, "startsAt": now.isoformat()},
        ],
    )
    headers, payload = await asyncio.wait_for(received.get(), timeout=20)
    assert headers["Authorization"] == f"Bearer {token}"
    assert payload["version"] == "4"
    assert payload["receiver"] == RECEIVER_NAME
    assert payload["status"] == "firing"
    # No cluster label on these alerts: it stays out of the group's labels.
    assert payload["groupLabels"] == {"alertname": "PostHogAuthErrors", "namespace": "posthog",
                                      "status_code": "401"}  # fmt: skip
    assert [a["labels"] for a in payload["alerts"]] == [labels]
    assert payload["truncatedAlerts"] == 0

    # Resolving it is sent too (send_resolved), to the same receiver.
    await _post_alerts(am_url, [{"labels": labels, "startsAt": now.isoformat(),
                                 "endsAt": datetime.now(UTC).isoformat()}])  # fmt: skip
    while True:
        headers, payload = await asyncio.wait_for(received.get(), timeout=20)
        assert payload["groupLabels"]["alertname"] == "PostHogAuthErrors"  # never the self-alert
        if payload["status"] == "resolved":
            break
    assert headers["Authorization"] == f"Bearer {token}"
    assert payload["alerts"][0]["status"] == "resolved"


# --- the self-monitoring rules against a fresh receiver's /metrics ----------------------------

# One selector of a posthog_receiver_* metric in a PromQL expression, and one label matcher.
SELECTOR = re.compile(r"\b(posthog_receiver_[a-z_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
# Added by Prometheus from the scrape target, never by the receiver.
TARGET_LABELS = {"job", "instance", "namespace", "cluster", "pod"}


def rule_selectors() -> list[tuple[str, str, dict[str, list[str]]]]:
    """(alert, metric, {label: every value the rule selects}) for each receiver selector in an
    expression. Only positive matchers on plain values (``=`` and ``=~"a|b"``) are kept."""
    found = []
    for rule in receiver_rules():
        for metric, matchers in SELECTOR.findall(rule["expr"]):
            wanted: dict[str, list[str]] = {}
            for label, op, value in MATCHER.findall(matchers):
                if label in TARGET_LABELS or op not in ("=", "=~"):
                    continue
                values = value.split("|") if op == "=~" else [value]
                if all(re.fullmatch(r"\w+", v) for v in values):
                    wanted[label] = values
            found.append((rule["alert"], metric, wanted))
    return found


def test_rule_selectors_are_parsed() -> None:
    """The parser sees every receiver metric the expressions select, with their matchers."""
    selectors = rule_selectors()
    assert {metric for _, metric, _ in selectors} == set(
        re.findall(
            r"posthog_receiver_[a-z_]+",
            " ".join(r["expr"] for r in receiver_rules()),
        )
    )
    assert (
        "PostHogReceiverWebhooksRejected",
        "posthog_receiver_webhooks_total",
        {"outcome": ["unauthorized", "bad_request", "too_large", "unsupported_media_type"]},
    ) in selectors


@pytest.mark.asyncio
async def test_fresh_receiver_exports_every_series_the_rules_select(
    client: Any,
) -> None:
    """A receiver that has seen nothing yet already serves, at 0, every series a self-monitoring
    rule selects, for every known destination and runbook action: increase() and rate() over a
    series that first appears at 1 see no increase, so the first failure would not fire."""
    answer = await client.get("/metrics")
    assert answer.status == 200
    series: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(await answer.text()):
        for sample in family.samples:
            series.setdefault(sample.name, []).append(sample.labels)
    actions = [a.name for a in client.app[SETTINGS].remediation.actions]
    assert actions
    missing = []
    for alert, metric, wanted in rule_selectors():
        present = series.get(metric, [])
        combos = [dict(zip(wanted, values, strict=True)) for values in product(*wanted.values())]
        for combo in combos:
            matching = [labels for labels in present if combo.items() <= labels.items()]
            if not matching:
                missing.append((alert, metric, combo))
                continue
            # Grouped by destination or action: each known one has its own series from the start.
            if "destination" in matching[0]:
                have = {labels["destination"] for labels in matching}
                missing += [(alert, metric, {**combo, "destination": d}) for d in
                            sorted(set(DESTINATIONS) - have)]  # fmt: skip
            if "action" in matching[0]:
                have = {labels["action"] for labels in matching}
                missing += [(alert, metric, {**combo, "action": a}) for a in
                            sorted(set(actions) - have)]  # fmt: skip
    assert not missing, missing


# --- labels Alertmanager groups by, and the runbook link -------------------------------------

KEPT = {"namespace", "job", "cluster"}
CHART_VALUES = ROOT / "helm" / "posthog-incident-receiver" / "values.yaml"
ALERTS_DOC = ROOT / "docs" / "alerts.md"


def test_every_aggregation_keeps_namespace_job_and_cluster() -> None:
    """Each `by (...)` keeps namespace, job and cluster; nothing aggregates them away."""
    for rules in rule_groups().values():
        for rule in rules:
            expr = " ".join(rule["expr"].split())
            assert " without " not in expr, rule["alert"]
            clauses = re.findall(r"\b(?:sum|max|min|avg|count) by \(([^)]*)\)", expr)
            bare = re.findall(r"\b(?:sum|max|min|avg|count) *\(", expr)
            assert clauses or "absent(" in expr, rule["alert"]
            assert not bare, (rule["alert"], "aggregates every label away")
            for clause in clauses:
                assert {label.strip() for label in clause.split(",")} >= KEPT, rule["alert"]


def test_every_alert_links_its_section_of_the_runbook() -> None:
    """runbook_url is the chart's default base plus the alert's heading in docs/alerts.md."""
    base = yaml.safe_load(CHART_VALUES.read_text())["prometheusRule"]["runbookBaseUrl"]
    assert base.endswith("/docs/alerts.md")
    headings = set(re.findall(r"^## (\w+)$", ALERTS_DOC.read_text(), flags=re.MULTILINE))
    for rules in rule_groups().values():
        for rule in rules:
            assert rule["annotations"]["runbook_url"] == f"{base}#{rule['alert'].lower()}"
            assert rule["alert"] in headings


def _group_bys() -> list[list[str]]:
    example = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    (route,) = [r for r in example["route"]["routes"] if r["receiver"] == RECEIVER_NAME]
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("## Pointing Alertmanager at it", 1)[1].split("```yaml", 1)[1]
    readme_route = yaml.safe_load(snippet.split("```", 1)[0])["route"]
    return [route["group_by"], readme_route["group_by"]]


def test_alertmanager_group_by_uses_labels_the_alerts_carry() -> None:
    """Each label the README and the example group by is one the PostHog alerts carry or keep."""
    carried = {"alertname"} | KEPT | {"status_code"}
    for rule in rule_groups()["posthog-integration"]:
        carried |= set(rule["labels"])
    for group_by in _group_bys():
        assert set(group_by) <= carried, group_by
        assert {"alertname", "status_code", "namespace"} <= set(group_by)
