"""Building the remediator from settings: cluster connection, Prometheus client, cleanup.

A cluster that cannot be configured (missing kubeconfig, no service account) must not stop
the service: remediation then reports what it would do and why it could not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from receiver.config import Settings
from receiver.kube.errors import KubeError
from receiver.kube.workload import IntegrationWorkload
from receiver.metrics import Metrics
from receiver.prometheus import PrometheusClient
from receiver.remediation.remediator import Remediator
from receiver.store import Store

__all__ = ["open_remediator"]

logger = structlog.get_logger(__name__)


@asynccontextmanager
async def open_remediator(
    settings: Settings, *, store: Store, metrics: Metrics | None = None
) -> AsyncIterator[Remediator]:
    """A remediator for the configured cluster; closed (connections released) on exit."""
    reason = "no cluster configured"
    workload: IntegrationWorkload | None = None
    try:
        workload = await IntegrationWorkload.connect(
            settings.kubernetes, settings.remediation.target
        )
    except KubeError as e:
        reason = f"cluster not reachable ({e})"
        logger.error("remediation has no cluster", error=str(e))
    verify = settings.remediation.verify
    prometheus = PrometheusClient(verify.prometheus_url) if verify.promql else None
    try:
        yield Remediator(
            settings=settings.remediation,
            store=store,
            workload=workload,
            prometheus=prometheus,
            metrics=metrics,
            no_cluster_reason=reason,
        )
    finally:
        if prometheus is not None:
            await prometheus.close()
        if workload is not None:
            await workload.close()
