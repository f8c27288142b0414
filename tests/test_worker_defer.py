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
from receiver.metrics import Metrics
from receiver.spool import Spool
from receiver.store import Store
from receiver.store.inbox import enqueue_webhooks, inbox_depth, inbox_size
from receiver.store.incidents import IncidentEvent
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


def _notifications(count: int) -> list[tuple[str, str, bytes]]:
    rows = []
    for i in range(count):
        body = json.dumps(notification([alert(f"fp-{i}")], group_key=f'{{}}:{{g="{i}"}}'))
        payload = WebhookPayload.model_validate_json(body)
        rows.append((payload.dedup_key(), payload.group_key, body.encode()))
    return rows


async def _store_notifications(store: Store, count: int) -> None:
    rows = _notifications(count)
    await store.write(lambda c: enqueue_webhooks(c, rows))


def _worker(store: Store, defer: float, spool: Spool | None = None) -> Worker:
    return Worker(
        spool=spool,
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


@pytest.mark.asyncio
async def test_the_spool_is_still_moved_while_webhooks_always_arrive(
    store: Store, tmp_path: Path
) -> None:
    """With the intake never idle, spooled webhooks are still moved into the inbox (a small
    chunk per deferral bound) and applied, with a repeat recognised by the inbox."""
    spool = Spool(tmp_path / "spool", sync=False, segment_bytes=1 << 20, max_bytes=1 << 24)
    spool.open()
    try:
        rows = _notifications(70)
        await spool.append([*rows, rows[0]])
        worker = _worker(store, defer=0.01, spool=spool)
        worker.defer_to(lambda: True)
        while await worker.run_once():
            pass
        assert not spool.unread()
        assert await store.read(inbox_size) == 70
        assert await store.read(inbox_depth) == 0
    finally:
        spool.close()
