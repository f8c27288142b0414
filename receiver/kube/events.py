"""Kubernetes Events on the Deployment: every remediation decision shows up in
``kubectl describe deployment`` and ``kubectl get events``, where the on-call engineer looks.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client

from receiver.kube.calls import RetryPolicy, call, operation

__all__ = ["COMPONENT", "record_event"]

COMPONENT = "posthog-incident-receiver"
MESSAGE_LIMIT = 1024  # the API server rejects longer Event messages


async def record_event(
    api: client.ApiClient,
    *,
    namespace: str,
    deployment: str,
    deployment_uid: str | None,
    reason: str,
    message: str,
    warning: bool,
    now: datetime,
    policy: RetryPolicy,
) -> None:
    """Create one core/v1 Event about the Deployment."""
    core = client.CoreV1Api(api)
    stamp = now.isoformat().replace("+00:00", "Z")
    involved: dict[str, str] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}
    involved["namespace"] = namespace
    if deployment_uid:
        involved["uid"] = deployment_uid
    body: Any = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{deployment}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    await call(
        operation("create", "events", namespace=namespace),
        lambda: core.create_namespaced_event(
            namespace, body, _request_timeout=policy.request_timeout_seconds
        ),
        policy=policy,
        changes=True,
    )
