"""The fake services refuse what the real ones refuse, so passing tests mean something."""

from __future__ import annotations

import json
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
    Clock,
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
async def test_fake_pagerduty_keeps_alerts_by_dedup_key(
    fakes: Fakes, http: aiohttp.ClientSession
) -> None:
    """A repeated trigger updates the open alert; resolve closes it; a later trigger reopens."""
    url = fakes.pagerduty.url + "/v2/enqueue"
    resolve = {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "k"}
    assert (await post(http, url, {**resolve, "dedup_key": "unknown"}))[0] == 202
    assert fakes.pagerduty.opened == []  # nothing open to resolve: ignored
    await post(http, url, TRIGGER)
    await post(http, url, TRIGGER)
    assert fakes.pagerduty.opened == [("k", "triggered")]
    await post(http, url, {**resolve, "event_action": "acknowledge"})
    assert fakes.pagerduty.alert_status("k") == "acknowledged"
    await post(http, url, resolve)
    await post(http, url, TRIGGER)
    assert fakes.pagerduty.opened == [("k", "resolved"), ("k", "triggered")]


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


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "answer"),
    [
        ({"text": "x" * 40_001}, "msg_too_long"),
        ({"text": "hi", "blocks": [section("x" * 3001)]}, "invalid_blocks"),
        ({"blocks": [{"type": "section"}]}, "invalid_blocks"),
        (
            {"blocks": [{"type": "section", "text": {"type": "html", "text": "x"}}]},
            "invalid_blocks",
        ),
        (
            {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}]},
            "invalid_blocks",
        ),
        ({"blocks": [{"type": "banner", "text": "x"}]}, "invalid_blocks"),
        ({"blocks": [section("x")] * 51}, "invalid_blocks"),
        ({"text": 42}, "invalid_payload"),
    ],
)
async def test_fake_slack_refuses_what_slack_refuses(
    fakes: Fakes, http: aiohttp.ClientSession, body: dict[str, Any], answer: str
) -> None:
    """Oversized text and sections, malformed or unknown blocks are refused with a 400."""
    assert await post(http, fakes.slack.webhook_url, body) == (400, answer)
    assert fakes.slack.received == []


@pytest.mark.asyncio
async def test_fake_slack_accepts_a_section_at_the_limit(
    fakes: Fakes, http: aiohttp.ClientSession
) -> None:
    """A 3,000-character section with a fallback text is accepted."""
    body = {"text": "fallback", "blocks": [section("x" * 3000), {"type": "divider"}]}
    assert await post(http, fakes.slack.webhook_url, body) == (200, "ok")
    assert fakes.slack.sections == ["x" * 3000]


@pytest.mark.asyncio
async def test_fake_pagerduty_refuses_events_over_512_kb(
    fakes: Fakes, http: aiohttp.ClientSession
) -> None:
    """An event over 512 KB is refused with 400, as PagerDuty does; one just under passes."""
    url = fakes.pagerduty.url + "/v2/enqueue"
    payload = TRIGGER["payload"]
    over = {**TRIGGER, "payload": {**payload, "custom_details": {"x": "x" * 512 * 1024}}}
    status, text = await post(http, url, over)
    assert status == 400
    assert "512 KB" in text
    room = 512 * 1024 - len(
        json.dumps({**TRIGGER, "payload": {**payload, "custom_details": {"x": ""}}})
    )
    under = {**TRIGGER, "payload": {**payload, "custom_details": {"x": "x" * room}}}
    assert (await post(http, url, under))[0] == 202


@pytest.mark.asyncio
async def test_fake_pagerduty_throttles_past_its_rate_limit(
    fakes: Fakes, http: aiohttp.ClientSession, clock: Clock
) -> None:
    """With a rate limit, events past it within 60 s of the fake's clock are answered 429
    (change events count too), and accepted again once the minute has moved on."""
    pd = fakes.pagerduty
    pd.rate_limit_per_minute = 2
    change = {"routing_key": ROUTING_KEY, "payload": {"summary": "c"}}
    assert (await post(http, pd.url + "/v2/enqueue", TRIGGER))[0] == 202
    clock.advance(30)
    assert (await post(http, pd.url + "/v2/change/enqueue", change))[0] == 202
    status, body = await post(http, pd.url + "/v2/enqueue", TRIGGER)
    assert (status, json.loads(body)["status"]) == (429, "throttle event")
    clock.advance(30)  # the first event is a minute old
    assert (await post(http, pd.url + "/v2/enqueue", TRIGGER))[0] == 202
    assert (len(pd.received), pd.throttled) == (3, 1)
