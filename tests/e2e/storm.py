"""An alert storm: Alertmanager-shaped webhooks at a fixed rate, all about one incident.

What a storm looks like to the receiver: one alert group (the chart's ``PostHogRateLimited``
rule, grouped as the example Alertmanager configuration groups it) whose notifications carry
many alerts (many fingerprints: replicas, pods), most of them resent again and again (every
``group_interval``, by each Alertmanager of an HA pair). The receiver must acknowledge every
one, act once and page once.

Used by the end-to-end storm test (a short storm) and by ``bench/alert_to_action.py`` (the full
minute). The sender keeps to the rate by schedule; when the receiver answers slower than that,
at most ``concurrency`` requests wait and the achieved rate is what is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

__all__ = [
    "GROUP_KEY",
    "StormFigures",
    "resolved",
    "rss_bytes",
    "run_storm",
    "storm_alerts",
    "storm_notification",
]

GROUP_LABELS = {
    "alertname": "PostHogRateLimited",
    "error_type": "rate_limited",
    "status_code": "429",
}
GROUP_KEY = (
    '{}/{alertname=~"PostHog.+",error_type=~"auth|rate_limited|upstream_error|network"}:'
    '{alertname="PostHogRateLimited", error_type="rate_limited", status_code="429"}'
)
STARTS_AT = "2026-11-23T05:00:00Z"
ZERO_TIME = "0001-01-01T00:00:00Z"


def storm_alerts(count: int) -> list[dict[str, Any]]:
    """``count`` distinct alerts of the group (one fingerprint each), as the chart's rule
    labels them, all firing."""
    alerts = []
    for n in range(count):
        labels = {
            **GROUP_LABELS,
            "severity": "warning",
            "priority": "P2",
            "prometheus": f"monitoring/k8s-{n % 2}",
            "pod": f"posthog-integration-7d9c6b5f4-{n:05d}",
        }
        alerts.append(
            {
                "status": "firing",
                "labels": labels,
                "annotations": {
                    "summary": "PostHog rate-limits the integration",
                    "description": "The PostHog integration is rate limited at 3.20 errors/s.",
                },
                "startsAt": STARTS_AT,
                "endsAt": ZERO_TIME,
                "generatorURL": "http://prometheus.monitoring.svc:9090/graph?g0.expr=x",
                "fingerprint": f"{0x5EED0000 + n:016x}",
            }
        )
    return alerts


def storm_notification(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """A version-4 notification of the storm's group carrying ``alerts``."""
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": GROUP_KEY,
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": "posthog-incident-receiver",
        "groupLabels": dict(GROUP_LABELS),
        "commonLabels": {**GROUP_LABELS, "severity": "warning", "priority": "P2"},
        "commonAnnotations": {"summary": "PostHog rate-limits the integration"},
        "externalURL": "http://alertmanager.monitoring.svc:9093",
        "alerts": alerts,
    }


def storm_bodies(
    *, fingerprints: int = 300, variants: int = 400, seed: int = 8
) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Encoded notifications (about 3 KB), each with 1..8 alerts drawn from ``fingerprints``
    of them; also the alerts they carry in all (each once)."""
    rng = random.Random(seed)
    pool = storm_alerts(fingerprints)
    bodies = []
    seen: set[str] = set()
    for _ in range(variants):
        chosen = rng.sample(pool, rng.randint(1, 8))
        seen.update(a["fingerprint"] for a in chosen)
        bodies.append(json.dumps(storm_notification(chosen)).encode())
    return bodies, [a for a in pool if a["fingerprint"] in seen]


def resolved(
    alerts: list[dict[str, Any]], *, ends_at: str = "2026-11-23T06:00:00Z"
) -> list[dict[str, Any]]:
    """The same alerts, resolved (as Alertmanager reports them once the rule stops firing)."""
    return [{**a, "status": "resolved", "endsAt": ends_at} for a in alerts]


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class StormFigures:
    """What one storm did: requests by answer, time taken, the receiver's memory."""

    rate: float
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def achieved_rate(self) -> float:
        return sum(self.statuses.values()) / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_rate": self.rate,
            "seconds": round(self.seconds, 2),
            "sent": self.sent,
            "answered_per_second": round(self.achieved_rate, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "rss_before_mib": round(self.rss_before / 2**20, 1),
            "rss_peak_mib": round(self.rss_peak / 2**20, 1),
            "rss_after_mib": round(self.rss_after / 2**20, 1),
        }


async def run_storm(
    url: str,
    token: str,
    *,
    pid: int,
    rate: float = 1000.0,
    seconds: float = 10.0,
    bodies: list[bytes],
    concurrency: int = 64,
) -> StormFigures:
    """POST ``bodies`` (cycled) to ``url`` at ``rate`` per second for ``seconds``."""
    figures = StormFigures(rate=rate, rss_before=rss_bytes(pid))
    figures.rss_peak = figures.rss_before
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    slots = asyncio.Semaphore(concurrency)
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        while not stop_sampling.is_set():
            figures.rss_peak = max(figures.rss_peak, rss_bytes(pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_sampling.wait(), 0.2)

    async def post(session: aiohttp.ClientSession, body: bytes) -> None:
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                figures.statuses[resp.status] += 1
        except (aiohttp.ClientError, TimeoutError) as e:
            figures.errors[type(e).__name__] += 1
        finally:
            slots.release()

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sampler = asyncio.create_task(sample())
        tasks: set[asyncio.Task[None]] = set()
        total = int(rate * seconds)
        start = time.monotonic()
        for n in range(total):
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0.002:
                await asyncio.sleep(delay)
            await slots.acquire()
            task = asyncio.create_task(post(session, bodies[n % len(bodies)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        figures.seconds = time.monotonic() - start
        stop_sampling.set()
        await sampler
    figures.rss_after = rss_bytes(pid)
    figures.rss_peak = max(figures.rss_peak, figures.rss_after)
    return figures
