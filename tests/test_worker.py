"""The worker: incidents handled side by side, each incident's events strictly in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver.store.incidents import IncidentEvent
from tests.conftest import ClientFactory
from tests.helpers import alert, bearer, notification, wait_until

Client = TestClient[Any, Any]


def group(name: str) -> str:
    return f'{{}}/{{severity="page"}}:{{alertname="PostHogErrorsHigh", service="{name}"}}'


class GatedResponder:
    """Records each event it finished; the first incident it sees can be held or failed."""

    def __init__(self, *, hold_first: bool = False, fail_first: bool = False) -> None:
        self.finished: list[IncidentEvent] = []
        self.started: list[IncidentEvent] = []
        self.first: str | None = None
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self._hold = hold_first
        self._fail = fail_first

    async def handle(self, event: IncidentEvent) -> None:
        self.started.append(event)
        if self.first is None:
            self.first = event.incident_id
        if event.incident_id == self.first:
            self.entered.set()
            if self._fail:
                raise RuntimeError("PagerDuty unreachable")
            if self._hold:
                await self.release.wait()  # an outside call that does not answer (yet)
        await asyncio.sleep(0)  # give the other incidents' handling a chance to interleave
        self.finished.append(event)

    def kinds(self, incident_id: str | None) -> list[str]:
        return [e.kind for e in self.finished if e.incident_id == incident_id]

    def others(self) -> list[IncidentEvent]:
        return [e for e in self.finished if e.incident_id != self.first]


async def post(client: Client, service: str, *alerts: dict[str, Any]) -> None:
    resp = await client.post(
        "/webhook/alertmanager",
        json=notification(list(alerts), group_key=group(service)),
        headers=bearer(),
    )
    assert resp.status == 200


# What through_lifecycle() queues for its incident, in this order.
LIFECYCLE = ["opened", "alerts_changed", "alerts_changed", "resolved"]


async def through_lifecycle(client: Client, service: str) -> None:
    """Open, change and resolve one incident: the events of ``LIFECYCLE``."""
    await post(client, service, alert(f"{service}-1"))
    await post(client, service, alert(f"{service}-1"), alert(f"{service}-2"))
    await post(
        client,
        service,
        alert(f"{service}-1", status="resolved"),
        alert(f"{service}-2", status="resolved"),
    )


@pytest.mark.asyncio
async def test_a_hanging_incident_does_not_delay_another(make_client: ClientFactory) -> None:
    """While one incident's responder call hangs, another incident's events are handled."""
    responder = GatedResponder(hold_first=True)
    client = await make_client(responder=responder)
    await post(client, "checkout", alert("c1"))
    await asyncio.wait_for(responder.entered.wait(), timeout=10)

    await through_lifecycle(client, "billing")

    async def other_kinds() -> list[str]:
        return [e.kind for e in responder.others()]

    await wait_until(other_kinds, lambda k: k == LIFECYCLE, what="billing")
    assert responder.kinds(responder.first) == []  # still hanging
    responder.release.set()
    await wait_until(
        lambda: asyncio.sleep(0, responder.kinds(responder.first)),
        lambda k: k == ["opened"],
        what="the held incident finished",
    )


@pytest.mark.asyncio
async def test_each_incidents_events_stay_in_order(make_client: ClientFactory) -> None:
    """Events of several incidents interleave, but each incident's own arrive in order."""
    responder = GatedResponder()
    client = await make_client(responder=responder, worker={"max_concurrent_incidents": 3})
    services = ["checkout", "billing", "search", "signup"]
    await asyncio.gather(*(through_lifecycle(client, s) for s in services))

    async def finished() -> int:
        return len(responder.finished)

    await wait_until(finished, lambda n: n == len(LIFECYCLE) * len(services), what="all handled")
    incidents = {e.incident_id for e in responder.finished}
    assert len(incidents) == len(services)
    for incident_id in incidents:
        assert responder.kinds(incident_id) == LIFECYCLE
        ids = [e.id for e in responder.finished if e.incident_id == incident_id]
        assert ids == sorted(ids)
    started = [e.id for e in responder.started]
    assert len(started) == len(set(started))  # none handed over twice


@pytest.mark.asyncio
async def test_a_failing_event_holds_back_only_its_own_incident(
    make_client: ClientFactory,
) -> None:
    """A failed event is retried before its incident's later events; others carry on."""
    responder = GatedResponder(fail_first=True)
    client = await make_client(responder=responder)
    await post(client, "checkout", alert("c1"))
    await asyncio.wait_for(responder.entered.wait(), timeout=10)
    await post(client, "checkout", alert("c1"), alert("c2"))  # queued behind the failed one

    await through_lifecycle(client, "billing")

    async def other_kinds() -> list[str]:
        return [e.kind for e in responder.others()]

    await wait_until(other_kinds, lambda k: k == LIFECYCLE, what="billing")
    held = [e.kind for e in responder.started if e.incident_id == responder.first]
    assert held == ["opened"]  # tried once, backing off; its alerts_changed not handed over
