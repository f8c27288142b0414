"""Approvals through the real application: an action with ``approval: required`` waits on the
incident page and in Slack, is applied at most once however it is approved, re-checks its
guards when approved, and escalates when nobody decides in time."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from receiver import links
from receiver.app import create_app
from receiver.config import KubernetesSettings
from receiver.keys import STORE
from receiver.store import approvals as approval
from receiver.store.audit import recent_audit
from receiver.web.slack import signature
from tests.conftest import remediation_settings
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.fakes.status_page import FakeStatusPage
from tests.kube_emulator import DEPLOYMENTS, PODS, ClusterEmulator, deployment, pod
from tests.test_responder import (
    alert,
    eventually,
    make_settings,
    payload,
    post,
    triaged_incident,
)

Client = TestClient[Any, Any]
NAME = "posthog-integration"
PASSWORD = "approver-password-81c2"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
Factory = Callable[..., Awaitable[Client]]


def basic() -> dict[str, str]:
    raw = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def queue_mode(cluster: ClusterEmulator) -> str | None:
    obj = cluster.objects[(DEPLOYMENTS, "prod", NAME)].raw
    container = next(c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == NAME)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    return env.get("RATE_LIMIT_MODE")


@pytest_asyncio.fixture
async def approving(
    tmp_path: Path,
    status_page: FakeStatusPage,
    pagerduty: FakePagerDuty,
    slack: FakeSlack,
    cluster: ClusterEmulator,
    kube_settings: KubernetesSettings,
    aiohttp_client: Any,
) -> Factory:
    """The app acting on ``prod``, where queuing (for 429s) needs approval; Slack with a
    signing secret, the page with one basic-auth user."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    for name in ("posthog-integration-7d9f-a", "posthog-integration-7d9f-b"):
        cluster.put_object(PODS, "prod", name, pod(name, started="2026-11-23T04:00:00Z"))

    async def make(*, link_key: str | None = None, **remediation: Any) -> Client:
        actions = [
            {
                "name": "enable_request_queuing",
                "kind": "set_env",
                "error_classes": ["rate_limited"],
                "env": "RATE_LIMIT_MODE",
                "value": "queue",
                "approval": "required",
            }
        ]
        settings = make_settings(
            tmp_path,
            status_page,
            pagerduty=pagerduty,
            kubernetes=kube_settings.model_dump(),
            remediation=remediation_settings(actions=actions, **remediation).model_dump(),
            ui={
                "users": [{"username": "alice", "password": {"value": PASSWORD}}],
                **({"link_key": {"value": link_key}} if link_key is not None else {}),
            },
        )
        data = settings.model_dump(mode="python")
        data["notify"]["slack"] = {
            "webhook_url": {"value": slack.webhook_url},
            "api_base": slack.url,
            "signing_secret": {"value": SIGNING_SECRET},
            "timeout_seconds": 2,
        }
        client: Client = await aiohttp_client(create_app(type(settings).model_validate(data)))
        return client

    return make


async def awaiting_on_page(client: Client) -> tuple[str, str, str]:
    """Open a rate-limited incident and wait for its page to offer Approve: the incident id,
    the form's action and its CSRF token."""
    await post(client, payload(alert(status_code="429")))
    incident = await triaged_incident(client)

    async def form() -> tuple[str, str] | None:
        html = await (await client.get(f"/incidents/{incident['id']}", headers=basic())).text()
        action = re.search(r'<form method="post" action="([^"]+/approvals/[^"]+)"', html)
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)
        return (action.group(1), csrf.group(1)) if action and csrf else None

    action, csrf = await eventually(form)
    return incident["id"], action, csrf


def slack_click(approval_id: str, *, action_id: str = "approve", response_url: str) -> bytes:
    data = {
        "type": "block_actions",
        "user": {"id": "U0APPROVER"},
        "response_url": response_url,
        "actions": [{"action_id": action_id, "value": approval_id, "type": "button"}],
    }
    return urlencode({"payload": json.dumps(data)}).encode()


