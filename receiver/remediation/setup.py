"""Building the remediator: the process's cluster connection, a Prometheus client, cleanup.

A cluster that cannot be configured (missing kubeconfig, no service account) must not stop
the service: remediation then reports what it would do and why it could not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from receiver.config import Settings
from receiver.kube.client import ClusterAccess
from receiver.kube.workload import IntegrationWorkload
from receiver.metrics import Metrics
from receiver.prometheus import PrometheusClient
from receiver.remediation.remediator import Remediator
from receiver.store import Store

__all__ = ["open_remediator"]


@asynccontextmanager
async def open_remediator(
    settings: Settings, *, store: Store, cluster: ClusterAccess, metrics: Metrics | None = None
) -> AsyncIterator[Remediator]:
    """A remediator acting through ``cluster`` (whose owner closes it) on the configured
    target; its Prometheus client is closed on exit."""
    workload = (
        IntegrationWorkload(cluster.connection, target=settings.remediation.target)
        if cluster.connection is not None
        else None
    )
    verify = settings.remediation.verify
    prom = settings.prometheus
    prometheus = (
        PrometheusClient(prom.url, timeout_seconds=prom.timeout_seconds)
        if verify.promql and prom.url
        else None
    )
    try:
        yield Remediator(
            settings=settings.remediation,
            store=store,
            workload=workload,
            prometheus=prometheus,
            metrics=metrics,
            no_cluster_reason=cluster.missing,
        )
    finally:
        if prometheus is not None:
            await prometheus.close()
