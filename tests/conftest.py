"""Shared fixtures: a Kubernetes API emulator over real HTTP, reached through a kubeconfig."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from kmock import Server

from receiver.config import KubernetesSettings, RemediationTarget
from receiver.kube.workload import IntegrationWorkload
from tests.kube_emulator import ClusterEmulator, write_kubeconfig


@pytest_asyncio.fixture()
async def cluster() -> AsyncIterator[ClusterEmulator]:
    """An empty emulated API server on a free local port."""
    async with ClusterEmulator() as emulator, Server(emulator):
        yield emulator


@pytest_asyncio.fixture()
async def kube_settings(cluster: ClusterEmulator, tmp_path: Path) -> KubernetesSettings:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    return KubernetesSettings(
        mode="kubeconfig",
        kubeconfig=kubeconfig,
        request_timeout_seconds=0.5,
        retry_attempts=3,
        retry_backoff_seconds=0.01,
    )


@pytest_asyncio.fixture()
async def workload(kube_settings: KubernetesSettings) -> AsyncIterator[IntegrationWorkload]:
    """The integration workload in namespace ``prod``, connected through the kubeconfig."""
    connected = await IntegrationWorkload.connect(
        kube_settings, RemediationTarget(namespace="prod")
    )
    assert connected is not None
    yield connected
    await connected.close()
