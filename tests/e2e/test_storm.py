"""Production's bad days: an alert storm, and every outside system failing for a while.

The storm sends Alertmanager-shaped webhooks straight at ``posthog-receiver serve`` (the
chain through real Prometheus and Alertmanager is covered by ``test_scenarios``): 1,000 per
second about one incident, with many fingerprints and endless resends. In CI it lasts
``E2E_STORM_SECONDS`` (default 10 s); ``bench/alert_to_action.py`` runs the full minute.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, eventually, running_stack
from tests.e2e.storm import resolved, run_storm, storm_alerts, storm_bodies, storm_notification

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

STORM_SECONDS = float(os.environ.get("E2E_STORM_SECONDS", "10"))
STORM_RATE = 1000.0
# The receiver's resident memory during the storm stays under this (it starts near 80 MiB);
# an inbox, cache or log buffer that grew with the number of requests would cross it.
RSS_LIMIT = 256 * 2**20
OUTAGE_SECONDS = 3.0
SETTLE = 30.0


async def _drained(stack: Stack, incident_id: str, alerts: int) -> bool:
    incident = await stack.incident(incident_id)
    return len(incident["alerts"]) == alerts and bool(incident.get("errorClass"))


async def test_storm_pages_once_acts_once_memory_bounded(tmp_path: Path) -> None:
    """A storm of 1,000 webhooks per second about one incident is acknowledged in full and
    ends in one page and one action, with the receiver's memory bounded; resolving the
    incident afterwards reverts the action and resolves the page."""
    bodies, alerts = storm_bodies()
    async with running_stack(tmp_path, alerting=False) as stack:
        assert stack.receiver.proc is not None
        figures = await run_storm(
            stack.receiver.url + "/webhook/alertmanager",
            stack.receiver.token,
            pid=stack.receiver.proc.pid,
            rate=STORM_RATE,
            seconds=STORM_SECONDS,
            bodies=bodies,
        )
        print("storm:", figures.as_dict())
        assert set(figures.statuses) == {200}, figures.as_dict()
        assert not figures.errors, figures.as_dict()
        assert figures.sent == int(STORM_RATE * STORM_SECONDS)
        assert figures.rss_peak < RSS_LIMIT, figures.as_dict()

        incident = await eventually(stack.only_incident, what="one incident", timeout=SETTLE)
        await eventually(
            lambda: _drained(stack, incident["id"], len(alerts)),
            what="every fingerprint on the incident",
            timeout=SETTLE,
        )
        await eventually(
            lambda: stack.cluster.env().get("RATE_LIMIT_MODE") == "queue", what="queue mode"
        )
        await eventually(lambda: stack.pages("trigger"), what="PagerDuty trigger")
        assert len(stack.dedup_keys()) == 1, "one page"
        assert len(stack.cluster.deployment_writes()) == 1, "one action within the cooldown"

        assert await stack.post_webhook(storm_notification(resolved(alerts))) == 200
        await eventually(
            lambda: stack.only_incident(status="resolved"), what="resolved", timeout=SETTLE
        )
        await eventually(
            lambda: "RATE_LIMIT_MODE" not in stack.cluster.env(), what="reverted", timeout=SETTLE
        )
        await eventually(lambda: stack.pages("resolve"), what="PagerDuty resolve")
        assert len(stack.dedup_keys()) == 1
        assert len(stack.pages("resolve")) == 1
        assert len(stack.cluster.deployment_writes()) == 2


async def test_outage_of_every_destination_and_the_api_delivers_everything_after(
    tmp_path: Path,
) -> None:
    """PagerDuty, Statuspage, Slack and the Kubernetes API all answering 503 while an
    incident opens: once they are back, the action is applied and every notification
    arrives, once and in order; the resolution then goes through as usual."""
    async with running_stack(tmp_path, alerting=False) as stack:
        fakes = (stack.pagerduty, stack.statuspage, stack.slack)
        for fake in fakes:
            fake.down = True
        faults = [
            stack.cluster.fail(method, "deployments", 503, times=10**9)
            for method in ("GET", "PATCH")
        ]
        alerts = storm_alerts(3)
        assert await stack.post_webhook(storm_notification(alerts)) == 200

        await eventually(
            lambda: all(f.attempts for f in fakes) and any(f.served for f in faults),
            what="every destination and the API tried during the outage",
            timeout=SETTLE,
        )
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage lasts a while; retries keep failing
        assert not any(f.received for f in fakes)
        assert "RATE_LIMIT_MODE" not in stack.cluster.env()

        for fake in fakes:
            fake.down = False
        for fault in faults:
            fault.times = fault.served  # the API server is back

        await eventually(
            lambda: stack.cluster.env().get("RATE_LIMIT_MODE") == "queue",
            what="queue mode set after the API came back",
            timeout=SETTLE,
        )
        await eventually(lambda: stack.pages("trigger"), what="PagerDuty trigger", timeout=SETTLE)
        await eventually(
            lambda: stack.statuspage.incidents, what="status-page incident", timeout=SETTLE
        )
        await eventually(lambda: stack.slack.texts, what="Slack message", timeout=SETTLE)

        assert await stack.post_webhook(storm_notification(resolved(alerts))) == 200
        await eventually(
            lambda: "RATE_LIMIT_MODE" not in stack.cluster.env(), what="reverted", timeout=SETTLE
        )
        await eventually(lambda: stack.pages("resolve"), what="PagerDuty resolve", timeout=SETTLE)
        await eventually(
            lambda: all(i["status"] == "resolved" for i in stack.statuspage.incidents.values()),
            what="status-page incident resolved",
            timeout=SETTLE,
        )

        actions = [p["event_action"] for p in stack.pages()]
        assert actions[0] == "trigger", actions
        assert actions[-1] == "resolve", actions
        assert actions.count("resolve") == 1
        assert len(stack.dedup_keys()) == 1
        assert len(stack.statuspage.incidents) == 1
        assert len(stack.cluster.deployment_writes()) == 2, "set once, reverted once"
