"""End to end with Debian's real Alertmanager: alerts added with amtool become an incident."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.procs import Alertmanager, ReceiverProcess, wait_for

pytestmark = pytest.mark.slow

LABELS = {
    "alertname": "PostHogErrorsHigh",
    "severity": "page",
    "status_code": "503",
    "namespace": "analytics",
}


def incidents(rx: ReceiverProcess) -> list[dict[str, Any]]:
    answer = rx.get("/api/incidents")
    assert answer.status == 200, answer
    found: list[dict[str, Any]] = answer.json()["incidents"]
    return found


def test_alertmanager_alert_opens_then_resolves_an_incident(
    receiver_proc: Callable[..., ReceiverProcess],
    alertmanager: Callable[..., Alertmanager],
) -> None:
    """Two alerts fire through Alertmanager with bearer auth, then resolve: one incident opens,
    lists both, and resolves only when both have resolved."""
    rx = receiver_proc()
    am = alertmanager(webhook_url=f"{rx.url}/webhook/alertmanager", token=rx.token)
    started = datetime.now(UTC) - timedelta(minutes=1)
    pod_a = {**LABELS, "pod": "posthog-integration-a"}
    pod_b = {**LABELS, "pod": "posthog-integration-b"}
    note = {"summary": "PostHog API errors above 5%"}
    am.add_alert(pod_a, annotations=note, start=started)
    am.add_alert(pod_b, annotations=note, start=started)

    def both_firing() -> dict[str, Any] | None:
        found = incidents(rx)
        if not found:
            return None
        detail: dict[str, Any] = rx.get(f"/api/incidents/{found[0]['id']}").json()
        return detail if len(detail["alerts"]) == 2 else None

    incident = wait_for(both_firing, deadline=30, what="incident with both alerts")
    assert incident["status"] == "open"
    assert incident["title"] == "PostHogErrorsHigh"
    assert incident["externalURL"] == am.url
    assert {a["labels"]["pod"] for a in incident["alerts"]} == {
        "posthog-integration-a",
        "posthog-integration-b",
    }
    assert all(a["status"] == "firing" and a["endsAt"] is None for a in incident["alerts"])

    ended = datetime.now(UTC) - timedelta(seconds=1)
    am.add_alert(pod_a, annotations=note, start=started, end=ended)

    def pod_a_resolved() -> dict[str, Any] | None:
        detail: dict[str, Any] = rx.get(f"/api/incidents/{incident['id']}").json()
        states = {a["labels"]["pod"]: a["status"] for a in detail["alerts"]}
        return detail if states["posthog-integration-a"] == "resolved" else None

    partly = wait_for(pod_a_resolved, deadline=30, what="first alert resolved")
    assert partly["status"] == "open"

    am.add_alert(pod_b, annotations=note, start=started, end=ended)

    def incident_resolved() -> dict[str, Any] | None:
        detail: dict[str, Any] = rx.get(f"/api/incidents/{incident['id']}").json()
        return detail if detail["status"] == "resolved" else None

    resolved = wait_for(incident_resolved, deadline=30, what="incident resolved")
    assert {a["status"] for a in resolved["alerts"]} == {"resolved"}
    assert [i["id"] for i in incidents(rx)] == [incident["id"]]

    # Alertmanager's requests were all authenticated; the worker logged what each changed.
    events = rx.log_events()
    applied = [e for e in events if e["event"] == "notification applied"]
    assert {e["incident_id"] for e in applied} == {incident["id"]}
    assert any(e["resolved"] for e in applied)
    assert not [e for e in events if e["event"] == "webhook rejected"]
    assert rx.token not in rx.logs()


def test_alertmanager_without_the_token_is_refused(
    receiver_proc: Callable[..., ReceiverProcess],
    alertmanager: Callable[..., Alertmanager],
) -> None:
    """An Alertmanager configured with a wrong bearer token gets 401 and opens nothing."""
    rx = receiver_proc()
    am = alertmanager(webhook_url=f"{rx.url}/webhook/alertmanager", token="not-the-token")
    am.add_alert({**LABELS, "pod": "posthog-integration-a"})

    def refused() -> bool:
        return any(e["event"] == "webhook rejected" for e in rx.log_events())

    wait_for(refused, deadline=30, what="a refused notification")
    rejected = next(e for e in rx.log_events() if e["event"] == "webhook rejected")
    assert rejected["status"] == 401
    assert incidents(rx) == []
