"""The responder in the running service: webhook in, triage stored, people told, nothing twice.

Every test runs the real application through ``aiohttp_client``; only the outside systems
are fakes, on loopback HTTP: PostHog's status page, PagerDuty, Slack.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tarfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from receiver.app import create_app
from receiver.config import KubernetesSettings, Settings, load_settings
from receiver.evidence import bundles_for
from receiver.keys import STORE
from receiver.notify.outbox import list_messages
from receiver.store.incidents import (
    events_with_errors,
    get_incident,
    replay_events,
    unfinished_events,
)
from tests.conftest import remediation_settings
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack, markup
from tests.fakes.status_page import FakeStatusPage
from tests.helpers import ROUTING_KEY
from tests.kube_emulator import DEPLOYMENTS, PODS, ClusterEmulator, deployment, pod

GROUP_KEY = '{}:{alertname="PostHogErrorRateHigh"}'
AppClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def alert(fp: str = "a1", status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "PostHogErrorRateHigh", "service": "posthog-integration", **labels},
        "annotations": {"summary": "PostHog error rate above 5%"},
        "startsAt": "2026-11-23T05:00:00Z",
        "endsAt": "2026-11-23T05:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=posthog_errors_total",
        "fingerprint": fp,
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": GROUP_KEY,
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": "posthog-receiver",
        "groupLabels": {"alertname": "PostHogErrorRateHigh"},
        "commonLabels": {"alertname": "PostHogErrorRateHigh"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(0.02)


def make_settings(
    tmp_path: Path,
    status_page: FakeStatusPage,
    *,
    pagerduty: FakePagerDuty | None = None,
    slack: FakeSlack | None = None,
    **groups: dict[str, Any],
) -> Settings:
    notify: dict[str, Any] = {
        "outbox": {
            "poll_interval_seconds": 0.02,
            "initial_backoff_seconds": 0.05,
            "jitter_seconds": 0,
        }
    }
    if pagerduty is not None:
        notify["pagerduty"] = {
            "routing_key": {"value": ROUTING_KEY},
            "events_url": pagerduty.url,
            "timeout_seconds": 2,
        }
    if slack is not None:
        notify["slack"] = {"webhook_url": {"value": slack.webhook_url}, "timeout_seconds": 2}
    data: dict[str, Any] = {
        "webhook": {"allow_unauthenticated": True},
        "store": {"path": str(tmp_path / "state" / "receiver.sqlite3")},
        "triage": {
            "upstream": {"url": status_page.url(), "timeout_seconds": 1, "cache_ttl_seconds": 0}
        },
        "notify": notify,
        "responder": {"revert_check_seconds": 0.05},
        "evidence": {"directory": str(tmp_path / "evidence")},
        **groups,
    }
    return Settings(**data)


async def post(client: TestClient[Any, Any], body: dict[str, Any]) -> None:
    response = await client.post("/webhook/alertmanager", json=body)
    assert response.status == 200, await response.text()


async def only_incident(client: TestClient[Any, Any]) -> dict[str, Any]:
    listed = await (await client.get("/api/incidents")).json()
    assert len(listed["incidents"]) == 1
    response = await client.get(f"/api/incidents/{listed['incidents'][0]['id']}")
    assert response.status == 200
    found: dict[str, Any] = await response.json()
    return found


async def triaged_incident(client: TestClient[Any, Any]) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        listed = await (await client.get("/api/incidents")).json()
        if not listed["incidents"] or listed["incidents"][0]["errorClass"] is None:
            return None
        return await only_incident(client)

    found: dict[str, Any] = await eventually(check)
    return found


async def events_done(client: TestClient[Any, Any]) -> bool:
    return await client.app[STORE].read(unfinished_events) == 0


async def _resolved_and_done(client: TestClient[Any, Any], incident_id: str) -> bool:
    found = await client.app[STORE].read(lambda c: get_incident(c, incident_id))
    assert found is not None
    return found["status"] == "resolved" and await events_done(client)


async def outbox_settled(client: TestClient[Any, Any]) -> list[dict[str, Any]] | None:
    """The stored notifications once every one is delivered (or given up), else ``None``."""
    messages = await client.app[STORE].read(list_messages)
    if any(m["state"] == "pending" for m in messages):
        return None
    return messages


@pytest.mark.asyncio
async def test_webhook_ends_with_the_decision_on_the_incident(
    tmp_path: Path, status_page: FakeStatusPage, aiohttp_client: AppClient
) -> None:
    """A posted 429 alert is classified, walked through the tree and shown by the API."""
    client = await aiohttp_client(create_app(make_settings(tmp_path, status_page)))
    await post(client, payload(alert(status_code="429", severity="warning")))

    incident = await triaged_incident(client)
    assert incident["errorClass"] == "rate_limited"
    assert incident["severity"] == "P3"
    assert incident["acknowledgeBy"] == "2026-11-23T09:00:00Z"  # P3: four hours
    decision = incident["decision"]
    assert decision["verdict"] == "our_integration"
    assert decision["steps"][0]["answer"] == "no"  # PostHog's status page is green
    assert status_page.requests  # the tree really asked the status page
    assert "triage" in [t["kind"] for t in incident["timeline"]]


@pytest.mark.asyncio
async def test_vendor_incident_is_the_verdict_when_posthog_reports_one(
    tmp_path: Path, status_page: FakeStatusPage, aiohttp_client: AppClient
) -> None:
    """With PostHog's status page showing a major outage, 503s are a vendor incident."""
    status_page.indicator = "major"
    client = await aiohttp_client(create_app(make_settings(tmp_path, status_page)))
    await post(client, payload(alert(status_code="503")))

    incident = await triaged_incident(client)
    assert incident["errorClass"] == "upstream_error"
    assert incident["decision"]["verdict"] == "vendor_incident"


