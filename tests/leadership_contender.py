"""A replica's leadership in a process of its own, for tests that crash or pause it.

``python -m tests.leadership_contender DSN IDENTITY LEASE DEADLINE RETRY`` contends for the
lease and, every 100 ms, tries to commit a fenced intent as the acting side would: a
transaction on a store thread that runs ``Leadership.check_term`` first. It writes one JSON
line per event to stdout (``time.monotonic()`` is system-wide, so the test compares times):

    {"event": "gained", "term": 3, "at": 1234.5}
    {"event": "fence", "ok": true, "term": 3, "leader": true, "started": 1234.6}

Its store connection ends a transaction left idle for 500 ms, as the store's does: a process
paused inside one would otherwise hold the lease row and keep its successor waiting.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from receiver.config import LeadershipSettings
from receiver.leadership import Leadership, LeadershipChange, NotLeader
from receiver.metrics import Metrics

__all__ = ["QmarkConnection"]

IDLE_TIMEOUT = "-c idle_in_transaction_session_timeout=500"


class QmarkConnection:
    """A psycopg connection taking the store's portable ``?`` placeholders."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any], /) -> psycopg.Cursor[Any]:
        return self._conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Store:
    """The acting side's store connection, reopened when the server ended it."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def fence(self, leadership: Leadership) -> None:
        started = time.monotonic()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._dsn, options=IDLE_TIMEOUT)
            with self._conn.transaction():
                term = leadership.check_term(QmarkConnection(self._conn))
            _say(event="fence", ok=True, term=term, leader=leadership.is_leader, started=started)
        except (NotLeader, psycopg.OperationalError) as e:
            _say(event="fence", ok=False, error=type(e).__name__, started=started)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


async def main(dsn: str, identity: str, lease: float, deadline: float, retry: float) -> None:
    settings = LeadershipSettings(
        identity=identity,
        lease_seconds=lease,
        renew_deadline_seconds=deadline,
        retry_seconds=retry,
    )
    leadership = Leadership(dsn=dsn, settings=settings, metrics=Metrics())

    def told(change: LeadershipChange) -> None:
        kind = "gained" if change.leading else "lost"
        _say(event=kind, term=change.term, at=time.monotonic())

    leadership.add_listener(told)
    store = Store(dsn)
    await leadership.start()
    _say(event="started", at=time.monotonic())
    try:
        while True:
            await asyncio.to_thread(store.fence, leadership)
            await asyncio.sleep(0.1)
    finally:
        await leadership.stop()
        store.close()


if __name__ == "__main__":
    dsn, identity, *times = sys.argv[1:]
    lease, deadline, retry = (float(t) for t in times)
    asyncio.run(main(dsn, identity, lease, deadline, retry))
