"""Retention: resolved incidents and evidence are pruned after their time, nothing else is.

Incidents, bundles and every related row are made through the real paths (notifications
applied to a real store, bundles written by the real collector, the outbox's and the
journal's own functions). Time is the store's: retention is run with a clock days ahead.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver.alertmanager import WebhookPayload
from receiver.config import EvidenceSettings, Settings, StoreSettings, WebhookSettings
from receiver.evidence import EvidenceCollector, bundles_for
from receiver.keys import STORE
from receiver.metrics import Metrics
from receiver.notify.outbox import Draft, enqueue, list_messages, record_sent, set_state
from receiver.redaction import Redactor
from receiver.retention import INCIDENT_BATCH, Retention
from receiver.store import Connection, Store, journal
from receiver.store.incidents import (
    add_timeline,
    apply_notification,
    due_events,
    get_incident,
    mark_event,
    unfinished_events,
)
from receiver.store.retention import rows_held
from tests.conftest import ClientFactory
from tests.helpers import alert, bearer, notification, wait_until
from tests.incident_payloads import notification as incident_notification
from tests.store_backends import (
    postgres_cluster,
    postgres_dsn,
    store_of_each_backend,
)

# Fixtures, used by name.
__all__ = ["postgres_cluster", "postgres_dsn", "store_of_each_backend"]

DAY = 86400.0


def _evidence(tmp_path: Path, **overrides: Any) -> EvidenceSettings:
    return EvidenceSettings(directory=tmp_path / "evidence", **overrides)


async def _incident(store: Store, name: str, *, resolve: bool, handled: bool = True) -> str:
    """An incident through the real notification path, its events handled (as the worker
    marks them) unless asked not to, resolved if asked."""
    key = f'{{}}:{{alertname="PostHogErrors", service="{name}"}}'
    firing = WebhookPayload.model_validate(incident_notification("firing", group_key=key))
    opened = await store.write(lambda c: apply_notification(c, firing))
    assert opened.incident_id is not None
    if resolve:
        done = WebhookPayload.model_validate(incident_notification("resolved", group_key=key))
        assert (await store.write(lambda c: apply_notification(c, done))).resolved

    def handle(conn: Connection) -> None:
        for event in due_events(conn, limit=1000):
            if event.incident_id == opened.incident_id:
                mark_event(conn, event.id, state="done", error=None)

    if handled:
        await store.write(handle)
    return opened.incident_id


async def _bundles(store: Store, tmp_path: Path, incident_id: str, **evidence: Any) -> list[Path]:
    settings = Settings(
        webhook=WebhookSettings(allow_unauthenticated=True),
        evidence=_evidence(tmp_path, **evidence),
    )
    collector = EvidenceCollector.from_settings(
        settings, store=store, cluster=None, redactor=Redactor.from_settings(settings)
    )
    try:
        return [
            await collector.collect(incident_id=incident_id, phase=phase, upstream=None)
            for phase in ("opened", "resolved")
        ]
    finally:
        await collector.close()


async def _notified_and_remediated(store: Store, incident_id: str, *, revert: str) -> None:
    """A delivered page, what PagerDuty remembers, and a journal entry: reverted already
    (``revert="done"``) or still to revert (``"pending"``)."""
    at = time.time()

    def write(conn: Connection) -> None:
        draft = Draft("pagerduty", "pagerduty.trigger", {"x": 1}, f"{incident_id}-trigger")
        enqueue(conn, incident_id, [draft], now=at)
        for message in list_messages(conn, incident_id):
            record_sent(conn, message["id"], skipped=None, now=at)
        set_state(conn, "pagerduty", incident_id, {"dedup_key": incident_id}, now=at)
        entry = journal.write_intent(
            conn,
            incident_id=incident_id,
            action="queue_mode",
            kind="set_env",
            target="posthog/posthog-integration env RATE_LIMIT_MODE",
            before={"value": None},
            after={"value": "queue"},
            at=at,
            state="done",
        )
        assert journal.schedule_revert(conn, incident_id, at + 600)
        if revert == "done":
            journal.set_state(conn, entry, "reverted", at=at)
            journal.finish_revert(conn, incident_id)

    await store.write(write)


async def _rows(store: Store, incident_id: str) -> dict[str, int]:
    return await store.read(lambda c: rows_held(c, incident_id))


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.asyncio
async def test_an_old_resolved_incident_is_pruned_with_all_it_had(
    tmp_path: Path, store: Store
) -> None:
    """91 days after: the resolved incident and every row and bundle of it are gone; the open
    incident and the one with a change still to revert are kept whole; the metrics say so."""
    old = await _incident(store, "old", resolve=True)
    still_open = await _incident(store, "open", resolve=False)
    reverting = await _incident(store, "reverting", resolve=True)
    await _notified_and_remediated(store, old, revert="done")
    await _notified_and_remediated(store, reverting, revert="pending")
    old_files = await _bundles(store, tmp_path, old)
    kept_files = await _bundles(store, tmp_path, still_open) + await _bundles(
        store, tmp_path, reverting
    )
    before = await _rows(store, old)
    assert all(before[t] for t in ("alerts", "timeline", "outbox", "notify_state"))
    assert before["evidence_bundles"] == 2
    assert before["remediation_reverts"] == 1

    metrics = Metrics()
    retention = Retention(
        store=store,
        metrics=metrics,
        store_settings=StoreSettings(path=store.path),
        evidence=_evidence(tmp_path, retention_days=365),
        clock=lambda: time.time() + 91 * DAY,
    )
    assert await retention.run_once()

    assert set((await _rows(store, old)).values()) == {0}
    assert not any(path.exists() for path in old_files)
    for kept in (still_open, reverting):
        rows = await _rows(store, kept)
        assert rows["incidents"] == 1
        assert rows["timeline"]
        assert rows["evidence_bundles"] == 2
    assert (await _rows(store, reverting))["remediation_reverts"] == 1
    assert all(path.exists() for path in kept_files)
    assert _sample(metrics, "posthog_receiver_incidents_kept", status="open") == 1
    assert _sample(metrics, "posthog_receiver_incidents_kept", status="resolved") == 1
    assert _sample(metrics, "posthog_receiver_incidents_pruned_total") == 1
    assert (
        _sample(metrics, "posthog_receiver_evidence_bundles_pruned_total", reason="incident") == 2
    )
    assert _sample(metrics, "posthog_receiver_evidence_bundles_kept") == 4
    assert _sample(metrics, "posthog_receiver_evidence_bytes") == sum(
        p.stat().st_size for p in kept_files
    )


@pytest.mark.asyncio
async def test_a_resolved_incident_with_work_left_or_too_young_is_kept(
    tmp_path: Path, store: Store
) -> None:
    """A retention not yet over keeps every resolved incident; once it is over, an event not
    yet handled or a notification not yet delivered still keeps its incident."""
    unhandled = await _incident(store, "unhandled", resolve=True, handled=False)
    undelivered = await _incident(store, "undelivered", resolve=True)
    done = await _incident(store, "done", resolve=True)
    draft = Draft("slack", "slack.post", {"x": 1}, f"{undelivered}-post")
    await store.write(lambda c: enqueue(c, undelivered, [draft], now=time.time()))
    metrics = Metrics()
    settings = StoreSettings(path=store.path, incident_retention_days=1)

    young = Retention(
        store=store, metrics=metrics, store_settings=settings, evidence=_evidence(tmp_path)
    )
    assert await young.run_once()
    for kept in (unhandled, undelivered, done):
        assert (await _rows(store, kept))["incidents"] == 1
    assert _sample(metrics, "posthog_receiver_incidents_kept", status="resolved") == 3
    assert _sample(metrics, "posthog_receiver_incidents_pruned_total") == 0

    two_days_on = Retention(
        store=store,
        metrics=metrics,
        store_settings=settings,
        evidence=_evidence(tmp_path),
        clock=lambda: time.time() + 2 * DAY,
    )
    assert await two_days_on.run_once()
    for kept in (unhandled, undelivered):
        assert (await _rows(store, kept))["incidents"] == 1
    assert set((await _rows(store, done)).values()) == {0}
    assert _sample(metrics, "posthog_receiver_incidents_kept", status="resolved") == 2
    assert _sample(metrics, "posthog_receiver_incidents_pruned_total") == 1


@pytest.mark.asyncio
async def test_pruning_goes_in_bounded_batches(tmp_path: Path, store: Store) -> None:
    """More old incidents than one batch: a pass deletes one batch and says more is left;
    the next pass deletes the rest."""
    for n in range(INCIDENT_BATCH + 5):
        await _incident(store, f"s{n}", resolve=True)
    metrics = Metrics()
    retention = Retention(
        store=store,
        metrics=metrics,
        store_settings=StoreSettings(path=store.path),
        evidence=_evidence(tmp_path),
        clock=lambda: time.time() + 91 * DAY,
    )
    assert not await retention.run_once()
    assert _sample(metrics, "posthog_receiver_incidents_kept", status="resolved") == 5
    assert await retention.run_once()
    assert _sample(metrics, "posthog_receiver_incidents_kept", status="resolved") == 0
    assert _sample(metrics, "posthog_receiver_incidents_pruned_total") == INCIDENT_BATCH + 5


async def _large_timeline(store: Store, incident_id: str) -> None:
    """About 600 KiB that gzip cannot shrink, so the incident's bundles are large."""
    blob = base64.b64encode(os.urandom(450_000)).decode()
    await store.write(lambda c: add_timeline(c, incident_id, "note", "large", {"blob": blob}))