@pytest_asyncio.fixture
async def paging(
    tmp_path: Path,
    status_page: FakeStatusPage,
    pagerduty: FakePagerDuty,
    slack: FakeSlack,
    aiohttp_client: AppClient,
) -> TestClient[Any, Any]:
    """The app notifying the fake PagerDuty and Slack (no cluster: remediation dry-runs)."""
    settings = make_settings(tmp_path, status_page, pagerduty=pagerduty, slack=slack)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


@pytest.mark.asyncio
async def test_pagerduty_is_triggered_then_resolved(
    paging: TestClient[Any, Any], pagerduty: FakePagerDuty, slack: FakeSlack
) -> None:
    """Opening pages PagerDuty and tells Slack; resolving resolves the same PagerDuty alert."""
    client = paging
    await post(client, payload(alert(status_code="401", severity="critical")))
    await eventually(lambda: _true(len(pagerduty.alerts) >= 1))
    await eventually(lambda: events_done(client))

    await post(client, payload(alert(status="resolved", status_code="401", severity="critical")))
    await eventually(lambda: _true(any(a["event_action"] == "resolve" for a in pagerduty.alerts)))
    # Each destination has its own queue: Slack's resolve may come after PagerDuty's.
    await eventually(lambda: _true(len(slack.texts) >= 3))

    actions = [a["event_action"] for a in pagerduty.alerts]
    assert actions == ["trigger", "resolve"]
    trigger, resolve = pagerduty.alerts
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["custom_details"]["class"] == "auth"
    assert trigger["payload"]["custom_details"]["decision_path"]  # the tree's steps go along
    # Opened, the runbook's auth action (a dry run here: no cluster), resolved.
    opened, action, resolved = slack.texts
    assert opened.startswith("🔴 P1 INCIDENT")
    assert "Current action: restart_for_rotated_key dry run" in action
    assert resolved.startswith("✅ P1 INCIDENT")
    assert pagerduty.rejected == []


@pytest.mark.asyncio
async def test_a_rising_severity_updates_the_page(
    tmp_path: Path,
    status_page: FakeStatusPage,
    pagerduty: FakePagerDuty,
    aiohttp_client: AppClient,
) -> None:
    """A critical alert joining a warning one raises the incident to P1 and re-triggers."""
    settings = make_settings(tmp_path, status_page, pagerduty=pagerduty)
    client = await aiohttp_client(create_app(settings))
    warning = alert("a1", status_code="429", severity="warning")
    await post(client, payload(warning))
    await triaged_incident(client)
    await eventually(lambda: events_done(client))
    await post(client, payload(warning, alert("b2", status_code="503", severity="critical")))

    await eventually(lambda: _true(len(pagerduty.alerts) == 2))
    first, second = pagerduty.alerts
    assert (first["payload"]["severity"], second["payload"]["severity"]) == ("warning", "critical")
    assert first["dedup_key"] == second["dedup_key"]  # the same alert, updated
    incident = await only_incident(client)
    assert (incident["severity"], incident["errorClass"]) == ("P1", "upstream_error")
    assert "severity_raised" in [t["kind"] for t in incident["timeline"]]


