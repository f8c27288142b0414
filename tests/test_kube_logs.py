"""Pod logs and events through the Kubernetes adapter, against kmock's emulator over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator, KubernetesError

from receiver.config import KubernetesSettings
from receiver.kube.client import KubeConnection
from receiver.kube.errors import KubeForbidden, KubeUnavailable
from receiver.kube.logs import PodLogReader
from tests.fakes.kube import EVENTS, PODS, add_event, add_pod, serve_logs, write_kubeconfig

NS = "posthog"
APP = {"app": "posthog-integration"}


@asynccontextmanager
async def reading(kubeconfig: Path, **overrides: Any) -> AsyncIterator[PodLogReader]:
    """A reader of the integration's pods through a connection opened from ``kubeconfig``."""
    connection = await KubeConnection.open(
        KubernetesSettings(mode="kubeconfig", kubeconfig=kubeconfig, request_timeout_seconds=5)
    )
    assert connection is not None
    options: dict[str, Any] = {
        "namespace": NS,
        "deployment": "posthog-integration",
        "label_selector": "app=posthog-integration",
        "container": None,
    }
    options.update(overrides)
    try:
        yield PodLogReader(connection, **options)
    finally:
        await connection.close()


@pytest.fixture
def kubeconfig(kmock: KubernetesEmulator, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))


@pytest.mark.asyncio
async def test_reads_each_container_with_the_requested_window(
    kmock: KubernetesEmulator, kubeconfig: Path
) -> None:
    """Every container of the selected pods is read with sinceSeconds, limitBytes and tailLines."""
    add_pod(kmock, NS, "posthog-integration-7d9-a", labels=APP, containers=("app", "sidecar"))
    add_pod(kmock, NS, "posthog-integration-7d9-b", labels=APP)
    seen: list[dict[str, Any]] = []
    serve_logs(
        kmock,
        {
            ("posthog-integration-7d9-a", "app"): "a1\na2 ERROR 503\na3\n",
            ("posthog-integration-7d9-a", "sidecar"): "s1\n",
            ("posthog-integration-7d9-b", "app"): "b1\nb2\n",
        },
        seen=seen,
    )
    async with reading(kubeconfig) as reader:
        logs = await reader.pod_logs(since_seconds=3600, limit_bytes=4096, tail_lines=2)
    got = {(p.pod, p.container): p.lines for p in logs}
    assert got == {
        ("posthog-integration-7d9-a", "app"): ["a2 ERROR 503", "a3"],
        ("posthog-integration-7d9-a", "sidecar"): ["s1"],
        ("posthog-integration-7d9-b", "app"): ["b1", "b2"],
    }
    assert all(p.error is None and not p.truncated for p in logs)
    assert {(s["sinceSeconds"], s["limitBytes"], s["tailLines"]) for s in seen} == {
        ("3600", "4096", "2")
    }
    pod_lists = [r for r in kmock if r.resource == PODS and r.name is None]
    assert pod_lists[0].params["labelSelector"] == "app=posthog-integration"


@pytest.mark.asyncio
async def test_a_read_cut_at_limit_bytes_is_marked_truncated(
    kmock: KubernetesEmulator, kubeconfig: Path
) -> None:
    """A log read that reaches limitBytes is reported as truncated."""
    add_pod(kmock, NS, "posthog-integration-x", labels=APP)
    serve_logs(kmock, {("posthog-integration-x", "app"): "x" * 5000 + "\n"})
    async with reading(kubeconfig) as reader:
        (logs,) = await reader.pod_logs(since_seconds=60, limit_bytes=1024, tail_lines=None)
    assert logs.truncated
    assert sum(len(line) for line in logs.lines) == 1024


@pytest.mark.asyncio
async def test_only_the_configured_container_is_read(
    kmock: KubernetesEmulator, kubeconfig: Path
) -> None:
    """With a container configured, other containers of the pod are not read."""
    add_pod(kmock, NS, "posthog-integration-x", labels=APP, containers=("app", "sidecar"))
    serve_logs(
        kmock,
        {("posthog-integration-x", "app"): "a\n", ("posthog-integration-x", "sidecar"): "s\n"},
    )
    async with reading(kubeconfig, container="app") as reader:
        logs = await reader.pod_logs(since_seconds=60, limit_bytes=1024, tail_lines=None)
    assert [(p.container, p.lines) for p in logs] == [("app", ["a"])]


