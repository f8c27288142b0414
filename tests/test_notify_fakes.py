"""The fake services refuse what the real ones refuse, so passing tests mean something."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.notify_harness import (
    COMPONENT_ID,
    PAGE_ID,
    ROUTING_KEY,
    STATUSPAGE_KEY,
    Fakes,
    clock_fixture,  # noqa: F401 - fixture
    fakes_fixture,  # noqa: F401 - fixture
)

TRIGGER: dict[str, Any] = {
    "routing_key": ROUTING_KEY,
    "event_action": "trigger",
    "dedup_key": "k",
    "payload": {"summary": "s", "source": "x", "severity": "critical"},
}


@pytest_asyncio.fixture(name="http")
async def http_fixture() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, *, method: str = "POST", **headers: str
) -> tuple[int, str]:
    async with http.request(method, url, json=body, headers=headers) as r:
        return r.status, await r.text()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "change",
    [
        {"routing_key": ROUTING_KEY[:31]},
        {"event_action": "open"},
        {"dedup_key": "k" * 256},
        {"payload": {"summary": "s" * 1025, "source": "x", "severity": "critical"}},
        {"payload": {"summary": "s", "source": "x", "severity": "P1"}},
        {"payload": {"summary": "s", "severity": "critical"}},
        {"links": [{"text": "no href"}]},
        {"severity": "critical"},
    ],
)
async def test_fake_pagerduty_refuses_invalid_events(
    fakes: Fakes, http: aiohttp.ClientSession, change: dict[str, Any]
) -> None:
    """Wrong keys, enums, lengths or missing fields get 400, as from PagerDuty."""
    status, _ = await post(http, fakes.pagerduty.url + "/v2/enqueue", {**TRIGGER, **change})
    assert status == 400
    assert fakes.pagerduty.received == []


@pytest.mark.asyncio
async def test_fake_pagerduty_accepts_a_valid_event(
    fakes: Fakes, http: aiohttp.ClientSession
) -> None:
    """A valid trigger gets 202 with PagerDuty's answer; a resolve needs its dedup_key."""
    status, text = await post(http, fakes.pagerduty.url + "/v2/enqueue", TRIGGER)
    assert (status, text) == (
        202,
        '{"status": "success", "message": "Event processed", "dedup_key": "k"}',
    )
    resolve = {"routing_key": ROUTING_KEY, "event_action": "resolve"}
    assert (await post(http, fakes.pagerduty.url + "/v2/enqueue", resolve))[0] == 400


@pytest.mark.asyncio
async def test_fake_statuspage_checks_oauth_and_fields(
    fakes: Fakes, http: aiohttp.ClientSession
) -> None:
    """Statuspage wants its OAuth key, a name, and valid statuses; it answers 201 with an id."""
    url = f"{fakes.statuspage.url}/v1/pages/{PAGE_ID}/incidents"
    good = {
        "incident": {
            "name": "n",
            "status": "investigating",
            "components": {COMPONENT_ID: "major_outage"},
        }
    }
    auth = {"Authorization": f"OAuth {STATUSPAGE_KEY}"}
    assert (await post(http, url, good, Authorization="OAuth wrong"))[0] == 401
    assert (await post(http, url, good, Authorization=f"Bearer {STATUSPAGE_KEY}"))[0] == 401
    assert (await post(http, url, {"incident": {"status": "investigating"}}, **auth))[0] == 422
    bad_component = {"incident": {"name": "n", "components": {COMPONENT_ID: "down"}}}
    assert (await post(http, url, bad_component, **auth))[0] == 422
    bad_status = {"incident": {"name": "n", "status": "open"}}
    assert (await post(http, url, bad_status, **auth))[0] == 422
    status, _ = await post(http, url, good, **auth)
    assert status == 201
    (incident_id,) = fakes.statuspage.incidents
    patch = await post(
        http, f"{url}/{incident_id}", {"incident": {"status": "resolved"}}, method="PATCH", **auth
    )
    assert patch[0] == 200
    missing = await post(http, f"{url}/nope", {"incident": {}}, method="PATCH", **auth)
    assert missing[0] == 404


@pytest.mark.asyncio
async def test_fake_statuspage_checks_metadata_and_lists_unresolved(
    fakes: Fakes, http: aiohttp.ClientSession
) -> None:
    """Metadata must be namespaces of plain values; the unresolved listing keeps it and pages."""
    url = f"{fakes.statuspage.url}/v1/pages/{PAGE_ID}/incidents"
    auth = {"Authorization": f"OAuth {STATUSPAGE_KEY}"}
    for bad in ({"key": "flat"}, ["x"], {"ns": {"deep": {"er": 1}}}):
        incident = {"incident": {"name": "n", "metadata": bad}}
        assert (await post(http, url, incident, **auth))[0] == 422
    ours = {"incident": {"name": "n", "metadata": {"ns": {"key": "k"}}, "impact_override": "major"}}
    assert (await post(http, url, ours, **auth))[0] == 201
    assert (await post(http, url, {"incident": {"name": "other"}}, **auth))[0] == 201
    (done,) = [i for i, v in fakes.statuspage.incidents.items() if v["name"] == "other"]
    resolve = {"incident": {"status": "resolved"}}
    assert (await post(http, f"{url}/{done}", resolve, method="PATCH", **auth))[0] == 200

    async def listing(query: str, **headers: str) -> tuple[int, Any]:
        async with http.get(f"{url}/unresolved{query}", headers=headers) as response:
            return response.status, await response.json(content_type=None)

    assert (await listing("", Authorization="OAuth wrong"))[0] == 401
    assert (await listing("?per_page=101", **auth))[0] == 400
    status, found = await listing("?page=1&per_page=100", **auth)
    assert status == 200
    assert [(i["metadata"], i["impact"]) for i in found] == [({"ns": {"key": "k"}}, "major")]
    assert (await listing("?page=2&per_page=1", **auth)) == (200, [])


@pytest.mark.asyncio
async def test_fake_slack_answers_like_a_webhook(fakes: Fakes, http: aiohttp.ClientSession) -> None:
    """The webhook says ok to text, no_text without it, and no_service on another path."""
    slack = fakes.slack
    assert await post(http, slack.webhook_url, {"text": "hi"}) == (200, "ok")
    assert await post(http, slack.webhook_url, {"blocks": []}) == (400, "no_text")
    assert await post(http, slack.url + "/services/T/B/other", {"text": "hi"}) == (
        404,
        "no_service",
    )
