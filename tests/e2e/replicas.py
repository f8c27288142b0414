"""Several ``posthog-receiver serve`` processes on one real PostgreSQL, for the HA tests.

The outside systems are the end-to-end stack's (``tests.e2e.stack``): the Kubernetes emulator
(kmock over real HTTP) that remembers each accepted write, and the fake PagerDuty, Statuspage
and Slack that remember each request. The replicas are real processes, so the tests can kill
(SIGKILL), pause (SIGSTOP) and restart them; the PostgreSQL cluster is the test's own, so it
can be stopped and started. Leases are short (2 s) so that hand-overs take seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kmock import Server

from tests.e2e.stack import (
    ROUTING_KEY,
    STATUSPAGE_COMPONENT,
    STATUSPAGE_KEY,
    STATUSPAGE_PAGE,
    Cluster,
    PostHogIntegration,
    eventually,
    receiver_settings,
)
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.fakes.status_page import FakeStatusPage
from tests.fakes.statuspage import FakeStatuspage
from tests.postgres import PostgresCluster
from tests.procs import ReceiverProcess

__all__ = ["LEASE", "Replicas", "running_replicas"]

# Lease, renew deadline and retry period: a hand-over takes at most LEASE plus a retry.
LEASE = {"lease_seconds": 2.0, "renew_deadline_seconds": 1.4, "retry_seconds": 0.3}


@dataclass
class Replicas:
    """The replicas and every outside system they talk to."""

    postgres: PostgresCluster
    cluster: Cluster
    pagerduty: FakePagerDuty
    statuspage: FakeStatuspage
    slack: FakeSlack
    replicas: list[ReceiverProcess]
    session: aiohttp.ClientSession = field(init=False)

    def __post_init__(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    def running(self) -> list[ReceiverProcess]:
        return [r for r in self.replicas if r.running()]

    async def get(self, replica: ReceiverProcess, path: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {replica.token}"}
        async with self.session.get(replica.url + path, headers=headers) as resp:
            return resp.status, await resp.json()

    async def post_webhook(self, replica: ReceiverProcess, body: dict[str, Any]) -> int:
        headers = {"Authorization": f"Bearer {replica.token}"}
        url = replica.url + "/webhook/alertmanager"
        async with self.session.post(url, json=body, headers=headers) as resp:
            await resp.read()
            return resp.status

    async def metric(self, replica: ReceiverProcess, name: str) -> float:
        """The value of an unlabelled series on ``/metrics``."""
        async with self.session.get(replica.url + "/metrics") as resp:
            text = await resp.text()
        (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
        return float(line.split()[1])

    async def leading(self, replica: ReceiverProcess) -> bool:
        try:
            status, body = await self.get(replica, "/api/leadership")
        except (aiohttp.ClientError, TimeoutError):
            return False
        return status == 200 and bool(body["leading"]) and bool(body["duties_running"])

    async def leader(self, *, among: list[ReceiverProcess] | None = None) -> ReceiverProcess:
        """The one replica (of ``among``, by default the running ones) that leads, once one
        does; two at once fails."""

        async def probe() -> ReceiverProcess | None:
            candidates = among if among is not None else self.running()
            found = [r for r in candidates if await self.leading(r)]
            assert len(found) <= 1, f"two replicas lead at once: {[r.url for r in found]}"
            return found[0] if found else None

        return await eventually(probe, what="a leader", timeout=20)

    async def incidents(self, replica: ReceiverProcess) -> list[dict[str, Any]]:
        status, body = await self.get(replica, "/api/incidents")
        assert status == 200, body
        return list(body["incidents"] if isinstance(body, dict) else body)

    async def incident(self, replica: ReceiverProcess, incident_id: str) -> dict[str, Any]:
        status, body = await self.get(replica, f"/api/incidents/{incident_id}")
        assert status == 200, body
        return dict(body)

    def pages(self, action: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.pagerduty.alerts if action is None or a["event_action"] == action]

    def dedup_keys(self) -> set[str]:
        return {a["dedup_key"] for a in self.pagerduty.alerts if a.get("dedup_key")}

    def outside_requests(self) -> int:
        """Requests that reached a notification fake, all of them."""
        return (
            len(self.pagerduty.received) + len(self.statuspage.received) + len(self.slack.received)
        )

    # processes, off the event loop (the fakes live on it)
    async def kill(self, replica: ReceiverProcess) -> None:
        await asyncio.to_thread(replica.kill)

    async def start(self, replica: ReceiverProcess) -> None:
        await asyncio.to_thread(replica.start)

    async def restart(self, replica: ReceiverProcess) -> None:
        await asyncio.to_thread(replica.terminate)
        await asyncio.to_thread(replica.start)

    def pause(self, replica: ReceiverProcess) -> None:
        assert replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGSTOP)

    def resume(self, replica: ReceiverProcess) -> None:
        assert replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGCONT)


@asynccontextmanager
async def running_replicas(
    workdir: Path,
    postgres: PostgresCluster,
    *,
    count: int = 3,
    lease: dict[str, float] | None = None,
    **overrides: Any,
) -> AsyncIterator[Replicas]:
    """``count`` replicas on one database of ``postgres``, each with its own name, with the
    test lease unless ``lease`` (leadership timings) is given; stopped (SIGTERM, then SIGKILL)
    when the block ends, before the fakes."""
    async with AsyncExitStack() as stack:
        integration = PostHogIntegration()
        status_page = FakeStatusPage()
        pagerduty = FakePagerDuty(ROUTING_KEY)
        statuspage = FakeStatuspage(STATUSPAGE_KEY, STATUSPAGE_PAGE, STATUSPAGE_COMPONENT)
        slack = FakeSlack()
        for part in (integration, status_page, pagerduty, statuspage, slack):
            await part.start()
            stack.push_async_callback(part.stop)
        cluster = await stack.enter_async_context(Cluster())
        await stack.enter_async_context(Server(cluster))
        cluster.seed()
        dsn = postgres.dsn(await asyncio.to_thread(postgres.create_database))

        replicas = []
        for n in range(count):
            rx_dir = workdir / f"replica-{n}"
            rx_dir.mkdir(parents=True)
            config = receiver_settings(
                rx_dir,
                cluster_url=str(cluster.url),
                status_url=status_page.url("summary"),
                health_url=integration.health_url,
                pagerduty_url=pagerduty.url,
                statuspage_url=statuspage.url,
                slack_url=slack.webhook_url,
                store={
                    "backend": "postgres",
                    "postgres": {"dsn": {"value": dsn}, "statement_timeout_seconds": 1},
                    "busy_timeout_seconds": 1,
                },
                leadership={"identity": f"replica-{n}", **(LEASE if lease is None else lease)},
                worker={"poll_interval_seconds": 0.2},
                **overrides,
            )
            replica = ReceiverProcess(rx_dir, config)
            replicas.append(replica)
            stack.push_async_callback(asyncio.to_thread, replica.close)
        # All at once, as a Deployment's pods start: they migrate once and elect one leader.
        await asyncio.gather(*(asyncio.to_thread(r.start) for r in replicas))
        result = Replicas(
            postgres=postgres,
            cluster=cluster,
            pagerduty=pagerduty,
            statuspage=statuspage,
            slack=slack,
            replicas=replicas,
        )
        stack.push_async_callback(result.session.close)
        yield result
