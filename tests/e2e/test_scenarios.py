"""The runbook's incidents end to end, from the first error to resolved.

Each test starts the whole chain (see :mod:`tests.e2e.stack`): the stand-in integration's
``posthog_errors_total`` rises, real Prometheus fires the chart's rule, real Alertmanager
routes it with the chart's example configuration to ``posthog-receiver serve``, which acts on
the emulated cluster and tells the fake PagerDuty, Statuspage and Slack. Then the errors stop
and everything must be undone and resolved. Only outside systems are observed: the cluster's
objects, what the fakes accepted, and the receiver's HTTP API.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from receiver import links
from tests.e2e.stack import KEY_ROTATED_AFTER_PODS, Stack, eventually, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

# Generous: the first rule evaluation after a scrape takes a few seconds; these bound the
# wait, they assert nothing about speed.
FIRE = 60.0
UI_PASSWORD = "e2e-oncall-password-5b2f"
SETTLE = 30.0


async def _opened(stack: Stack, error_class: str) -> dict[str, Any]:
    async def triaged() -> dict[str, Any] | None:
        found = await stack.only_incident(status="open")
        return found if found is not None and found.get("errorClass") else None

    incident = await eventually(triaged, what="incident opened and triaged", timeout=FIRE)
    assert incident["errorClass"] == error_class, incident
    return incident


async def _resolved(stack: Stack) -> dict[str, Any]:
    return await eventually(
        lambda: stack.only_incident(status="resolved"), what="incident resolved", timeout=FIRE
    )


def _slack_mentions(stack: Stack, words: str) -> list[str]:
    return [t for t in stack.slack.texts if words in t.lower()]


async def test_rate_limited_queue_mode_paged_then_reverted(tmp_path: Path) -> None:
    """Rising 429s set RATE_LIMIT_MODE=queue and page; once they stop, queue mode is removed
    again and the page resolved."""
    async with running_stack(tmp_path) as stack:
        assert "RATE_LIMIT_MODE" not in stack.cluster.env()
        stack.integration.rise("429")

        await eventually(
            lambda: stack.cluster.env().get("RATE_LIMIT_MODE") == "queue",
            what="RATE_LIMIT_MODE=queue on the Deployment",
            timeout=FIRE,
        )
        incident = await _opened(stack, "rate_limited")
        assert incident["severity"] == "P2"  # the chart's rule says priority P2
        triggers = await eventually(lambda: stack.pages("trigger"), what="PagerDuty trigger")
        assert triggers[0]["payload"]["severity"] == "error"  # P2
        assert stack.cluster.restarted_at() is None

        stack.integration.calm()
        await _resolved(stack)
        await eventually(
            lambda: "RATE_LIMIT_MODE" not in stack.cluster.env(),
            what="queue mode reverted",
            timeout=SETTLE,
        )
        await eventually(lambda: stack.pages("resolve"), what="PagerDuty resolve")

        assert len(stack.dedup_keys()) == 1, "one incident, one page"
        assert stack.pages()[-1]["event_action"] == "resolve"
        assert len(stack.cluster.deployment_writes()) == 2, "set once, reverted once"
        assert stack.cluster.env()["LOG_LEVEL"] == "info", "the rest of the env is untouched"


async def test_vendor_incident_fallback_and_status_page_no_restart(tmp_path: Path) -> None:
    """503s while PostHog's status page shows a major incident turn the fallback on and open
    a status-page incident without restarting anything; resolved, both are undone."""
    async with running_stack(tmp_path) as stack:
        stack.posthog_incident()
        stack.integration.rise("503")

        await eventually(
            lambda: stack.cluster.env().get("POSTHOG_FALLBACK") == "true",
            what="POSTHOG_FALLBACK=true on the Deployment",
            timeout=FIRE,
        )
        incident = await _opened(stack, "upstream_error")
        assert incident["decision"]["verdict"] == "vendor_incident"
        opened = await eventually(
            lambda: list(stack.statuspage.incidents.values()), what="status-page incident"
        )
        assert len(opened) == 1
        assert opened[0]["status"] != "resolved"
        assert stack.statuspage.component_status != "operational"
        assert stack.cluster.restarted_at() is None, "never restart our pods for PostHog's outage"

        stack.integration.calm()
        stack.posthog_all_clear()
        await _resolved(stack)
        await eventually(
            lambda: "POSTHOG_FALLBACK" not in stack.cluster.env(),
            what="fallback reverted",
            timeout=SETTLE,
        )
        await eventually(
            lambda: opened[0]["status"] == "resolved", what="status-page incident resolved"
        )
        assert stack.statuspage.component_status == "operational"
        assert len(stack.statuspage.incidents) == 1, "one public status-page incident"
        assert stack.cluster.restarted_at() is None
        await eventually(lambda: stack.pages("resolve"), what="PagerDuty resolve")


async def _approve_on_the_page(stack: Stack, incident_id: str) -> None:
    """What the on-call engineer does: open the incident's page, click Approve."""
    auth = {"Authorization": "Basic " + base64.b64encode(f"oncall:{UI_PASSWORD}".encode()).decode()}
    page = stack.receiver.url + links.incident_path(incident_id)

    async def form() -> tuple[str, str] | None:
        async with stack.session.get(page, headers=auth) as resp:
            html = await resp.text()
        action = re.search(r'<form method="post" action="([^"]+/approvals/[^"]+)"', html)
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)
        return (action.group(1), csrf.group(1)) if action and csrf else None

    action, csrf = await eventually(form, what="Approve on the incident page", timeout=FIRE)
    async with stack.session.post(
        stack.receiver.url + action,
        data={"csrf": csrf, "decision": "approve"},
        headers=auth,
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303


async def test_auth_errors_after_rotation_restart_the_deployment(tmp_path: Path) -> None:
    """401s after the API-key Secret changed (pods still on the old key): the restart waits
    for a person (the runbook's default), who approves it on the incident page; the
    Deployment restarts once, and the incident then resolves."""
    ui = {"users": [{"username": "oncall", "password": {"value": UI_PASSWORD}}]}
    async with running_stack(tmp_path, key_changed_at=KEY_ROTATED_AFTER_PODS, ui=ui) as stack:
        stack.integration.rise("401")

        incident = await _opened(stack, "auth")
        await _approve_on_the_page(stack, incident["id"])
        restarted = await eventually(
            stack.cluster.restarted_at, what="rollout restart", timeout=FIRE
        )
        assert incident["severity"] == "P1"
        triggers = await eventually(lambda: stack.pages("trigger"), what="PagerDuty trigger")
        assert triggers[0]["payload"]["severity"] == "critical"

        stack.integration.calm()
        await _resolved(stack)
        await eventually(lambda: stack.pages("resolve"), what="PagerDuty resolve")
        assert stack.cluster.restarted_at() == restarted, "restarted once, not reverted"
        assert len(stack.cluster.deployment_writes()) == 1


async def test_auth_errors_without_rotation_escalate_for_a_new_key(tmp_path: Path) -> None:
    """401s with a key that has not changed since the pods started do not restart anything:
    a P1 page goes out and people are asked to rotate the key."""
    async with running_stack(tmp_path) as stack:
        stack.integration.rise("401")

        incident = await _opened(stack, "auth")
        assert incident["severity"] == "P1"
        triggers = await eventually(lambda: stack.pages("trigger"), what="PagerDuty trigger")
        assert triggers[0]["payload"]["severity"] == "critical"
        await eventually(
            lambda: _slack_mentions(stack, "rotate the key"),
            what="an escalation asking for a new key",
        )

        stack.integration.calm()
        await _resolved(stack)
        await eventually(lambda: stack.pages("resolve"), what="PagerDuty resolve")
        assert stack.cluster.restarted_at() is None
        assert stack.cluster.deployment_writes() == [], "nothing changed on the Deployment"


async def test_receiver_killed_mid_incident_loses_nothing_repeats_nothing(
    tmp_path: Path,
) -> None:
    """SIGKILLed right after the incident opened, and down while the errors stop (the chart's
    PostHogReceiverDown fires meanwhile), the receiver restarts, finishes the incident and
    resolves it: each action and page happens once."""
    async with running_stack(tmp_path) as stack:
        stack.integration.rise("429")
        await eventually(
            lambda: stack.only_incident(status="open"), what="incident stored", timeout=FIRE
        )
        await stack.kill_receiver()  # mid-incident: triage, action and page may be half done

        await stack.start_receiver()
        await eventually(
            lambda: stack.cluster.env().get("RATE_LIMIT_MODE") == "queue",
            what="queue mode set after the restart",
            timeout=SETTLE,
        )
        await eventually(lambda: stack.pages("trigger"), what="PagerDuty trigger")

        await stack.kill_receiver()  # down while the errors stop: Alertmanager must retry
        stack.integration.calm()
        await eventually(
            lambda: stack.alertmanager is not None and _resolved_sent(stack),
            what="Alertmanager tried to deliver the resolution",
            timeout=FIRE,
        )
        # The chart's own rule about the receiver fired meanwhile (routed to people, not to it).
        await eventually(
            lambda: stack.alertmanager_alerts("PostHogReceiverDown"),
            what="PostHogReceiverDown in Alertmanager",
            timeout=FIRE,
        )
        await stack.start_receiver()

        await _resolved(stack)
        await eventually(
            lambda: "RATE_LIMIT_MODE" not in stack.cluster.env(),
            what="queue mode reverted",
            timeout=SETTLE,
        )
        await eventually(lambda: stack.pages("resolve"), what="PagerDuty resolve")

        # Delivery is at least once: a kill between PagerDuty's 202 and the outbox recording it
        # sends that same stored event again, which PagerDuty folds into the page by its
        # dedup_key. A second, different trigger would be a repeated page.
        triggers = {json.dumps(p, sort_keys=True) for p in stack.pages("trigger")}
        assert len(triggers) == 1, "paged once"
        assert len(stack.pages("resolve")) == 1, "resolved once"
        assert len(stack.cluster.deployment_writes()) == 2, "set once, reverted once"
        assert len(stack.dedup_keys()) == 1


def _resolved_sent(stack: Stack) -> bool:
    """Alertmanager logged a failed attempt to notify the (dead) receiver."""
    assert stack.alertmanager is not None
    logs = stack.alertmanager.logs()
    return "Notify attempt failed" in logs or "Notify for alerts failed" in logs
