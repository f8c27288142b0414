"""Acknowledgements first: the worker defers the inbox while webhooks wait, but never starves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from receiver.alertmanager import WebhookPayload
from receiver.config import StoreSettings, WorkerSettings
from receiver.incidents import IncidentEvent, enqueue_webhooks, inbox_depth
from receiver.metrics import Metrics
from receiver.store import Store
from receiver.worker import Worker
from tests.helpers import alert, notification


class Recorder:
    """Records the incident events handed on."""

    def __init__(self) -> None:
        self.events: list[IncidentEvent] = []

    async def handle(self, event: IncidentEvent) -> None:
        self.events.append(event)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(StoreSettings(path=tmp_path / "s.sqlite3"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _store_notifications(store: Store, count: int) -> None:
    rows = []
    for i in range(count):
        body = json.dumps(notification([alert(f"fp-{i}")], group_key=f'{{}}:{{g="{i}"}}'))
        payload = WebhookPayload.model_validate_json(body)
        rows.append((payload.dedup_key(), payload.group_key, body.encode()))
    await store.write(lambda c: enqueue_webhooks(c, rows))


def _worker(store: Store, defer: float) -> Worker:
    return Worker(
        store=store,
        metrics=Metrics(),
        responder=Recorder(),
        inbox_retention_seconds=3600,
        settings=WorkerSettings(defer_to_webhooks_seconds=defer, poll_interval_seconds=0.05),
    )


@pytest.mark.asyncio
async def test_the_inbox_is_still_processed_while_webhooks_always_wait(store: Store) -> None:
    """With the intake never idle (a long storm), every stored notification is still applied."""
    await _store_notifications(store, 40)  # several chunks
    worker = _worker(store, defer=0.01)
    worker.defer_to(lambda: True)
    assert await worker.run_once()
    assert await store.read(inbox_depth) == 0


@pytest.mark.asyncio
async def test_the_worker_waits_while_webhooks_wait_for_their_commit(store: Store) -> None:
    """Nothing is applied while webhooks wait (within the bound); it is once they are answered."""
    await _store_notifications(store, 3)
    waiting = True
    worker = _worker(store, defer=1.0)
    worker.defer_to(lambda: waiting)
    running = asyncio.create_task(worker.run_once())
    await asyncio.sleep(0.1)
    assert not running.done()
    assert await store.read(inbox_depth) == 3
    waiting = False
    assert await running
    assert await store.read(inbox_depth) == 0
