"""A stand-in for our own ClusterView protocol: fixed answers, or a failure, and a call log."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from receiver.cluster import ApiKeyReport, PodsReport, PodState

STARTED = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


def healthy_pods(n: int = 2) -> PodsReport:
    return PodsReport(
        pods=[
            PodState(
                name=f"posthog-integration-7d9f-{i}", ready=True, restarts=0, started_at=STARTED
            )
            for i in range(n)
        ],
        desired_replicas=n,
    )


def key(*, exists: bool = True, non_empty: bool = True, rotated: bool = False) -> ApiKeyReport:
    changed = STARTED + timedelta(minutes=30) if rotated else STARTED - timedelta(days=3)
    return ApiKeyReport(
        exists=exists, non_empty=non_empty, changed_at=changed, pods_started_at=STARTED
    )


@dataclass
class FakeCluster:
    pods: PodsReport | Exception = field(default_factory=healthy_pods)
    api_key_report: ApiKeyReport | Exception = field(default_factory=key)
    hang: bool = False
    calls: list[str] = field(default_factory=list)

    async def _answer(self, name: str, value: PodsReport | ApiKeyReport | Exception) -> object:
        self.calls.append(name)
        if self.hang:
            await asyncio.sleep(3600)
        if isinstance(value, Exception):
            raise value
        return value

    async def integration_pods(self) -> PodsReport:
        answer = await self._answer("integration_pods", self.pods)
        assert isinstance(answer, PodsReport)
        return answer

    async def api_key(self) -> ApiKeyReport:
        answer = await self._answer("api_key", self.api_key_report)
        assert isinstance(answer, ApiKeyReport)
        return answer
