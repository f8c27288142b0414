"""Shared fixtures: the app through a real HTTP server, and real processes (``tests.procs``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient

from receiver.app import create_app
from receiver.incidents import IncidentEvent
from tests.helpers import make_settings
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