@pytest.mark.asyncio
async def test_evidence_over_its_cap_goes_oldest_resolved_first_never_an_open_incidents(
    tmp_path: Path, store: Store
) -> None:
    """Past evidence.max_total_mib the bundles of the incident resolved first go, until the
    rest fit; the open incident's bundles stay though they are the oldest. The incidents'
    records stay, their timelines say what was deleted."""
    still_open = await _incident(store, "open", resolve=False)
    first = await _incident(store, "first", resolve=True)
    second = await _incident(store, "second", resolve=True)
    # ``first`` resolved before ``second``: oldest resolved goes first.
    for incident_id in (still_open, first, second):
        await _large_timeline(store, incident_id)
    files = {i: await _bundles(store, tmp_path, i) for i in (still_open, first, second)}
    total = sum(p.stat().st_size for paths in files.values() for p in paths)
    assert total > 2 * 1_048_576  # three incidents' bundles, each pair about 1 MiB

    metrics = Metrics()
    retention = Retention(
        store=store,
        metrics=metrics,
        store_settings=StoreSettings(path=store.path),
        evidence=_evidence(tmp_path, max_total_mib=2),
    )
    assert await retention.run_once()
    assert not any(p.exists() for p in files[first])
    assert all(p.exists() for p in files[still_open] + files[second])
    assert await store.read(lambda c: bundles_for(c, first)) == []
    assert (await _rows(store, first))["incidents"] == 1
    incident = await store.read(lambda c: get_incident(c, first))
    assert incident is not None
    timeline = [entry["message"] for entry in incident["timeline"]]
    assert "evidence bundle (resolved) deleted: evidence over 2 MiB, oldest deleted first" in (
        timeline
    )
    kept = sum(p.stat().st_size for p in files[still_open] + files[second])
    assert _sample(metrics, "posthog_receiver_evidence_bytes") == kept <= 2 * 1_048_576
    assert _sample(metrics, "posthog_receiver_evidence_bundles_pruned_total", reason="size") == 2

    # 31 days on, the resolved incident's bundles are past evidence.retention_days; the open
    # incident's are kept, and so is every incident's record.
    later = Retention(
        store=store,
        metrics=metrics,
        store_settings=StoreSettings(path=store.path),
        evidence=_evidence(tmp_path, max_total_mib=2),
        clock=lambda: time.time() + 31 * DAY,
    )
    assert await later.run_once()
    assert not any(p.exists() for p in files[second])
    assert all(p.exists() for p in files[still_open])
    assert _sample(metrics, "posthog_receiver_evidence_bundles_pruned_total", reason="age") == 2
    assert _sample(metrics, "posthog_receiver_incidents_kept", status="resolved") == 2


