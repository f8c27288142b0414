"""Reading the integration's pod logs and Kubernetes events, for the evidence bundle.

The runbook's ``kubectl logs -l app=posthog-integration --since=1h`` and the events of the
deployment and its pods, read-only. Each pod's log is read on its own: a pod whose log cannot
be read (403 from a missing ``pods/log`` permission, a container that has not started) gets
a :class:`~receiver.cluster.PodLogs` with ``error`` set, and the other pods are still read.
Listing the pods or the events failing is raised as a :class:`~receiver.kube.errors.KubeError`
for the caller to record as a failed source.

Events are listed once for the namespace and filtered here by the object they are about (the
deployment, its ReplicaSets, its pods), rather than one field-selected list per object: one
request, and the same answer from a real API server and from a test emulator.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client

from receiver.cluster import ClusterEvent, PodLogs
from receiver.kube.client import KubeConnection
from receiver.kube.errors import KubeError, translated

__all__ = ["PodLogReader", "list_integration_events", "read_integration_logs"]


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.astimezone(UTC) if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


async def read_integration_logs(
    api: client.ApiClient,
    *,
    namespace: str,
    label_selector: str,
    container: str | None,
    since_seconds: int,
    limit_bytes: int,
    tail_lines: int | None,
    request_timeout: float = 30.0,
) -> list[PodLogs]:
    """Logs of every container (or only ``container``) of the pods matching ``label_selector``.

    ``limit_bytes`` caps each container's read; a read that reaches it is marked truncated.
    ``tail_lines`` keeps only the last lines (``None``: the whole ``since_seconds`` window).
    """
    core = client.CoreV1Api(api)
    pods = await translated(
        "list integration pods",
        lambda: core.list_namespaced_pod(
            namespace, label_selector=label_selector, _request_timeout=request_timeout
        ),
    )
    found: list[PodLogs] = []
    for pod in sorted(pods.items or [], key=lambda p: p.metadata.name):
        name: str = pod.metadata.name
        containers = [c.name for c in (pod.spec.containers if pod.spec else None) or []]
        if container is not None:
            containers = [c for c in containers if c == container]
        for cname in containers:
            found.append(
                await _read_one(
                    core,
                    namespace=namespace,
                    pod=name,
                    container=cname,
                    since_seconds=since_seconds,
                    limit_bytes=limit_bytes,
                    tail_lines=tail_lines,
                    request_timeout=request_timeout,
                )
            )
    return found


async def _read_one(
    core: client.CoreV1Api,
    *,
    namespace: str,
    pod: str,
    container: str,
    since_seconds: int,
    limit_bytes: int,
    tail_lines: int | None,
    request_timeout: float,
) -> PodLogs:
    kwargs: dict[str, Any] = {
        "container": container,
        "since_seconds": since_seconds,
        "limit_bytes": limit_bytes,
        "_request_timeout": request_timeout,
    }
    if tail_lines is not None:
        kwargs["tail_lines"] = tail_lines
    try:
        text = await translated(
            f"read logs of pod {pod} container {container}",
            lambda: core.read_namespaced_pod_log(pod, namespace, **kwargs),
        )
    except KubeError as e:
        return PodLogs(pod=pod, container=container, error=str(e))
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = str(text or "")
    return PodLogs(
        pod=pod,
        container=container,
        lines=text.splitlines(),
        truncated=len(text.encode("utf-8")) >= limit_bytes,
    )


def _about_integration(obj: Any, *, deployment: str, pods: set[str]) -> bool:
    """Whether an event's object is the deployment, one of its ReplicaSets
    (``<deployment>-<pod-template-hash>``) or one of its pods (seen, or named
    ``<deployment>-<hash>-<suffix>``); a longer-named neighbour such as
    ``<deployment>-canary`` is not."""
    if obj is None:
        return False
    kind, name = obj.kind or "", obj.name or ""
    prefix = re.escape(deployment)
    if kind == "Deployment":
        return bool(name == deployment)
    if kind == "ReplicaSet":
        return re.fullmatch(rf"{prefix}-[a-z0-9]{{1,10}}", name) is not None
    if kind == "Pod":
        return (
            name in pods
            or re.fullmatch(rf"{prefix}-[a-z0-9]{{1,10}}-[a-z0-9]{{5}}", name) is not None
        )
    return False


async def list_integration_events(
    api: client.ApiClient,
    *,
    namespace: str,
    deployment: str,
    pod_names: set[str],
    limit: int,
    request_timeout: float = 30.0,
) -> list[ClusterEvent]:
    """Events about the deployment, its ReplicaSets and its pods, oldest first."""
    core = client.CoreV1Api(api)
    listed = await translated(
        "list events",
        lambda: core.list_namespaced_event(namespace, _request_timeout=request_timeout),
    )
    events: list[ClusterEvent] = []
    for ev in listed.items or []:
        obj = ev.involved_object
        if not _about_integration(obj, deployment=deployment, pods=pod_names):
            continue
        at = _aware(
            ev.last_timestamp
            or ev.event_time
            or ev.first_timestamp
            or (ev.metadata.creation_timestamp if ev.metadata else None)
        )
        events.append(
            ClusterEvent(
                at=at,
                type=ev.type or "Normal",
                reason=ev.reason or "",
                message=ev.message or "",
                object=f"{obj.kind}/{obj.name}",
                count=int(ev.count or 1),
            )
        )
    events.sort(key=lambda e: e.at or datetime.min.replace(tzinfo=UTC))
    return events[-limit:]


class PodLogReader:
    """The integration's logs and events, through the process's connection (which its owner
    closes).

    Targets (namespace, deployment, label selector, container) come from configuration only.
    """

    def __init__(
        self,
        connection: KubeConnection,
        *,
        namespace: str,
        deployment: str,
        label_selector: str,
        container: str | None,
    ) -> None:
        self._api = connection.api
        self._timeout = connection.policy.request_timeout_seconds
        self._namespace = namespace
        self._deployment = deployment
        self._selector = label_selector
        self._container = container
        self._pods_seen: set[str] = set()

    @property
    def selection(self) -> str:
        return f"{self._selector} in namespace {self._namespace}"

    async def pod_logs(
        self, *, since_seconds: int, limit_bytes: int, tail_lines: int | None
    ) -> list[PodLogs]:
        """Logs of the integration's containers; see :func:`read_integration_logs`."""
        found = await read_integration_logs(
            self._api,
            namespace=self._namespace,
            label_selector=self._selector,
            container=self._container,
            since_seconds=since_seconds,
            limit_bytes=limit_bytes,
            tail_lines=tail_lines,
            request_timeout=self._timeout,
        )
        self._pods_seen.update(p.pod for p in found)
        return found

    async def events(self, *, limit: int) -> list[ClusterEvent]:
        """Events of the deployment and of the pods seen so far (and any named after it)."""
        return await list_integration_events(
            self._api,
            namespace=self._namespace,
            deployment=self._deployment,
            pod_names=set(self._pods_seen),
            limit=limit,
            request_timeout=self._timeout,
        )
