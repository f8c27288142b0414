"""The integration's pods, as the runbook's "check pods" step looks at them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client

from receiver.cluster import PodsReport, PodState
from receiver.kube.calls import RetryPolicy, call, operation

__all__ = ["list_pods"]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _pod_state(pod: Any) -> PodState:
    status = pod.status
    statuses = (status.container_statuses if status else None) or []
    conditions = (status.conditions if status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions) or (
        bool(statuses) and all(s.ready for s in statuses)
    )
    waiting = next((s.state.waiting.reason for s in statuses if s.state and s.state.waiting), None)
    terminated = next(
        (
            s.last_state.terminated.reason
            for s in statuses
            if s.last_state and s.last_state.terminated
        ),
        None,
    )
    return PodState(
        name=pod.metadata.name,
        ready=ready,
        restarts=sum(int(s.restart_count or 0) for s in statuses),
        started_at=_utc(status.start_time if status else None),
        waiting_reason=waiting,
        last_termination_reason=terminated,
        phase=(status.phase if status else None) or "Unknown",
    )


async def list_pods(
    api: client.ApiClient,
    *,
    namespace: str,
    selector: str,
    desired_replicas: int | None,
    policy: RetryPolicy,
) -> PodsReport:
    """The pods matching ``selector`` in ``namespace``."""
    core = client.CoreV1Api(api)
    result = await call(
        operation("list", "pods", namespace=namespace),
        lambda: core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=policy.request_timeout_seconds
        ),
        policy=policy,
    )
    pods = [_pod_state(p) for p in result.items or [] if not p.metadata.deletion_timestamp]
    return PodsReport(pods=pods, desired_replicas=desired_replicas)
