"""The process's one connection to the API server: in-cluster service account, or a kubeconfig.

Why one: triage's cluster view, remediation and the evidence log reader all talk to the same
API server with the same credentials. One :class:`KubeConnection` is opened in the
application's lifecycle (or a command's) from the ``kubernetes`` settings and handed to each;
its owner closes it, the parts using it never do. A cluster that cannot be configured (missing
kubeconfig, no service account) must not stop the service: :func:`open_cluster` then yields
no connection and says why, and each part reports what it could not do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config import ConfigException

from receiver.config import KubernetesSettings
from receiver.kube.calls import RetryPolicy
from receiver.kube.errors import KubeError, KubeInvalid
from receiver.kube.service_account import ServiceAccount, configure_in_cluster

__all__ = ["ClusterAccess", "KubeConnection", "connect", "open_cluster"]

logger = structlog.get_logger(__name__)

NO_CLUSTER = "no cluster configured"


async def connect(*, kubeconfig: Path | None, context: str | None = None) -> client.ApiClient:
    """An API client from ``kubeconfig``, else the default kubeconfig (``$KUBECONFIG`` or
    ``~/.kube/config``)."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kubeconfig) if kubeconfig is not None else None,
        context=context,
        client_configuration=configuration,
    )
    return client.ApiClient(configuration=configuration)


@dataclass(frozen=True)
class KubeConnection:
    """One API client, and how calls through it are retried and timed out."""

    api: client.ApiClient
    policy: RetryPolicy

    @classmethod
    async def open(
        cls, settings: KubernetesSettings, *, fence: Callable[[], object] | None = None
    ) -> KubeConnection | None:
        """Connect as configured; ``None`` when no cluster is configured (mode ``none``).
        ``fence`` is called right before each request that changes the cluster (see
        :func:`~receiver.kube.calls.call`). Raises :class:`~receiver.kube.errors.KubeInvalid`
        when the configuration cannot be loaded."""
        if settings.mode == "none":
            return None
        try:
            if settings.mode == "in_cluster":
                configuration = client.Configuration()
                namespace = configure_in_cluster(
                    configuration, ServiceAccount(settings.service_account_dir)
                )
                logger.info("connecting as the pod's service account", namespace=namespace)
                api = client.ApiClient(configuration=configuration)
            else:
                api = await connect(kubeconfig=settings.kubeconfig, context=settings.context)
        except (ConfigException, OSError, ValueError) as e:
            raise KubeInvalid(
                f"cannot load the cluster configuration: {str(e)[:200]}", operation="connect"
            ) from e
        policy = RetryPolicy(
            attempts=settings.retry_attempts,
            backoff_seconds=settings.retry_backoff_seconds,
            request_timeout_seconds=settings.request_timeout_seconds,
            fence=fence,
        )
        return cls(api, policy)

    async def close(self) -> None:
        await self.api.close()


@dataclass(frozen=True)
class ClusterAccess:
    """The connection, or why there is none (for outcomes and notes that say so)."""

    connection: KubeConnection | None
    missing: str = NO_CLUSTER


@asynccontextmanager
async def open_cluster(
    settings: KubernetesSettings, *, fence: Callable[[], object] | None = None
) -> AsyncIterator[ClusterAccess]:
    """The configured cluster's connection, closed on exit; never raises for a cluster that
    cannot be configured (it is logged, and ``missing`` says why). Its writes pass ``fence``
    first (see :meth:`KubeConnection.open`)."""
    try:
        connection = await KubeConnection.open(settings, fence=fence)
    except KubeError as e:
        logger.error("no cluster connection", error=str(e))
        yield ClusterAccess(None, f"cluster not reachable ({e})")
        return
    try:
        yield ClusterAccess(connection)
    finally:
        if connection is not None:
            await connection.close()