@pytest.mark.asyncio
async def test_files_left_by_a_crash_are_pruned_and_nothing_else_is_touched(
    tmp_path: Path, store: Store
) -> None:
    """A half-written bundle and a bundle whose record was lost are pruned once they are old;
    a young one may still be being written; a file the collector never names is not ours."""
    directory = tmp_path / "evidence"
    directory.mkdir()
    old = time.time() - 2 * 3600
    unfinished = directory / ".inc-1-opened-20260101T100000Z.ab12_cd.tmp"
    unrecorded = directory / "inc-2-resolved-20260101T100000Z.tar.gz"
    young = directory / "inc-3-opened-20260101T100000Z.tar.gz"
    foreign = directory / "notes.tar.gz"
    for path in (unfinished, unrecorded, young, foreign):
        path.write_bytes(b"x" * 1000)
    for path in (unfinished, unrecorded, foreign):
        os.utime(path, (old - 40 * DAY, old - 40 * DAY))
    metrics = Metrics()
    retention = Retention(
        store=store,
        metrics=metrics,
        store_settings=StoreSettings(path=store.path),
        evidence=_evidence(tmp_path),
    )
    assert await retention.run_once()
    assert not unfinished.exists()
    assert not unrecorded.exists()
    assert young.exists()
    assert foreign.exists()
    assert (
        _sample(metrics, "posthog_receiver_evidence_bundles_pruned_total", reason="unfinished") == 1
    )
    assert _sample(metrics, "posthog_receiver_evidence_bundles_pruned_total", reason="age") == 1
    assert _sample(metrics, "posthog_receiver_evidence_bundles_kept") == 1


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exported")


