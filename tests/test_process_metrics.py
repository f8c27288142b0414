"""The served process's own health in ``/metrics``: the standard process and Python series, and
the garbage collector's young generation staying quiet under concurrent webhooks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp
import pytest

from tests.helpers import alert, notification
from tests.procs import ReceiverProcess

pytestmark = pytest.mark.slow

StartReceiver = Callable[..., ReceiverProcess]


def series(rx: ReceiverProcess) -> dict[str, float]:
    answer = rx.get("/metrics")
    assert answer.status == 200, answer
    found = {}
    for line in answer.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


async def post_concurrently(rx: ReceiverProcess, count: int, connections: int) -> list[int]:
    """``count`` new notifications over ``connections`` connections at once."""
    headers = {"Authorization": f"Bearer {rx.token}", "Content-Type": "application/json"}
    bodies = [
        json.dumps(
            notification([alert(f"gc-{n}-a"), alert(f"gc-{n}-b")], group_key=f'{{}}:{{n="{n}"}}')
        ).encode()
        for n in range(count)
    ]
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(lane: int) -> None:
            for body in bodies[lane::connections]:
                async with session.post(
                    rx.url + "/webhook/alertmanager", data=body, headers=headers
                ) as answer:
                    await answer.read()
                    statuses.append(answer.status)

        await asyncio.gather(*(send(lane) for lane in range(connections)))
    return statuses


def test_metrics_carry_the_standard_process_and_python_series(
    receiver_proc: StartReceiver,
) -> None:
    rx = receiver_proc()
    found = series(rx)
    assert found["process_resident_memory_bytes"] > 0
    assert found["process_open_fds"] > 0
    assert "process_cpu_seconds_total" in found
    assert any(name.startswith("python_info{") for name in found)
    assert 'python_gc_collections_total{generation="0"}' in found


def test_young_generation_is_not_collected_for_the_requests_in_flight(
    receiver_proc: StartReceiver,
) -> None:
    """50 connections at once hold a few thousand objects while they wait for their spool
    write. With CPython's default threshold (700) every ~50 such requests set off a collection
    of the young generation; the served process collects it only for real garbage."""
    rx = receiver_proc(worker={"paused": True})  # the intake alone: no incident bookkeeping
    young = 'python_gc_collections_total{generation="0"}'
    before = series(rx)[young]
    statuses = asyncio.run(post_concurrently(rx, count=2000, connections=50))
    assert statuses == [200] * 2000
    collections = series(rx)[young] - before
    assert collections < 10, f"{collections:.0f} collections of the young generation"
    assert series(rx)['posthog_receiver_webhooks_total{outcome="stored"}'] == 2000