@pytest.mark.asyncio
async def test_a_forbidden_log_becomes_a_note_and_other_pods_are_read(
    kmock: KubernetesEmulator, kubeconfig: Path
) -> None:
    """A 403 on one pod's log is reported on that pod; the other pods are still read."""
    add_pod(kmock, NS, "posthog-integration-a", labels=APP)
    add_pod(kmock, NS, "posthog-integration-b", labels=APP)
    serve_logs(
        kmock,
        {("posthog-integration-a", "app"): "x\n", ("posthog-integration-b", "app"): "y\n"},
        forbidden={"posthog-integration-a"},
    )
    async with reading(kubeconfig) as reader:
        logs = await reader.pod_logs(since_seconds=60, limit_bytes=1024, tail_lines=None)
    by_pod = {p.pod: p for p in logs}
    assert by_pod["posthog-integration-a"].error is not None
    assert "403" in by_pod["posthog-integration-a"].error
    assert by_pod["posthog-integration-a"].lines == []
    assert by_pod["posthog-integration-b"].lines == ["y"]


@pytest.mark.asyncio
async def test_listing_pods_forbidden_raises_our_error(
    kmock: KubernetesEmulator, kubeconfig: Path
) -> None:
    """A 403 on listing the pods is raised as KubeForbidden, naming the operation."""
    kmock["list", PODS] << KubernetesError(status=403, reason="Forbidden", message="no")
    async with reading(kubeconfig) as reader:
        with pytest.raises(KubeForbidden, match="list integration pods"):
            await reader.pod_logs(since_seconds=60, limit_bytes=1024, tail_lines=None)


@pytest.mark.asyncio
async def test_events_of_the_deployment_and_its_pods_only(
    kmock: KubernetesEmulator, kubeconfig: Path
) -> None:
    """Events about the deployment, its ReplicaSets and pods are kept, oldest first; others not."""
    add_pod(kmock, NS, "posthog-integration-7d9-a", labels=APP)
    add_event(
        kmock,
        NS,
        "e1",
        kind="Pod",
        object_name="posthog-integration-7d9-a",
        reason="BackOff",
        message="Back-off restarting failed container",
        type_="Warning",
        at="2026-01-01T10:05:00Z",
        count=4,
    )
    add_event(
        kmock,
        NS,
        "e2",
        kind="Deployment",
        object_name="posthog-integration",
        reason="ScalingReplicaSet",
        message="Scaled up",
        at="2026-01-01T10:00:00Z",
    )
    add_event(
        kmock,
        NS,
        "e3",
        kind="ReplicaSet",
        object_name="posthog-integration-7d9",
        reason="SuccessfulCreate",
        message="Created pod",
        at="2026-01-01T10:01:00Z",
    )
    add_event(
        kmock,
        NS,
        "e4",
        kind="Pod",
        object_name="billing-api-1",
        reason="Killing",
        message="not ours",
        at="2026-01-01T10:02:00Z",
    )
    add_event(
        kmock,
        NS,
        "e5",
        kind="Deployment",
        object_name="posthog-integration-canary",
        reason="ScalingReplicaSet",
        message="not ours either",
        at="2026-01-01T10:03:00Z",
    )
    add_pod(kmock, NS, "hand-made-pod", labels=APP)
    serve_logs(
        kmock, {("posthog-integration-7d9-a", "app"): "x\n", ("hand-made-pod", "app"): "y\n"}
    )
    add_event(
        kmock,
        NS,
        "e6",
        kind="Pod",
        object_name="hand-made-pod",
        reason="Started",
        message="selected by label, so ours",
        at="2026-01-01T10:06:00Z",
    )
    for n, (kind, name) in enumerate(
        [
            ("ReplicaSet", "posthog-integration-canary-5f7c9d"),
            ("Pod", "posthog-integration-canary-5f7c9d-abcde"),
        ]
    ):
        add_event(
            kmock, NS, f"n{n}", kind=kind, object_name=name, reason="Other", message="not ours"
        )
    async with reading(kubeconfig) as reader:
        await reader.pod_logs(since_seconds=60, limit_bytes=1024, tail_lines=1)
        events = await reader.events(limit=100)
    assert [(e.object, e.reason) for e in events] == [
        ("Deployment/posthog-integration", "ScalingReplicaSet"),
        ("ReplicaSet/posthog-integration-7d9", "SuccessfulCreate"),
        ("Pod/posthog-integration-7d9-a", "BackOff"),
        ("Pod/hand-made-pod", "Started"),
    ]
    assert events[2].type == "Warning"
    assert events[2].count == 4
    assert events[2].at is not None
    assert events[2].at.utcoffset() is not None
    assert any(r.resource == EVENTS for r in kmock)


@pytest.mark.asyncio
async def test_an_unreachable_cluster_is_unavailable(tmp_path: Path) -> None:
    """A kubeconfig pointing nowhere gives KubeUnavailable, not a library exception."""
    from tests.fakes.prometheus_server import free_port

    kubeconfig = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{free_port()}")
    async with reading(kubeconfig) as reader:
        with pytest.raises(KubeUnavailable):
            await reader.events(limit=10)
