"""What the running receiver does when its state directory is damaged under it: a deleted or
replaced database, a spool the disk refuses. Nothing acknowledged may be lost, and readiness
says whether a webhook can be stored now."""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from receiver.config import StoreSettings
from receiver.store import Store, StoreUnavailable
from receiver.store.base import nothing
from tests.helpers import alert, notification
from tests.procs import ReceiverProcess, wait_for

StartReceiver = Callable[..., ReceiverProcess]


def _incident_groups(rx: ReceiverProcess) -> set[str]:
    answer = rx.get("/api/incidents")
    assert answer.status == 200, answer
    found: list[dict[str, Any]] = answer.json()["incidents"]
    return {i["groupKey"] for i in found}


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _group(n: int) -> dict[str, Any]:
    return notification([alert(f"fp{n:04d}")], group_key=f'{{}}:{{alertname="G{n}"}}')


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_store_whose_file_is_gone_refuses_every_write(tmp_path: Path, how: str) -> None:
    """Once the file at the path is not the one opened, nothing commits (a commit would go to
    a file no restart finds), the store is not ready, and it is logged once as an ERROR."""
    path = tmp_path / "receiver.sqlite3"
    store = Store(StoreSettings(path=path))
    await store.open()
    try:
        assert await store.ping()
        _remove_database(path)
        if how == "replaced":
            path.write_bytes(b"")
        with capture_logs() as logs:
            with pytest.raises(StoreUnavailable, match=how):
                await store.write(nothing)
            assert not await store.ping()
        assert store.lost is not None
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1
        assert how in errors[0]["reason"]
    finally:
        await store.close()


@pytest.mark.slow
def test_a_deleted_database_stops_acknowledging_and_loses_nothing_acknowledged(
    receiver_proc: StartReceiver,
) -> None:
    """The database deleted under a running receiver: /readyz fails with the store named, new
    webhooks are answered 503, and every webhook acknowledged after the deletion is an
    incident after the restart (it waited in the spool, never in the lost file)."""
    rx = receiver_proc()
    assert rx.post_webhook(_group(0)).status == 200
    wait_for(lambda: _incident_groups(rx), what="first incident")
    database = Path(rx.workdir / "receiver.sqlite3")
    _remove_database(database)

    acknowledged: set[str] = set()
    for n in range(1, 6):
        body = _group(n)
        if rx.post_webhook(body).status == 200:
            acknowledged.add(body["groupKey"])
    ready = rx.get("/readyz")
    assert ready.status == 503
    assert ready.json()["store"] is False
    refused = rx.post_webhook(_group(99))
    assert refused.status == 503
    assert any(
        e["event"].startswith("store lost its database file") and e["level"] == "error"
        for e in rx.log_events()
    )

    assert rx.terminate() == 0
    rx.start()
    wait_for(lambda: acknowledged <= _incident_groups(rx), what="acknowledged webhooks back")
    assert rx.get("/readyz").status == 200


@pytest.mark.slow
def test_readiness_follows_whether_the_spool_can_be_written(
    receiver_proc: StartReceiver,
) -> None:
    """A disk that refuses the spool's writes: webhooks get 503 and /readyz says the spool is
    not ready (not only while a webhook arrives); once writing works again, /readyz finds out
    on its own and webhooks are stored again."""
    rx = receiver_proc(
        worker={"paused": True},
        server={"max_body_bytes": 262_144},
        store={"spool_segment_mib": 64},
    )
    assert rx.proc is not None
    pid = rx.proc.pid
    log_size = (rx.workdir / "receiver.log").stat().st_size
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    # No file may grow much past the log's end: the spool, new and small, takes a little more,
    # but not a large webhook (as a nearly full disk).
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (log_size + 32_768, hard))
    big = _group(1)
    big["alerts"][0]["annotations"] = {f"note{i}": "x" * 16_000 for i in range(13)}
    try:
        assert rx.post_webhook(big).status == 503
        for _ in range(2):  # stays not ready without further webhooks
            ready = rx.get("/readyz")
            assert ready.status == 503
            assert ready.json()["spool"] is False
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    wait_for(lambda: rx.get("/readyz").status == 200, what="ready again")
    assert rx.post_webhook(big).status == 200
