"""Connecting to the API server: in-cluster service account, or a kubeconfig file."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes_asyncio import client, config

__all__ = ["connect"]


async def connect(*, kubeconfig: Path | None, context: str | None = None) -> client.ApiClient:
    """An API client: from ``kubeconfig`` when given, else in-cluster when running in a pod,
    else the default kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``)."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        await config.load_kube_config(
            config_file=str(kubeconfig), context=context, client_configuration=configuration
        )
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(context=context, client_configuration=configuration)
    return client.ApiClient(configuration=configuration)
