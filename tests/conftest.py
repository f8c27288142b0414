"""Shared fixtures: the app through a real HTTP server, real processes (``tests.procs``), and a
Kubernetes API emulator over real HTTP, reached through a kubeconfig."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient
from kmock import Server

from receiver.alertmanager import WebhookPayload
from receiver.app import create_app
from receiver.config import (
    KubernetesSettings,
    RemediationSettings,
    RemediationTarget,
    StoreSettings,
)
from receiver.kube.client import KubeConnection
from receiver.kube.workload import IntegrationWorkload
from receiver.store import Store
from receiver.store.incidents import IncidentEvent, apply_notification, get_incident
from tests.fakes.health import FakeHealth
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.fakes.status_page import FakeStatusPage
from tests.helpers import ROUTING_KEY, make_settings
from tests.kube_emulator import ClusterEmulator, write_kubeconfig
from tests.procs import alertmanager, receiver_proc

__all__ = ["RecordingResponder", "alertmanager", "receiver_proc"]

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


class RecordingResponder:
    """Stands in for the triage/notification side: remembers every incident event it gets."""

    def __init__(self) -> None:
        self.events: list[IncidentEvent] = []

    async def handle(self, event: IncidentEvent) -> None:
        self.events.append(event)


@pytest_asyncio.fixture
async def make_client(aiohttp_client: Any, tmp_path: Path) -> ClientFactory:
    """Factory: ``await make_client(responder=..., **config_groups)`` serves a fresh app."""

    async def make(*, responder: Any = None, **groups: Any) -> TestClient[Any, Any]:
        app = create_app(make_settings(tmp_path, **groups), responder=responder)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make


@pytest_asyncio.fixture
async def client(make_client: ClientFactory) -> TestClient[Any, Any]:
    """The app with the test settings (bearer and basic auth, small intervals)."""
    return await make_client()


@pytest_asyncio.fixture
async def status_page() -> AsyncIterator[FakeStatusPage]:
    """PostHog's status page (Statuspage JSON), green until a test says otherwise."""
    fake = FakeStatusPage()
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture
async def pagerduty() -> AsyncIterator[FakePagerDuty]:
    """A fake PagerDuty Events API v2 that takes ``ROUTING_KEY``."""
    fake = FakePagerDuty(ROUTING_KEY)
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """A fake Slack incoming webhook."""
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture
async def health() -> AsyncIterator[FakeHealth]:
    """Our integration's health endpoint, healthy until a test says otherwise."""
    fake = FakeHealth()
    await fake.start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture()
async def cluster() -> AsyncIterator[ClusterEmulator]:
    """An empty emulated API server on a free local port."""
    async with ClusterEmulator() as emulator, Server(emulator):
        yield emulator


@pytest_asyncio.fixture()
async def kube_settings(cluster: ClusterEmulator, tmp_path: Path) -> KubernetesSettings:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    return KubernetesSettings(
        mode="kubeconfig",
        kubeconfig=kubeconfig,
        request_timeout_seconds=0.5,
        retry_attempts=3,
        retry_backoff_seconds=0.01,
    )


@pytest_asyncio.fixture()
async def kube(kube_settings: KubernetesSettings) -> AsyncIterator[KubeConnection]:
    """One connection to the emulated API server, as the application opens it."""
    connection = await KubeConnection.open(kube_settings)
    assert connection is not None
    yield connection
    await connection.close()


@pytest_asyncio.fixture()
async def workload(kube: KubeConnection) -> IntegrationWorkload:
    """The integration workload in namespace ``prod``, through that connection."""
    return IntegrationWorkload(kube, target=RemediationTarget(namespace="prod"))


@pytest_asyncio.fixture()
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite store in the test's directory."""
    opened = Store(StoreSettings(path=tmp_path / "state.sqlite3"))
    await opened.open()
    yield opened
    await opened.close()


def _notification(group: str, status: str) -> WebhookPayload:
    """A notification of ``group``'s one alert, firing or resolved."""
    return WebhookPayload.model_validate(
        {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{group}"}}',
            "status": status,
            "receiver": "posthog-receiver",
            "groupLabels": {"alertname": group},
            "alerts": [
                {
                    "status": status,
                    "labels": {"alertname": group},
                    "startsAt": "2026-01-01T00:00:00Z",
                    "endsAt": "2026-01-01T01:00:00Z" if status == "resolved" else None,
                    "fingerprint": f"fp-{group}",
                }
            ],
        }
    )


async def open_incident(store: Store, group: str = "posthog-errors") -> str:
    """Open an incident the way a firing notification does."""
    payload = _notification(group, "firing")
    outcome = await store.write(lambda conn: apply_notification(conn, payload))
    assert outcome.incident_id is not None
    return outcome.incident_id


async def resolve_incident(store: Store, incident_id: str) -> None:
    """Resolve an incident the way its group's resolved notification does."""
    incident = await store.read(lambda conn: get_incident(conn, incident_id))
    assert incident is not None
    payload = _notification(incident["groupLabels"]["alertname"], "resolved")
    outcome = await store.write(lambda conn: apply_notification(conn, payload))
    assert (outcome.incident_id, outcome.resolved) == (incident_id, True)


def remediation_settings(**overrides: Any) -> RemediationSettings:
    """Remediation on namespace ``prod``, applying for real, with test-sized waits."""
    values: dict[str, Any] = {
        "dry_run": False,
        "target": {"namespace": "prod"},
        "cooldown_seconds": 0,
        "revert_hold_down_seconds": 0,
        "rollout_timeout_seconds": 0.3,
        "rollout_poll_seconds": 0.05,
    }
    values.update(overrides)
    return RemediationSettings.model_validate(values)
