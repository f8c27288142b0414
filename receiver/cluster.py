"""What the rest of the service needs to know about the cluster, without Kubernetes types.

Triage asks these questions in the decision tree ("are our pods healthy?", "was the API key
rotated after the pods started?"); evidence collects logs and events. The Kubernetes adapter
(``receiver.kube``) answers them; tests and the dry CLI can answer them otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = ["ApiKeyReport", "ClusterEvent", "ClusterView", "PodLogs", "PodState", "PodsReport"]


@dataclass(frozen=True)
class PodState:
    """One pod of the integration deployment."""

    name: str
    ready: bool
    restarts: int
    started_at: datetime | None
    waiting_reason: str | None = None  # e.g. CrashLoopBackOff, ImagePullBackOff
    last_termination_reason: str | None = None  # e.g. OOMKilled, Error
    phase: str = "Running"


@dataclass(frozen=True)
class PodsReport:
    """The integration deployment's pods, and what looks wrong with them."""

    pods: list[PodState]
    desired_replicas: int | None = None

    @property
    def problems(self) -> list[str]:
        found: list[str] = []
        if self.desired_replicas and len(self.pods) < self.desired_replicas:
            found.append(f"{len(self.pods)} of {self.desired_replicas} pods exist")
        for pod in self.pods:
            if not pod.ready:
                found.append(f"{pod.name} not ready ({pod.waiting_reason or pod.phase})")
            if pod.last_termination_reason == "OOMKilled":
                found.append(f"{pod.name} was OOMKilled")
            if pod.restarts >= 3:
                found.append(f"{pod.name} restarted {pod.restarts} times")
        if not self.pods:
            found.append("no pods found")
        return found

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def oldest_start(self) -> datetime | None:
        starts = [p.started_at for p in self.pods if p.started_at is not None]
        return min(starts) if starts else None


@dataclass(frozen=True)
class ApiKeyReport:
    """The PostHog API-key Secret, as the runbook's 401/403 section checks it."""

    exists: bool
    non_empty: bool
    changed_at: datetime | None  # when the key data last changed, as far as can be told
    pods_started_at: datetime | None  # start of the oldest running pod

    @property
    def rotated_since_pods_started(self) -> bool:
        """A rotated key the running pods have not picked up: a restart fixes this."""
        return (
            self.exists
            and self.non_empty
            and self.changed_at is not None
            and self.pods_started_at is not None
            and self.changed_at > self.pods_started_at
        )


@dataclass(frozen=True)
class ClusterEvent:
    """A Kubernetes Event about the integration's objects."""

    at: datetime | None
    type: str  # Normal / Warning
    reason: str
    message: str
    object: str  # kind/name
    count: int = 1


@dataclass(frozen=True)
class PodLogs:
    pod: str
    container: str
    lines: list[str] = field(default_factory=list)
    truncated: bool = False
    error: str | None = None


class ClusterView(Protocol):
    """Read-only questions about the integration's workload."""

    async def integration_pods(self) -> PodsReport: ...

    async def api_key(self) -> ApiKeyReport: ...
