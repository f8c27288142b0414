"""Three replicas on one PostgreSQL: one acts, a lost or paused leader is replaced and fenced,
a database outage acknowledges nothing it would lose, a rolling restart loses and repeats nothing.

Only outside systems are observed: the Kubernetes emulator's accepted writes, the requests
that reached the fake PagerDuty, Statuspage and Slack, the receivers' HTTP answers and API.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.replicas import LEASE, Replicas, running_replicas
from tests.e2e.stack import eventually
from tests.e2e.storm import resolved, storm_alerts, storm_notification
from tests.postgres import PostgresCluster, running_cluster
from tests.procs import ReceiverProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

SETTLE = 30.0


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of the test's own (one test stops and starts it)."""
    with running_cluster() as cluster:
        yield cluster


def _firing(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    return storm_notification(alerts)


async def _one_incident(rs: Replicas, replica: ReceiverProcess, *, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await rs.incidents(replica)
        assert len(found) <= 1, f"expected one incident, got {found}"
        if not found or found[0]["status"] != status:
            return None
        return await rs.incident(replica, found[0]["id"])

    return await eventually(probe, what=f"one {status} incident", timeout=SETTLE)


async def _queue_mode(rs: Replicas) -> None:
    await eventually(
        lambda: rs.cluster.env().get("RATE_LIMIT_MODE") == "queue",
        what="queue mode",
        timeout=SETTLE,
    )


async def _reverted(rs: Replicas) -> None:
    await eventually(
        lambda: "RATE_LIMIT_MODE" not in rs.cluster.env(),
        what="queue mode reverted",
        timeout=SETTLE,
    )


async def test_one_incident_over_three_replicas_one_action_one_page_one_revert(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    """Webhooks about one incident land on different replicas: one incident, one action, one
    PagerDuty key, one revert, whoever leads."""
    alerts = storm_alerts(3)
    async with running_replicas(tmp_path, postgres) as rs:
        a, b, c = rs.replicas
        await rs.leader()
        assert await rs.post_webhook(a, _firing(alerts[:1])) == 200
        assert await rs.post_webhook(b, _firing(alerts[:2])) == 200
        assert await rs.post_webhook(c, _firing(alerts)) == 200  # a resend, on a third one
        await _queue_mode(rs)
        await eventually(lambda: rs.pages("trigger"), what="PagerDuty trigger", timeout=SETTLE)
        opened = await _one_incident(rs, b, status="open")
        await eventually(
            lambda: _has_alerts(rs, c, opened["id"], 3), what="three alerts", timeout=SETTLE
        )

        assert await rs.post_webhook(c, _firing(resolved(alerts))) == 200
        await _one_incident(rs, a, status="resolved")
        await _reverted(rs)
        await eventually(lambda: rs.pages("resolve"), what="PagerDuty resolve", timeout=SETTLE)
        assert len(rs.dedup_keys()) == 1, "one incident, one page"
        assert len(rs.cluster.deployment_writes()) == 2, "set once, reverted once"
        leader = await rs.leader()
        for replica in rs.replicas:  # every replica serves the API, and tells who leads
            assert len(await rs.incidents(replica)) == 1
            _, leadership = await rs.get(replica, "/api/leadership")
            assert leadership["leader"]["holder"] == f"replica-{rs.replicas.index(leader)}"
            assert leadership["leading"] is (replica is leader)
            gauge = await rs.metric(replica, "posthog_receiver_leader")
            assert gauge == (1.0 if replica is leader else 0.0)


async def _has_alerts(rs: Replicas, replica: ReceiverProcess, incident_id: str, n: int) -> bool:
    return len((await rs.incident(replica, incident_id))["alerts"]) == n


async def test_leader_killed_after_its_patch_another_takes_over_and_reverts_once(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    """SIGKILL the leader right after it patched the Deployment: another replica takes over,
    repeats nothing, and reverts on resolve: exactly one apply write and one revert write."""
    alerts = storm_alerts(1)
    async with running_replicas(tmp_path, postgres) as rs:
        first = await rs.leader()
        assert await rs.post_webhook(first, _firing(alerts)) == 200
        await _queue_mode(rs)
        await rs.kill(first)
        survivors = [r for r in rs.replicas if r is not first]
        second = await rs.leader(among=survivors)
        assert await rs.post_webhook(survivors[0], _firing(resolved(alerts))) == 200
        await _one_incident(rs, second, status="resolved")
        await _reverted(rs)
        await eventually(lambda: rs.pages("resolve"), what="PagerDuty resolve", timeout=SETTLE)
        writes = rs.cluster.deployment_writes()
        assert len(writes) == 2, f"one apply and one revert, got {len(writes)}"
        assert len(rs.dedup_keys()) == 1


async def test_paused_leader_resumed_after_its_successor_acted_does_nothing_more(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    """SIGSTOP the leader longer than the lease, let the new leader act, SIGCONT the old one:
    it writes nothing more to Kubernetes and sends nothing more.

    It is paused as soon as it acknowledged the alert, so anywhere in handling it (before the
    action's intent, between the intent and the patch, after it): whatever it did, the
    successor reconciles to exactly one apply write, and the old one adds nothing on waking.
    """
    alerts = storm_alerts(1)
    async with running_replicas(tmp_path, postgres) as rs:
        first = await rs.leader()
        assert await rs.post_webhook(first, _firing(alerts)) == 200
        rs.pause(first)
        try:
            survivors = [r for r in rs.replicas if r is not first]
            second = await rs.leader(among=survivors)
            await _queue_mode(rs)
            await eventually(lambda: rs.pages("trigger"), what="PagerDuty trigger", timeout=SETTLE)
            assert len(rs.cluster.deployment_writes()) == 1, "one apply, by one of them"
            assert await rs.post_webhook(survivors[1], _firing(resolved(alerts))) == 200
            await _one_incident(rs, second, status="resolved")
            await _reverted(rs)
            await eventually(lambda: rs.pages("resolve"), what="PagerDuty resolve", timeout=SETTLE)
            # Everything the successor does for this incident is done: nothing is pending.
            await asyncio.sleep(1.0)
        finally:
            rs.resume(first)
        writes, requests = len(rs.cluster.accepted), rs.outside_requests()
        # Long enough for its loops to wake, notice and be refused: several retry periods.
        await asyncio.sleep(LEASE["lease_seconds"] + 2.0)
        assert not await rs.leading(first), "the old leader knows it lost the lead"
        assert len(rs.cluster.accepted) == writes, "no Kubernetes write after SIGCONT"
        assert rs.outside_requests() == requests, "no notification after SIGCONT"
        assert len(rs.cluster.deployment_writes()) == 2
        assert len(rs.dedup_keys()) == 1


async def test_database_down_webhooks_refused_never_acknowledged_then_nothing_lost(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    """PostgreSQL stopped: webhooks get 503, never 200, and /readyz fails on every replica;
    started again, everything resumes and every acknowledged notification is in the store."""
    alerts = storm_alerts(12)
    async with running_replicas(tmp_path, postgres) as rs:
        await rs.leader()
        assert await rs.post_webhook(rs.replicas[0], _firing(alerts[:2])) == 200
        await asyncio.to_thread(postgres.stop)
        try:
            down_until = asyncio.get_running_loop().time() + 12.0
            statuses: set[int] = set()
            for n in itertools.count(2):
                if asyncio.get_running_loop().time() > down_until:
                    break
                replica = rs.replicas[n % 3]
                statuses.add(await rs.post_webhook(replica, _firing(alerts[: 2 + n % 4])))
                ready, _ = await rs.get(replica, "/readyz")
                assert ready == 503, "not ready without the store"
                await asyncio.sleep(0.5)
            assert statuses == {503}, f"only 503 while the database is down, got {statuses}"
        finally:
            await asyncio.to_thread(postgres.start)
        for replica in rs.replicas:
            await eventually(lambda r=replica: _ready(rs, r), what="ready again", timeout=SETTLE)
        acknowledged = []
        for n, alert in enumerate(alerts[2:]):
            if await rs.post_webhook(rs.replicas[n % 3], _firing([alert])) == 200:
                acknowledged.append(alert)
        assert len(acknowledged) == len(alerts) - 2
        leader = await rs.leader()
        opened = await _one_incident(rs, leader, status="open")
        await eventually(
            lambda: _has_alerts(rs, leader, opened["id"], len(alerts)),
            what="every acknowledged alert on the incident",
            timeout=SETTLE,
        )
        assert len(rs.cluster.deployment_writes()) == 1
        assert len(rs.dedup_keys()) == 1


async def _ready(rs: Replicas, replica: ReceiverProcess) -> bool:
    try:
        status, _ = await rs.get(replica, "/readyz")
    except (aiohttp.ClientError, TimeoutError):
        return False
    return status == 200


async def test_rolling_restart_under_a_trickle_loses_and_repeats_nothing(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    """Every replica restarted in turn (SIGTERM, start) while webhooks keep arriving, each sent
    to a replica that is up (as a Service routes): every acknowledged alert is on the one
    incident, one action, one page key."""
    alerts = storm_alerts(400)
    acknowledged: list[dict[str, Any]] = []
    refused = 0
    async with running_replicas(tmp_path, postgres) as rs:
        await rs.leader()
        done = asyncio.Event()

        async def trickle() -> None:
            nonlocal refused
            for n in itertools.count():
                if done.is_set() or n >= len(alerts):
                    return
                up = rs.running()
                replica = up[n % len(up)]
                try:
                    status = await rs.post_webhook(replica, _firing([alerts[n]]))
                except (aiohttp.ClientError, TimeoutError):
                    status = 0  # stopping under our feet: Alertmanager would retry elsewhere
                if status == 200:
                    acknowledged.append(alerts[n])
                else:
                    refused += 1
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(trickle())
        for replica in rs.replicas:
            await rs.restart(replica)
            await rs.leader()
        done.set()
        await sender
        # A trickle, not a count: how many go through depends on the machine's load.
        assert len(acknowledged) >= 20, (len(acknowledged), refused)
        leader = await rs.leader()
        opened = await _one_incident(rs, leader, status="open")
        await eventually(
            lambda: _has_alerts(rs, leader, opened["id"], len(acknowledged)),
            what="every acknowledged alert on the incident",
            timeout=SETTLE,
        )
        await _queue_mode(rs)
        assert len(rs.cluster.deployment_writes()) == 1, "one action"
        await eventually(lambda: rs.pages("trigger"), what="PagerDuty trigger", timeout=SETTLE)
        assert len(rs.dedup_keys()) == 1, "one page key"