def signed(body: bytes, *, at: float | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    stamp = str(int(at if at is not None else time.time()))
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature(secret.encode(), timestamp=stamp, body=body),
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def remediation_statuses(client: Client, incident_id: str) -> list[str]:
    incident = await (await client.get(f"/api/incidents/{incident_id}")).json()
    return [t["data"]["status"] for t in incident["timeline"] if t["kind"] == "remediation"]


@pytest.mark.asyncio
async def test_awaiting_approval_changes_nothing_and_is_announced(
    approving: Factory, cluster: ClusterEmulator, slack: FakeSlack
) -> None:
    """The action waits: nothing changed, the page and the operations view show it, and the
    Slack message carries Approve/Deny buttons holding the approval's id."""
    client = await approving()
    _, action, _ = await awaiting_on_page(client)
    assert queue_mode(cluster) is None
    approval_id = action.rsplit("/", 1)[-1]
    ops = await (await client.get("/operations", headers=basic())).text()
    assert f'data-approval="{approval_id}"' in ops

    def buttons() -> list[dict[str, Any]]:
        return [
            block
            for r in slack.received
            for block in r.body.get("blocks", ())
            if block["type"] == "actions"
        ]

    found = await eventually(lambda: asyncio.sleep(0, buttons()))
    assert [e["value"] for e in found[0]["elements"]] == [approval_id, approval_id]


@pytest.mark.asyncio
async def test_approving_twice_at_once_applies_once(
    approving: Factory, cluster: ClusterEmulator, pagerduty: FakePagerDuty
) -> None:
    """Two concurrent Approve clicks: one decision, one change, one audit entry."""
    client = await approving()
    incident_id, action, csrf = await awaiting_on_page(client)
    answers = await asyncio.gather(
        *(
            client.post(
                action,
                data={"csrf": csrf, "decision": "approve"},
                headers=basic(),
                allow_redirects=False,
            )
            for _ in range(2)
        )
    )
    assert [a.status for a in answers] == [303, 303]
    await eventually(lambda: asyncio.sleep(0, queue_mode(cluster) == "queue"))
    statuses = await eventually(
        lambda: _when(remediation_statuses(client, incident_id), lambda s: "applied" in s)
    )
    assert statuses.count("approved") == 1
    assert statuses.count("applied") == 1
    audit = await client.app[STORE].read(recent_audit)
    assert [(e.actor, e.action) for e in audit] == [("alice", "approved enable_request_queuing")]
    # The decision reaches PagerDuty as a change event.
    await eventually(
        lambda: asyncio.sleep(
            0, any("approved" in c["payload"]["summary"] for c in pagerduty.changes)
        )
    )


async def _when(probe: Awaitable[Any], accept: Callable[[Any], bool]) -> Any:
    value = await probe
    return value if accept(value) else None


@pytest.mark.asyncio
async def test_slack_and_page_racing_apply_once(
    approving: Factory, cluster: ClusterEmulator, slack: FakeSlack
) -> None:
    """Approve in Slack and on the page at the same moment: decided once, applied once, and
    the Slack message is updated with the outcome."""
    client = await approving()
    incident_id, action, csrf = await awaiting_on_page(client)
    approval_id = action.rsplit("/", 1)[-1]
    body = slack_click(approval_id, response_url=slack.response_url())
    page, from_slack = await asyncio.gather(
        client.post(
            action,
            data={"csrf": csrf, "decision": "approve"},
            headers=basic(),
            allow_redirects=False,
        ),
        client.post("/slack/interactions", data=body, headers=signed(body)),
    )
    assert (page.status, from_slack.status) == (303, 200)
    await eventually(lambda: asyncio.sleep(0, queue_mode(cluster) == "queue"))
    statuses = await eventually(
        lambda: _when(remediation_statuses(client, incident_id), lambda s: "applied" in s)
    )
    assert (statuses.count("approved"), statuses.count("applied")) == (1, 1)
    decided = await client.app[STORE].read(lambda c: approval.get(c, approval_id))
    assert decided is not None
    assert decided.state == "approved"
    await eventually(lambda: asyncio.sleep(0, slack.responses))
    text = slack.responses[0]["text"]
    if decided.decided_via == "Slack":
        assert text.startswith("Approved by <@U0APPROVER>")
    else:
        assert "already decided" in text


@pytest.mark.asyncio
async def test_denied_in_slack_applies_nothing(
    approving: Factory, cluster: ClusterEmulator, slack: FakeSlack
) -> None:
    """Deny: recorded with the Slack user, nothing applied, the page no longer offers it."""
    client = await approving()
    incident_id, action, _ = await awaiting_on_page(client)
    approval_id = action.rsplit("/", 1)[-1]
    body = slack_click(approval_id, action_id="deny", response_url=slack.response_url())
    answer = await client.post("/slack/interactions", data=body, headers=signed(body))
    assert answer.status == 200
    statuses = await eventually(
        lambda: _when(remediation_statuses(client, incident_id), lambda s: "denied" in s)
    )
    assert "applied" not in statuses
    assert queue_mode(cluster) is None
    html = await (await client.get(f"/incidents/{incident_id}", headers=basic())).text()
    assert "/approvals/" not in html
    assert "Slack user U0APPROVER" in html


@pytest.mark.asyncio
@pytest.mark.parametrize("forgery", ["wrong secret", "expired", "no signature", "altered body"])
async def test_forged_expired_or_replayed_slack_requests_are_refused(
    approving: Factory, cluster: ClusterEmulator, slack: FakeSlack, forgery: str
) -> None:
    """Anything but a fresh request signed with the signing secret is 401, and decides
    nothing."""
    client = await approving()
    _, action, _ = await awaiting_on_page(client)
    approval_id = action.rsplit("/", 1)[-1]
    body = slack_click(approval_id, response_url=slack.response_url())
    headers = signed(body)
    if forgery == "wrong secret":
        headers = signed(body, secret="another-secret-entirely-0000000")
    elif forgery == "expired":
        headers = signed(body, at=time.time() - 6 * 60)  # a replay, past the 5-minute window
    elif forgery == "no signature":
        del headers["X-Slack-Signature"]
    else:
        body = slack_click(approval_id, action_id="deny", response_url=slack.response_url())
    answer = await client.post("/slack/interactions", data=body, headers=headers)
    assert answer.status == 401
    found = await client.app[STORE].read(lambda c: approval.get(c, approval_id))
    assert found is not None
    assert found.state == "awaiting"


@pytest.mark.asyncio
async def test_approval_without_csrf_token_is_refused(
    approving: Factory, cluster: ClusterEmulator
) -> None:
    """A POST without (or with another's) CSRF token is 403 and decides nothing."""
    client = await approving()
    _, action, csrf = await awaiting_on_page(client)
    for data in ({"decision": "approve"}, {"decision": "approve", "csrf": csrf + "x"}):
        answer = await client.post(action, data=data, headers=basic(), allow_redirects=False)
        assert answer.status == 403
    approval_id = action.rsplit("/", 1)[-1]
    found = await client.app[STORE].read(lambda c: approval.get(c, approval_id))
    assert found is not None
    assert found.state == "awaiting"
    assert queue_mode(cluster) is None


@pytest.mark.asyncio
async def test_kill_switch_switched_on_meanwhile_refuses_the_approved_action(
    approving: Factory, cluster: ClusterEmulator
) -> None:
    """Approved after the kill switch went on: the guard is checked again, the action is
    skipped, and the page says why."""
    client = await approving()
    incident_id, action, csrf = await awaiting_on_page(client)
    switched = await client.post(
        "/operations/kill-switch",
        data={"csrf": csrf, "state": "on"},
        headers=basic(),
        allow_redirects=False,
    )
    assert switched.status == 303
    answer = await client.post(
        action, data={"csrf": csrf, "decision": "approve"}, headers=basic(), allow_redirects=False
    )
    assert answer.status == 303

    async def skipped() -> str | None:
        incident = await (await client.get(f"/api/incidents/{incident_id}")).json()
        reasons = [
            t["data"]["reason"]
            for t in incident["timeline"]
            if t["kind"] == "remediation" and t["data"]["status"] == "skipped"
        ]
        return reasons[-1] if reasons else None

    reason = await eventually(skipped)
    assert "kill switch switched on from the operations page by" in reason
    assert queue_mode(cluster) is None
    html = await (await client.get(f"/incidents/{incident_id}", headers=basic())).text()
    assert "kill switch switched on from the operations page" in html


@pytest.mark.asyncio
async def test_an_expired_approval_escalates(
    approving: Factory, cluster: ClusterEmulator, pagerduty: FakePagerDuty, slack: FakeSlack
) -> None:
    """Nobody decides within approval_timeout_seconds: marked expired, paged again and told
    in Slack to do it by hand; a late click changes nothing."""
    client = await approving(approval_timeout_seconds=0.5)
    incident_id, action, csrf = await awaiting_on_page(client)
    approval_id = action.rsplit("/", 1)[-1]

    async def expired() -> bool:
        found = await client.app[STORE].read(lambda c: approval.get(c, approval_id))
        return found is not None and found.state == "expired"

    await eventually(expired)
    await eventually(
        lambda: asyncio.sleep(0, any("approval expired: do it by hand" in t for t in slack.texts))
    )
    await eventually(
        lambda: asyncio.sleep(
            0,
            any(
                a["event_action"] == "trigger"
                and any(
                    "approval expired" in line for line in a["payload"]["custom_details"]["actions"]
                )
                and not any(link["text"].startswith("Approve") for link in a["links"])
                for a in pagerduty.alerts
            ),
        )
    )
    late = await client.post(
        action, data={"csrf": csrf, "decision": "approve"}, headers=basic(), allow_redirects=False
    )
    assert late.status == 303
    await asyncio.sleep(0.2)
    assert queue_mode(cluster) is None
    assert "applied" not in await remediation_statuses(client, incident_id)


def acknowledgements_counted(metrics: str) -> float:
    """How many first acknowledgements /metrics has timed, every severity together."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("posthog_receiver_time_to_acknowledge_seconds_count{")
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["page", "Slack"])
async def test_a_decision_is_the_incidents_acknowledgement(
    approving: Factory, slack: FakeSlack, where: str
) -> None:
    """Approving on the page or denying in Slack takes the incident: acknowledged by that
    person through an approval, on the timeline and timed on /metrics; a later click changes
    nothing."""
    client = await approving()
    incident_id, action, csrf = await awaiting_on_page(client)
    before = await (await client.get(f"/api/incidents/{incident_id}")).json()
    assert before["acknowledgedAt"] is None
    assert acknowledgements_counted(await (await client.get("/metrics")).text()) == 0
    approval_id = action.rsplit("/", 1)[-1]
    if where == "page":
        answer = await client.post(
            action,
            data={"csrf": csrf, "decision": "approve"},
            headers=basic(),
            allow_redirects=False,
        )
        assert answer.status == 303
        person = "alice"
    else:
        body = slack_click(approval_id, action_id="deny", response_url=slack.response_url())
        answer = await client.post("/slack/interactions", data=body, headers=signed(body))
        assert answer.status == 200
        person = "Slack user U0APPROVER"
    incident = await (await client.get(f"/api/incidents/{incident_id}")).json()
    assert (incident["acknowledgedBy"], incident["acknowledgedVia"]) == (person, "approval")
    assert incident["acknowledgedAt"] is not None
    acknowledged = [t for t in incident["timeline"] if t["kind"] == "acknowledged"]
    assert len(acknowledged) == 1
    assert acknowledged[0]["data"]["via"] == "approval"
    assert acknowledgements_counted(await (await client.get("/metrics")).text()) == 1
    # A second click finds it decided: no second acknowledgement.
    again = slack_click(approval_id, response_url=slack.response_url())
    await client.post("/slack/interactions", data=again, headers=signed(again))
    incident = await (await client.get(f"/api/incidents/{incident_id}")).json()
    assert [t["kind"] for t in incident["timeline"]].count("acknowledged") == 1
    assert acknowledgements_counted(await (await client.get("/metrics")).text()) == 1


LINK_KEY = "link-key-for-signed-links-5d1e"


@pytest.mark.asyncio
async def test_pagerduty_links_the_signed_page_of_the_approval(
    approving: Factory, pagerduty: FakePagerDuty
) -> None:
    """With a link key, PagerDuty's events link the incident's page, signed: the link
    verifies, opens the page without a sign-in, and a trigger sent while the action awaits
    approval links where Approve and Deny are; a tampered link is refused (403)."""
    client = await approving(link_key=LINK_KEY)
    incident_id, _, _ = await awaiting_on_page(client)

    def approval_trigger() -> dict[str, Any] | None:
        return next(
            (
                a
                for a in pagerduty.alerts
                if a["event_action"] == "trigger"
                and any(link["text"].startswith("Approve or deny") for link in a["links"])
            ),
            None,
        )

    trigger = await eventually(lambda: asyncio.sleep(0, approval_trigger()))
    url = urlsplit(trigger["client_url"])
    assert url.path == links.incident_path(incident_id)
    query = parse_qs(url.query)
    assert links.verify(
        LINK_KEY.encode(),
        url.path,
        exp=query["exp"][0],
        sig=query["sig"][0],
        now=time.time(),
    )
    approve = next(link for link in trigger["links"] if link["text"].startswith("Approve"))
    assert approve == {
        "href": f"{trigger['client_url']}#actions",
        "text": "Approve or deny: enable_request_queuing",
    }
    assert trigger["payload"]["custom_details"]["incident"] == trigger["client_url"]
    # No sign-in: the signature opens the page, the action awaiting approval on it.
    page = await client.get(f"{url.path}?{url.query}")
    assert page.status == 200
    html = await page.text()
    assert "awaiting approval" in html
    assert incident_id in html
    # One character changed in the signature, or another incident's path: refused.
    sig = query["sig"][0]
    tampered = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    forged = await client.get(f"{url.path}?exp={query['exp'][0]}&sig={tampered}")
    assert forged.status == 403
    other = await client.get(f"{links.incident_path('inc-other')}?{url.query}")
    assert other.status == 403
