"""Kubernetes for tests: kmock's emulator, reached by our real client through a kubeconfig.

Objects go into the emulator as a real API server would return them; pod logs (a subresource
the emulator does not serve by itself) are answered by a reaction that honours the query
parameters the client sends (``sinceSeconds`` is ignored, ``tailLines`` and ``limitBytes``
are applied as the API server applies them: tail first, then the byte limit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kmock import KubernetesEmulator, KubernetesError, Request, resource, subresource

__all__ = [
    "EVENTS",
    "PODS",
    "add_event",
    "add_pod",
    "serve_logs",
    "write_kubeconfig",
]

PODS = resource("", "v1", "pods")
EVENTS = resource("", "v1", "events")


def write_kubeconfig(path: Path, server_url: str, *, token: str = "test-token") -> Path:
    """A kubeconfig pointing at ``server_url`` with a bearer token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server_url.rstrip("/")}}],
        "users": [{"name": "test", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def add_pod(
    kmock: KubernetesEmulator,
    namespace: str,
    name: str,
    *,
    labels: dict[str, str],
    containers: tuple[str, ...] = ("app",),
) -> None:
    kmock.objects[PODS, namespace, name] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": c, "image": "example/app:1"} for c in containers]},
        "status": {"phase": "Running"},
    }


def add_event(
    kmock: KubernetesEmulator,
    namespace: str,
    name: str,
    *,
    kind: str,
    object_name: str,
    reason: str,
    message: str,
    type_: str = "Normal",
    at: str = "2026-01-01T00:00:00Z",
    count: int = 1,
) -> None:
    kmock.objects[EVENTS, namespace, name] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"kind": kind, "name": object_name, "namespace": namespace},
        "reason": reason,
        "message": message,
        "type": type_,
        "count": count,
        "firstTimestamp": at,
        "lastTimestamp": at,
    }


def _apply_params(text: str, params: dict[str, str]) -> bytes:
    lines = text.splitlines(keepends=True)
    if "tailLines" in params:
        n = int(params["tailLines"])
        lines = lines[-n:] if n else []
    data = "".join(lines).encode("utf-8")
    if "limitBytes" in params:
        data = data[: int(params["limitBytes"])]
    return data


def serve_logs(
    kmock: KubernetesEmulator,
    logs: dict[tuple[str, str], str],
    *,
    forbidden: set[str] | None = None,
    seen: list[dict[str, Any]] | None = None,
) -> None:
    """Answer ``GET .../pods/{name}/log`` from ``logs[(pod, container)]``; pods named in
    ``forbidden`` answer 403 as an API server does for a missing ``pods/log`` permission."""
    forbidden = forbidden or set()

    def answer(request: Request) -> Any:
        params = dict(request.params)
        if seen is not None:
            seen.append({"pod": request.name, **params})
        if request.name in forbidden:
            raise KubernetesError(
                status=403, reason="Forbidden", message=f'pods "{request.name}" is forbidden'
            )
        text = logs.get((str(request.name), params.get("container", "")))
        if text is None:
            raise KubernetesError(status=404, reason="NotFound", message="container not found")
        return _apply_params(text, params)

    kmock["get", PODS, subresource("log")] << answer
