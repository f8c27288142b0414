"""Incident identity: derived from the alert group and its episode start, so it survives state loss.

Unit tests pin the derivation (ids appear in PagerDuty, URLs and file names, so they must not
change between versions); store tests run the real notification path; the last test runs the
whole service against the fake PagerDuty and deletes its state directory in the middle.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from receiver.alertmanager import MAX_GROUP_KEY_CHARS, WebhookPayload
from receiver.app import create_app
from receiver.config import StoreSettings
from receiver.identity import Episode, incident_id_for
from receiver.notify.pagerduty import dedup_key
from receiver.store import Store
from receiver.store.incidents import apply_notification, get_incident
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.status_page import FakeStatusPage
from tests.test_responder import (
    ROUTING_KEY,
    AppClient,
    _true,
    eventually,
    make_settings,
    outbox_settled,
    post,
)

GROUP_KEY = '{}/{service="posthog-integration"}:{alertname="PostHogErrorRateHigh"}'
ID_SHAPE = re.compile(r"inc-[0-9]{8}-[0-9a-f]{12}(-[0-9]+)?")


def alert(
    fp: str,
    status: str = "firing",
    *,
    starts: str = "2026-11-23T05:00:00Z",
    ends: str = "2026-11-23T05:20:00Z",
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "PostHogErrorRateHigh", "status_code": "503"},
        "annotations": {"summary": "PostHog error rate above 5%"},
        "startsAt": starts,
        "endsAt": ends if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=posthog_errors_total",
        "fingerprint": fp,
    }


def notification(*alerts: dict[str, Any], group_key: str = GROUP_KEY) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": group_key,
        "status": "firing" if firing else "resolved",
        "receiver": "posthog-receiver",
        "groupLabels": {"alertname": "PostHogErrorRateHigh"},
        "commonLabels": {"alertname": "PostHogErrorRateHigh"},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def episode_of(body: dict[str, Any]) -> Episode:
    episode = Episode.of(WebhookPayload.model_validate(body))
    assert episode is not None
    return episode


# -- the derivation -------------------------------------------------------------------------


def test_the_id_is_pinned_for_a_group_and_its_start() -> None:
    """The documented derivation, written out: the date of the start and 12 digest digits."""
    episode = Episode(GROUP_KEY, datetime(2026, 11, 23, 5, 0, tzinfo=UTC))
    micros = 1_795_410_000_000_000  # 2026-11-23T05:00:00Z (date -u +%s)
    digest = hashlib.sha256(f"{GROUP_KEY}\n{micros}".encode()).hexdigest()
    assert episode.start_micros == micros
    assert episode.incident_id() == f"inc-20261123-{digest[:12]}"
    # Pinned: a change here changes every id in PagerDuty, URLs and bundle names.
    assert episode.incident_id() == "inc-20261123-8e62fde8232b"
    assert episode.incident_id(2) == "inc-20261123-8e62fde8232b-2"
    assert dedup_key(episode.incident_id()) == "posthog-receiver/inc-20261123-8e62fde8232b"


def test_the_episode_starts_with_the_earliest_firing_alert() -> None:
    """Resolved alerts in the notification do not count; the earliest firing one does."""
    body = notification(
        alert("late", starts="2026-11-23T05:10:00Z"),
        alert("old", "resolved", starts="2026-11-23T04:00:00Z"),
        alert("early", starts="2026-11-23T05:01:00Z"),
    )
    assert episode_of(body).started_at == datetime(2026, 11, 23, 5, 1, tzinfo=UTC)
    resolved = notification(alert("a", "resolved"))
    assert Episode.of(WebhookPayload.model_validate(resolved)) is None


def test_the_same_instant_in_another_offset_is_the_same_episode() -> None:
    """``+02:00`` and ``Z`` for one instant give one id; another group or start another id."""
    utc = episode_of(notification(alert("a", starts="2026-11-23T05:00:00.5Z")))
    offset = episode_of(notification(alert("a", starts="2026-11-23T07:00:00.500+02:00")))
    later = episode_of(notification(alert("a", starts="2026-11-23T05:00:00.501Z")))
    other = episode_of(notification(alert("a", starts="2026-11-23T05:00:00.5Z"), group_key="{}"))
    assert utc.incident_id() == offset.incident_id()
    assert len({utc.incident_id(), later.incident_id(), other.incident_id()}) == 3


@pytest.mark.parametrize(
    "group_key",
    ['{}:{alertname="<script>/../x?#"}', '{}:{a="\\n\u202e"}', "g" * MAX_GROUP_KEY_CHARS],
)
def test_ids_are_url_safe_whatever_the_group_key(group_key: str) -> None:
    """Alert data only feeds the digest: the id is letters, digits and dashes, and short."""
    episode = episode_of(notification(alert("a"), group_key=group_key))
    assert ID_SHAPE.fullmatch(episode.incident_id())
    assert ID_SHAPE.fullmatch(episode.incident_id(7))


def test_a_start_at_the_edge_of_the_calendar_does_not_crash() -> None:
    """Year 1 east of UTC is before datetime's range in UTC: the id still exists (the intake
    refuses such a start; the derivation does not depend on it)."""
    east = timezone(timedelta(hours=5))
    episode = Episode(GROUP_KEY, datetime(1, 1, 1, tzinfo=east))
    assert episode.incident_id().startswith("inc-00000000-")
    assert ID_SHAPE.fullmatch(episode.incident_id())


def test_a_taken_id_gets_the_next_suffix() -> None:
    """The first id nobody has: the plain one, else ``-2``, ``-3``…"""
    episode = Episode(GROUP_KEY, datetime(2026, 11, 23, 5, 0, tzinfo=UTC))
    taken = {episode.incident_id(), episode.incident_id(2)}
    assert incident_id_for(episode, taken=lambda i: False) == episode.incident_id()
    assert incident_id_for(episode, taken=taken.__contains__) == episode.incident_id(3)


# -- through the store -----------------------------------------------------------------------


@pytest_asyncio.fixture(name="fresh_store")
async def fresh_store_fixture(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(StoreSettings(path=tmp_path / "state" / "receiver.sqlite3"))
    await store.open()
    yield store
    await store.close()


async def apply(store: Store, body: dict[str, Any]) -> str | None:
    payload = WebhookPayload.model_validate(body)
    outcome = await store.write(lambda conn: apply_notification(conn, payload))
    return outcome.incident_id


@pytest.mark.asyncio
async def test_the_incident_takes_the_episode_id(fresh_store: Store) -> None:
    """A firing group opens the incident whose id its episode names."""
    body = notification(alert("a", starts="2026-11-23T05:02:00Z"), alert("b"))
    assert await apply(fresh_store, body) == episode_of(body).incident_id()


@pytest.mark.asyncio
async def test_a_new_episode_after_resolve_is_a_new_incident(fresh_store: Store) -> None:
    """The group fires again later: a new start, a new id; the first incident is untouched."""
    first = await apply(fresh_store, notification(alert("a")))
    assert await apply(fresh_store, notification(alert("a", "resolved"))) == first
    again = notification(alert("a", starts="2026-11-23T06:00:00Z"))
    second = await apply(fresh_store, again)
    assert second == episode_of(again).incident_id() != first
    old = await fresh_store.read(lambda c: get_incident(c, str(first)))
    assert old is not None
    assert old["status"] == "resolved"


@pytest.mark.asyncio
async def test_the_same_episode_reopened_is_a_second_incident(fresh_store: Store) -> None:
    """Firing again with the same startsAt after the resolve: ``-2``, then ``-3``; no merge."""
    firing, resolved = notification(alert("a")), notification(alert("a", "resolved"))
    base = episode_of(firing).incident_id()
    ids = []
    for _ in range(3):
        ids.append(await apply(fresh_store, firing))
        await apply(fresh_store, resolved)
    assert ids == [base, f"{base}-2", f"{base}-3"]
    for incident_id in ids:
        incident = await fresh_store.read(lambda c, i=incident_id: get_incident(c, str(i)))
        assert incident is not None
        assert incident["status"] == "resolved"
        assert [a["fingerprint"] for a in incident["alerts"]] == ["a"]
        kinds = [t["kind"] for t in incident["timeline"]]
        assert kinds == ["incident", "alert_firing", "alert_resolved", "incident", "mitigated"]


@pytest.mark.asyncio
async def test_a_new_store_finds_the_same_id(tmp_path: Path, fresh_store: Store) -> None:
    """State lost: the same firing group on an empty store opens an incident with the same id."""
    body = notification(alert("b", starts="2026-11-23T05:03:00Z"), alert("a"))
    before = await apply(fresh_store, body)
    empty = Store(StoreSettings(path=tmp_path / "elsewhere" / "receiver.sqlite3"))
    await empty.open()
    try:
        # A later resend: one more alert joined, the episode's start is the same.
        later = notification(*body["alerts"], alert("c", starts="2026-11-23T05:30:00Z"))
        assert await apply(empty, later) == before
    finally:
        await empty.close()


# -- the whole service, its state deleted -----------------------------------------------------


@pytest_asyncio.fixture(name="pagerduty")
async def pagerduty_fixture() -> AsyncIterator[FakePagerDuty]:
    fake = FakePagerDuty(ROUTING_KEY)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.mark.asyncio
async def test_after_the_state_is_lost_the_resolve_finds_the_same_pagerduty_alert(
    tmp_path: Path,
    status_page: FakeStatusPage,
    pagerduty: FakePagerDuty,
    aiohttp_client: AppClient,
) -> None:
    """Trigger, lose database and spool, resend, resolve: one dedup_key, one alert, resolved."""
    settings = make_settings(tmp_path, status_page, pagerduty=pagerduty)
    firing = notification(alert("a1"), alert("a2", starts="2026-11-23T05:04:00Z"))
    resolved = notification(alert("a1", "resolved"), alert("a2", "resolved"))

    client = await aiohttp_client(create_app(settings))
    await post(client, firing)
    await eventually(lambda: _true(len(pagerduty.alerts) >= 1))
    await eventually(lambda: outbox_settled(client))
    await client.close()
    state = settings.store.path.parent
    assert any(state.iterdir())  # database and spool were there
    shutil.rmtree(state)

    client = await aiohttp_client(create_app(settings))
    await post(client, firing)
    await eventually(lambda: _true(len(pagerduty.alerts) >= 2))
    await post(client, resolved)
    await eventually(lambda: _true(pagerduty.alerts[-1]["event_action"] == "resolve"))

    actions = [a["event_action"] for a in pagerduty.alerts]
    assert actions == ["trigger", "trigger", "resolve"]
    keys = {a["dedup_key"] for a in pagerduty.alerts}
    assert keys == {dedup_key(episode_of(firing).incident_id())}
    assert pagerduty.opened == [(keys.pop(), "resolved")]  # one alert, and it is resolved
    assert pagerduty.rejected == []
