"""Intake on the PostgreSQL store: a webhook answered 200 is committed to the shared inbox.

A real receiver process on a real PostgreSQL: killed (SIGKILL) right after its 200, the
webhook is already in the database, and no local spool ever held it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from receiver.store import Store
from receiver.store.inbox import pending_inbox
from tests.helpers import alert, notification
from tests.procs import ReceiverProcess, receiver_config
from tests.store_backends import postgres_cluster, postgres_dsn, store_settings

pytestmark = pytest.mark.slow

# Fixtures, used by name.
__all__ = ["postgres_cluster", "postgres_dsn"]


async def _pending_payloads(dsn: str, tmp_path: Path) -> list[bytes]:
    store = Store(store_settings("postgres", tmp_path, dsn))
    await store.open()
    try:
        return [row.payload for row in await store.read(pending_inbox)]
    finally:
        await store.close()


def test_an_acknowledged_webhook_is_in_postgres_before_the_200(
    postgres_dsn: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "receiver"
    workdir.mkdir()
    config = receiver_config(
        workdir,
        worker={"paused": True},  # nothing moves it on: it stays pending in the inbox
        store={"backend": "postgres", "postgres": {"dsn": {"value": postgres_dsn}}},
    )
    rx = ReceiverProcess(workdir, config).start()
    try:
        body = notification([alert("pg-1")])
        answer = rx.post_webhook(body)
        assert (answer.status, answer.json()["status"]) == (200, "stored")
        rx.kill()  # no shutdown of any kind: only what was committed remains
    finally:
        rx.close()
    payloads = asyncio.run(_pending_payloads(postgres_dsn, tmp_path))
    assert [json.loads(p)["alerts"][0]["fingerprint"] for p in payloads] == [
        body["alerts"][0]["fingerprint"]
    ]
    assert not list(workdir.rglob("*.spool")), "no local spool in front of the shared store"
