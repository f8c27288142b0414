"""Concurrent incidents needing one change: decided once, written once, announced once.

The real application (worker, responder, remediator) against the Kubernetes emulator and a
fake PagerDuty, with as many incidents handled at the same time as the worker allows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver.app import create_app
from receiver.config import KubernetesSettings
from receiver.keys import STORE
from receiver.store.incidents import unfinished_events
from receiver.store.retention import incidents_kept
from tests.conftest import remediation_settings
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.status_page import FakeStatusPage
from tests.kube_emulator import DEPLOYMENTS, PODS, ClusterEmulator, deployment, pod
from tests.test_responder import make_settings

NAME = "posthog-integration"
INCIDENTS = 8
HOLD_DOWN = 0.3
AppClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def group_payload(group: str, status: str = "firing") -> dict[str, Any]:
    """One Alertmanager group (its own incident) of 429s from the integration."""
    alert = {
        "status": status,
        "labels": {"alertname": group, "service": NAME, "status_code": "429"},
        "annotations": {"summary": "PostHog answers 429"},
        "startsAt": "2026-11-23T05:00:00Z",
        "endsAt": "2026-11-23T05:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=posthog_errors_total",
        "fingerprint": f"fp-{group}",
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{group}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "posthog-receiver",
        "groupLabels": {"alertname": group},
        "commonLabels": {"alertname": group},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(0.02)


def integration_env(cluster: ClusterEmulator) -> dict[str, str]:
    spec = cluster.current(DEPLOYMENTS, "prod", NAME)["spec"]["template"]["spec"]
    container = next(c for c in spec["containers"] if c["name"] == NAME)
    return {e["name"]: e["value"] for e in container.get("env", [])}


def stored_versions(cluster: ClusterEmulator) -> int:
    """Versions of the Deployment the emulator stored: one more for each write it accepted
    (a refused or dry-run write stores nothing)."""
    return len(cluster.objects[DEPLOYMENTS, "prod", NAME].history)


async def remediation_outcomes(client: TestClient[Any, Any]) -> dict[str, list[dict[str, Any]]]:
    listed = await (await client.get("/api/incidents?limit=100")).json()
    found: dict[str, list[dict[str, Any]]] = {}
    for summary in listed["incidents"]:
        incident = await (await client.get(f"/api/incidents/{summary['id']}")).json()
        found[incident["id"]] = [
            t["data"] for t in incident["timeline"] if t["kind"] == "remediation"
        ]
    return found


async def events_done(client: TestClient[Any, Any]) -> bool:
    return await client.app[STORE].read(unfinished_events) == 0


@pytest.mark.asyncio
async def test_concurrent_incidents_make_one_change_announced_once_and_reverted_once(
    tmp_path: Path,
    status_page: FakeStatusPage,
    pagerduty: FakePagerDuty,
    cluster: ClusterEmulator,
    kube_settings: KubernetesSettings,
    aiohttp_client: AppClient,
) -> None:
    """Eight incidents needing RATE_LIMIT_MODE=queue at once: the API server stores one
    write, one incident says "applied" (one PagerDuty change event), the others that the
    change is in place; the value is removed once, after the last of them resolved."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    initial = stored_versions(cluster)
    for name in ("posthog-integration-7d9f-a", "posthog-integration-7d9f-b"):
        cluster.put_object(PODS, "prod", name, pod(name, started="2026-11-23T04:00:00Z"))
    settings = make_settings(
        tmp_path,
        status_page,
        pagerduty=pagerduty,
        kubernetes=kube_settings.model_dump(),
        remediation=remediation_settings(revert_hold_down_seconds=HOLD_DOWN).model_dump(),
        worker={"max_concurrent_incidents": INCIDENTS},
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    groups = [f"PostHogRateLimited{i}" for i in range(INCIDENTS)]

    async def post(body: dict[str, Any]) -> None:
        response = await client.post("/webhook/alertmanager", json=body)
        assert response.status == 200, await response.text()

    await asyncio.gather(*(post(group_payload(g)) for g in groups))

    async def all_decided() -> dict[str, list[dict[str, Any]]] | None:
        found = await remediation_outcomes(client)
        done = len(found) == INCIDENTS and all(found.values()) and await events_done(client)
        return found if done else None

    outcomes = await eventually(all_decided)
    assert integration_env(cluster) == {"LOG_LEVEL": "info", "RATE_LIMIT_MODE": "queue"}
    assert stored_versions(cluster) == initial + 1
    statuses = sorted(o["status"] for found in outcomes.values() for o in found)
    assert statuses == ["applied"] + ["skipped"] * (INCIDENTS - 1), outcomes
    applier = next(i for i, found in outcomes.items() if found[0]["status"] == "applied")
    for incident_id, found in outcomes.items():
        if incident_id != applier:
            assert found[0]["reason"].startswith("already in place"), found
            assert applier in found[0]["reason"]
    await eventually(lambda: _true(len(pagerduty.changes) == 1))
    assert "enable_request_queuing applied" in pagerduty.changes[0]["payload"]["summary"]

    # Every incident but one resolves (the one that applied the change among them): the value
    # stays while one still needs it.
    last = next(i for i in outcomes if i != applier)
    ids = await _group_ids(client)
    for group, incident_id in ids.items():
        if incident_id != last:
            await post(group_payload(group, "resolved"))
    await eventually(lambda: _resolved_count(client, INCIDENTS - 1))
    await eventually(lambda: events_done(client))
    await asyncio.sleep(HOLD_DOWN * 4)  # past the hold-down and a few revert checks
    assert integration_env(cluster).get("RATE_LIMIT_MODE") == "queue"
    assert stored_versions(cluster) == initial + 1

    last_group = next(g for g, i in ids.items() if i == last)
    await post(group_payload(last_group, "resolved"))
    await eventually(lambda: _true("RATE_LIMIT_MODE" not in integration_env(cluster)))
    assert stored_versions(cluster) == initial + 2
    await eventually(lambda: _true(len(pagerduty.changes) == 2))
    await asyncio.sleep(HOLD_DOWN * 2)
    assert len(pagerduty.changes) == 2
    assert "enable_request_queuing reverted" in pagerduty.changes[1]["payload"]["summary"]
    reverted = [
        o
        for found in (await remediation_outcomes(client)).values()
        for o in found
        if o["status"] == "reverted"
    ]
    assert len(reverted) == 1


async def _true(value: bool) -> bool:
    return value


async def _group_ids(client: TestClient[Any, Any]) -> dict[str, str]:
    listed = await (await client.get("/api/incidents?limit=100")).json()
    ids: dict[str, str] = {}
    for summary in listed["incidents"]:
        incident = await (await client.get(f"/api/incidents/{summary['id']}")).json()
        ids[incident["groupLabels"]["alertname"]] = incident["id"]
    return ids


async def _resolved_count(client: TestClient[Any, Any], count: int) -> bool:
    kept = await client.app[STORE].read(incidents_kept)
    return kept["resolved"] == count