@pytest.mark.asyncio
async def test_the_running_service_prunes_and_exports_what_it_keeps(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    """Through the service: the metrics are there from the start; an incident resolved longer
    ago than the retention the service restarts with is pruned by the worker at its first
    pass after the restart."""
    groups: dict[str, Any] = {"evidence": {"directory": str(tmp_path / "evidence")}}
    client: TestClient[Any, Any] = await make_client(responder=_Handled(), **groups)
    first = await (await client.get("/metrics")).text()
    assert _metric(first, 'posthog_receiver_incidents_kept{status="open"}') == 0
    assert _metric(first, 'posthog_receiver_incidents_kept{status="resolved"}') == 0
    assert _metric(first, "posthog_receiver_evidence_bytes") == 0
    assert _metric(first, "posthog_receiver_incidents_pruned_total") == 0

    for status in ("firing", "resolved"):
        resp = await client.post(
            "/webhook/alertmanager",
            json=notification([alert("a1", status=status)]),
            headers=bearer(),
        )
        assert resp.status == 200
    await wait_until(
        lambda: _incidents(client, "resolved"), lambda found: len(found) == 1, what="resolved"
    )
    await wait_until(
        lambda: client.app[STORE].read(unfinished_events), lambda n: n == 0, what="handled"
    )
    await client.close()

    await asyncio.sleep(0.2)  # past the retention of 0.1 s the service restarts with
    client = await make_client(
        responder=_Handled(), store={"incident_retention_days": 0.1 / DAY}, **groups
    )
    await wait_until(
        lambda: _metrics_text(client),
        lambda text: _metric(text, "posthog_receiver_incidents_pruned_total") == 1,
        what="pruned",
    )
    assert await _incidents(client, None) == []


class _Handled:
    async def handle(self, event: object) -> None:
        return None


async def _incidents(client: TestClient[Any, Any], status: str | None) -> list[Any]:
    params = {"status": status} if status else {}
    resp = await client.get("/api/incidents", params=params, headers=bearer())
    incidents: list[Any] = (await resp.json())["incidents"]
    return incidents


async def _metrics_text(client: TestClient[Any, Any]) -> str:
    return await (await client.get("/metrics")).text()