@pytest.mark.asyncio
async def test_hostile_labels_reach_people_as_text_only(
    paging: TestClient[Any, Any], pagerduty: FakePagerDuty, slack: FakeSlack
) -> None:
    """Group labels that try to ping, link, add lines or overflow reach Slack and PagerDuty
    as escaped, bounded text; a foreign generatorURL is not linked."""
    client = paging
    hostile = {
        "team": "<!channel> <@U123> <http://evil.example|x>",
        "note": "ok\nStatus: RESOLVED\x07\u202e",
        # Within the intake's limits, and still past PagerDuty's 512 KB as JSON (\ud83d\ude00).
        **{f"big{i}": "<&>\U0001f600" * 1000 for i in range(60)},
    }
    body = payload(alert(status_code="401", severity="critical"))
    body["groupLabels"] = {**body["groupLabels"], **hostile}
    body["alerts"][0]["generatorURL"] = "http://evil.example/graph?g0.expr=up"
    await post(client, body)
    await eventually(lambda: _true(len(pagerduty.alerts) >= 1 and len(slack.texts) >= 2))

    assert (pagerduty.rejected, slack.rejected) == ([], [])
    for text in slack.texts:
        assert len(text) <= 3000
        # The only <...> Slack acts on is the incident's link, on the last line.
        (link,) = markup(text)
        assert text.splitlines()[-1].endswith(f"<{link}>")
        assert "/incidents/inc-" in link
        assert "/api/" not in link
        assert "Status: RESOLVED" not in text.splitlines()
    trigger = pagerduty.alerts[0]
    assert "\n" not in trigger["payload"]["summary"]
    assert len(trigger["payload"]["summary"]) <= 1024
    assert not [link for link in trigger["links"] if "evil" in link["href"]]
    assert "512 KB" in trigger["payload"]["custom_details"]["truncated"]


@pytest.mark.asyncio
async def test_readiness_includes_the_notification_outbox(
    tmp_path: Path, status_page: FakeStatusPage, aiohttp_client: AppClient
) -> None:
    """/readyz reports the outbox worker beside the store, the spool and the incident worker."""
    client = await aiohttp_client(create_app(make_settings(tmp_path, status_page)))
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {
        "store": True,
        "spool": True,
        "worker": True,
        "outbox": True,
        "status": "ready",
        "paused": False,
        "leading": True,
    }


@pytest.mark.asyncio
async def test_handling_events_again_pages_nobody_twice(
    paging: TestClient[Any, Any], pagerduty: FakePagerDuty, slack: FakeSlack
) -> None:
    """Events handled again (a crash before they were marked done) store no new message."""
    client = paging
    await post(client, payload(alert(status_code="401", severity="critical")))
    incident = await triaged_incident(client)
    await eventually(lambda: events_done(client))  # acted while open
    await post(client, payload(alert(status="resolved", status_code="401", severity="critical")))
    await eventually(lambda: _resolved_and_done(client, incident["id"]))
    before = await eventually(lambda: outbox_settled(client))

    # As after a crash between acting and marking the events done: all are due again.
    store = client.app[STORE]
    assert await store.write(replay_events)
    await eventually(lambda: events_done(client))
    after = await eventually(lambda: outbox_settled(client))

    assert [m["id"] for m in after] == [m["id"] for m in before]
    assert [a["event_action"] for a in pagerduty.alerts] == ["trigger", "resolve"]
    assert len(slack.texts) == 3  # opened, the action, resolved


@pytest.mark.asyncio
async def test_embedded_default_config_handles_an_alert_end_to_end(
    tmp_path: Path,
    status_page: FakeStatusPage,
    aiohttp_client: AppClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shipped default (dry run, notifications to the log, no cluster) runs without error."""
    monkeypatch.setenv("POSTHOG_RECEIVER_WEBHOOK_TOKEN", "t0ken-for-the-default-config")
    default = load_settings(None)
    # Only where state lives and where PostHog's status is read: no writes into the
    # working directory, no calls to the internet from tests.
    settings = default.model_copy(
        update={
            "store": default.store.model_copy(update={"path": tmp_path / "receiver.sqlite3"}),
            "evidence": default.evidence.model_copy(update={"directory": tmp_path / "evidence"}),
            "triage": default.triage.model_copy(
                update={
                    "upstream": default.triage.upstream.model_copy(
                        update={"url": status_page.url()}
                    )
                }
            ),
        }
    )
    client = await aiohttp_client(create_app(settings))
    headers = {"Authorization": "Bearer t0ken-for-the-default-config"}
    with capture_logs() as logs:
        response = await client.post(
            "/webhook/alertmanager", json=payload(alert(status_code="503")), headers=headers
        )
        assert response.status == 200
        incident_id = (await eventually(lambda: _incident_ids(client, headers)))[0]
        await eventually(lambda: events_done(client))
        messages = await eventually(lambda: outbox_settled(client))

        response = await client.post(
            "/webhook/alertmanager",
            json=payload(alert(status="resolved", status_code="503")),
            headers=headers,
        )
        assert response.status == 200
        await eventually(lambda: _resolved_and_done(client, incident_id))
        messages = await eventually(lambda: outbox_settled(client))

    assert {m["destination"] for m in messages} == {"log"}
    assert all(m["state"] == "sent" for m in messages)
    kinds = [m["kind"] for m in messages]
    assert "pagerduty.trigger" in kinds
    assert "pagerduty.resolve" in kinds
    incident = await (await client.get(f"/api/incidents/{incident_id}", headers=headers)).json()
    assert incident["status"] == "resolved"
    assert incident["decision"]["verdict"] == "our_integration"
    assert await client.app[STORE].read(events_with_errors) == 0
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]
    assert [e for e in logs if e["event"] == "notification"]  # written to the log


@pytest.mark.asyncio
async def test_evidence_on_open_and_a_postmortem_draft_on_resolve(
    tmp_path: Path, status_page: FakeStatusPage, aiohttp_client: AppClient
) -> None:
    """A bundle is written when the incident opens and, with the postmortem, when it resolves."""
    client = await aiohttp_client(create_app(make_settings(tmp_path, status_page)))
    await post(client, payload(alert(status_code="503")))
    incident = await triaged_incident(client)
    await post(client, payload(alert(status="resolved", status_code="503")))
    await eventually(lambda: _resolved_and_done(client, incident["id"]))

    records = await client.app[STORE].read(lambda c: bundles_for(c, incident["id"]))
    assert [r.phase for r in records] == ["opened", "resolved"]
    with tarfile.open(records[-1].path, "r:gz") as tar:
        names = {m.name.split("/", 1)[-1] for m in tar.getmembers()}
    assert {"manifest.json", "postmortem.md"} <= names
    response = await client.get(f"/api/incidents/{incident['id']}/postmortem")
    assert response.status == 200
    draft = await response.text()
    assert draft.startswith("## Incident: PostHog Errors (500/503)")  # the stored class
    assert "### Root Cause" in draft
    assert "vendor_incident" in draft or "our_integration" in draft  # the tree's verdict


# -- with the Kubernetes emulator -------------------------------------------------------------

NAME = "posthog-integration"
HOLD_DOWN = 0.5


def integration_env(cluster: ClusterEmulator) -> dict[str, str]:
    spec = cluster.current(DEPLOYMENTS, "prod", NAME)["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == NAME)
    return {e["name"]: e["value"] for e in container.get("env", [])}


@pytest_asyncio.fixture
async def acting(
    tmp_path: Path,
    status_page: FakeStatusPage,
    pagerduty: FakePagerDuty,
    cluster: ClusterEmulator,
    kube_settings: KubernetesSettings,
    aiohttp_client: AppClient,
) -> TestClient[Any, Any]:
    """The app acting on the integration Deployment in ``prod``, which has two ready pods."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    for name in ("posthog-integration-7d9f-a", "posthog-integration-7d9f-b"):
        cluster.put_object(PODS, "prod", name, pod(name, started="2026-11-23T04:00:00Z"))
    settings = make_settings(
        tmp_path,
        status_page,
        pagerduty=pagerduty,
        kubernetes=kube_settings.model_dump(),
        remediation=remediation_settings(revert_hold_down_seconds=HOLD_DOWN).model_dump(),
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def remediation_entries(client: TestClient[Any, Any], incident_id: str) -> list[Any]:
    response = await client.get(f"/api/incidents/{incident_id}")
    incident = await response.json()
    return [t for t in incident["timeline"] if t["kind"] == "remediation"]


@pytest.mark.asyncio
async def test_rate_limited_sets_queue_mode_and_resolve_reverts_after_the_hold_down(
    acting: TestClient[Any, Any], pagerduty: FakePagerDuty, cluster: ClusterEmulator
) -> None:
    """429s set RATE_LIMIT_MODE=queue; once resolved and the hold-down passed, it is removed."""
    client = acting
    await post(client, payload(alert(status_code="429")))
    incident = await triaged_incident(client)
    await eventually(lambda: events_done(client))

    assert incident["decision"]["verdict"] == "our_integration"  # pods healthy, page green
    assert integration_env(cluster) == {"LOG_LEVEL": "info", "RATE_LIMIT_MODE": "queue"}
    applied = await remediation_entries(client, incident["id"])
    assert [(e["data"]["action"], e["data"]["status"]) for e in applied] == [
        ("enable_request_queuing", "applied")
    ]

    await post(client, payload(alert(status="resolved", status_code="429")))
    await eventually(lambda: _true("RATE_LIMIT_MODE" not in integration_env(cluster)))
    assert integration_env(cluster) == {"LOG_LEVEL": "info"}

    resolved = await only_incident(client)
    entries = await remediation_entries(client, incident["id"])
    reverted = [e for e in entries if e["data"]["status"] == "reverted"]
    assert len(reverted) == 1
    waited = _stamp(reverted[0]["at"]) - _stamp(resolved["resolvedAt"])
    assert waited >= HOLD_DOWN  # not before the hold-down

    # PagerDuty: paged, told of the change, resolved, told of the revert.
    await eventually(lambda: _true(len(pagerduty.changes) == 2))
    assert [a["event_action"] for a in pagerduty.alerts] == ["trigger", "resolve"]
    summaries = [c["payload"]["summary"] for c in pagerduty.changes]
    assert "enable_request_queuing applied" in summaries[0]
    assert "enable_request_queuing reverted" in summaries[1]


@pytest.mark.asyncio
async def test_an_event_handled_again_neither_acts_nor_pages_twice(
    acting: TestClient[Any, Any], pagerduty: FakePagerDuty, cluster: ClusterEmulator
) -> None:
    """After a crash between acting and marking the event done, the replay changes nothing."""
    client = acting
    await post(client, payload(alert(status_code="429")))
    incident = await triaged_incident(client)
    await eventually(lambda: events_done(client))
    sent = await eventually(lambda: outbox_settled(client))
    patches = len(cluster.writes("deployments"))
    assert patches >= 1

    store = client.app[STORE]
    assert await store.write(replay_events)
    await eventually(lambda: events_done(client))
    again = await eventually(lambda: outbox_settled(client))

    assert len(cluster.writes("deployments")) == patches
    assert [m["id"] for m in again] == [m["id"] for m in sent]
    assert [a["event_action"] for a in pagerduty.alerts] == ["trigger"]
    assert len(pagerduty.changes) == 1
    entries = await remediation_entries(client, incident["id"])
    assert [e["data"]["status"] for e in entries].count("applied") == 1


@pytest.mark.asyncio
async def test_action_stopped_by_an_api_outage_is_applied_once_the_api_is_back(
    acting: TestClient[Any, Any], cluster: ClusterEmulator
) -> None:
    """While the Kubernetes API answers 503 the action is escalated, not dropped: the event
    is handled again and, once the API answers, queue mode is set exactly once."""
    outage = cluster.fail("get", "deployments", 503, times=10**6)
    client = acting
    await post(client, payload(alert(status_code="429")))
    incident = await triaged_incident(client)

    async def escalated() -> bool:
        entries = await remediation_entries(client, incident["id"])
        return any(e["data"]["status"] == "escalated" for e in entries)

    await eventually(escalated)
    assert "RATE_LIMIT_MODE" not in integration_env(cluster)
    outage.times = outage.served  # the API server is back

    await eventually(lambda: _true(integration_env(cluster).get("RATE_LIMIT_MODE") == "queue"))
    await eventually(lambda: events_done(client))
    entries = await remediation_entries(client, incident["id"])
    assert [e["data"]["status"] for e in entries].count("applied") == 1
    assert len(cluster.writes("deployments")) == 1


@pytest.mark.asyncio
async def test_labels_cannot_aim_remediation_elsewhere(
    acting: TestClient[Any, Any], pagerduty: FakePagerDuty, cluster: ClusterEmulator
) -> None:
    """An alert naming another namespace, deployment and variable changes only the target."""
    cluster.put_object(DEPLOYMENTS, "kube-system", NAME, deployment())
    client = acting
    hostile = alert(
        status_code="429",
        namespace="kube-system",
        deployment="coredns",
        container="coredns",
        env="POSTHOG_FALLBACK",
        value="true",
    )
    await post(client, payload(hostile))
    await triaged_incident(client)
    await eventually(lambda: events_done(client))

    assert integration_env(cluster) == {"LOG_LEVEL": "info", "RATE_LIMIT_MODE": "queue"}
    other = cluster.current(DEPLOYMENTS, "kube-system", NAME)["spec"]["template"]["spec"]
    assert other == deployment()["spec"]["template"]["spec"]
    touched = {(r.namespace, r.name) for r in cluster.writes("deployments")}
    assert touched == {("prod", NAME)}


# -- posthog-receiver triage -------------------------------------------------------------------


async def triage_cli(tmp_path: Path, config: dict[str, Any], body: dict[str, Any]) -> Any:
    """Run ``posthog-receiver triage --json`` in a subprocess; its JSON report."""
    (tmp_path / "receiver.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "payload.json").write_text(json.dumps(body))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "receiver",
        "triage",
        "--config",
        str(tmp_path / "receiver.yaml"),
        str(tmp_path / "payload.json"),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


def cli_config(
    tmp_path: Path, status_page: FakeStatusPage, pagerduty: FakePagerDuty, **remediation: Any
) -> dict[str, Any]:
    return {
        "webhook": {"allow_unauthenticated": True},
        "store": {"path": str(tmp_path / "state" / "receiver.sqlite3")},
        "triage": {"upstream": {"url": status_page.url(), "timeout_seconds": 1}},
        "notify": {
            "pagerduty": {"routing_key": {"value": ROUTING_KEY}, "events_url": pagerduty.url}
        },
        "remediation": {"dry_run": False, **remediation},
    }


@pytest.mark.asyncio
async def test_triage_lists_what_would_be_done_and_does_nothing(
    tmp_path: Path, status_page: FakeStatusPage, pagerduty: FakePagerDuty
) -> None:
    """--json lists the planned action and the messages it would queue; none is sent."""
    config = cli_config(tmp_path, status_page, pagerduty)
    report = await triage_cli(tmp_path, config, payload(alert(status_code="429")))

    assert [(a["action"], a["status"]) for a in report["actions"]] == [
        ("enable_request_queuing", "dry_run")
    ]
    assert report["actions"][0]["after"] == '"queue"'
    sent = [(n["destination"], n["kind"], n["on"]) for n in report["notifications"]]
    assert ("pagerduty", "pagerduty.trigger", "opened") in sent
    assert ("log", "slack.message", "enable_request_queuing dry_run") in sent
    assert pagerduty.attempts == 0  # nothing was sent
    assert not (tmp_path / "state").exists()  # nothing was stored


@pytest.mark.asyncio
async def test_triage_evaluates_the_guards(
    tmp_path: Path, status_page: FakeStatusPage, pagerduty: FakePagerDuty
) -> None:
    """With the kill switch on, the preview says the action would be skipped, and why."""
    status_page.indicator = "major"
    config = cli_config(tmp_path, status_page, pagerduty, kill_switch=True)
    report = await triage_cli(tmp_path, config, payload(alert(status_code="503")))

    assert report["verdict"] == "vendor_incident"
    [action] = report["actions"]
    assert (action["action"], action["status"]) == ("enable_fallback", "skipped")
    assert "kill switch" in action["reason"]


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def _true(value: bool) -> bool:
    return value


async def _incident_ids(client: TestClient[Any, Any], headers: dict[str, str]) -> list[str]:
    listed = await (await client.get("/api/incidents", headers=headers)).json()
    return [i["id"] for i in listed["incidents"] if i["errorClass"] is not None]
