"""Mode in_cluster as a pod runs it: the service account files, HTTPS signed by the cluster CA,
and a projected token that the kubelet replaces while the receiver runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from receiver.config import KubernetesSettings, RemediationTarget
from receiver.kube.client import KubeConnection, open_cluster
from receiver.kube.errors import KubeForbidden, KubeInvalid, KubeUnavailable
from receiver.kube.workload import IntegrationWorkload
from tests.fakes.kube_apiserver import (
    APIServerFront,
    CertificateAuthority,
    ProjectedServiceAccount,
)
from tests.helpers import alert, notification
from tests.kube_emulator import DEPLOYMENTS, ClusterEmulator, deployment
from tests.procs import ReceiverProcess, receiver_config

NAME = "posthog-integration"


@pytest_asyncio.fixture
async def apiserver(cluster: ClusterEmulator, tmp_path: Path) -> AsyncIterator[APIServerFront]:
    """The emulator behind HTTPS signed by a fresh cluster CA, honouring the token 'first'."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment(NAME))
    front = APIServerFront(
        upstream=str(cluster.url),
        ca=CertificateAuthority(),
        workdir=tmp_path / "apiserver",
        tokens={"first"},
    )
    await front.start()
    yield front
    await front.stop()


@pytest.fixture
def account(
    apiserver: APIServerFront, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ProjectedServiceAccount:
    """The pod's environment and mounted service account (namespace 'prod', token 'first')."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(apiserver.port))
    return ProjectedServiceAccount(
        tmp_path / "serviceaccount", token="first", ca_pem=apiserver.ca.pem, namespace="prod"
    )


def in_cluster(directory: Path) -> KubernetesSettings:
    return KubernetesSettings(
        mode="in_cluster",
        service_account_dir=directory,
        request_timeout_seconds=2,
        retry_attempts=3,
        retry_backoff_seconds=0.01,
    )


@pytest_asyncio.fixture
async def workload(account: ProjectedServiceAccount) -> AsyncIterator[IntegrationWorkload]:
    connection = await KubeConnection.open(in_cluster(account.directory))
    assert connection is not None
    yield IntegrationWorkload(connection, target=RemediationTarget(namespace="prod"))
    await connection.close()


@pytest.mark.asyncio
async def test_the_service_account_reaches_the_api_server_over_verified_https(
    apiserver: APIServerFront, workload: IntegrationWorkload
) -> None:
    """The address comes from the pod's environment, the server is trusted through the
    mounted CA, and each request carries the mounted token."""
    state = await workload.deployment()
    assert state.replicas == 2
    assert apiserver.presented == ["first"]


@pytest.mark.asyncio
async def test_a_rotated_token_is_used_by_the_next_call(
    apiserver: APIServerFront, account: ProjectedServiceAccount, workload: IntegrationWorkload
) -> None:
    """After the kubelet swaps in a new token and the old one stops being honoured, the very
    next call authenticates with the new one (no minute-long window of 401s)."""
    await workload.deployment()
    account.rotate("second")
    apiserver.rotate("second")
    with capture_logs() as logs:
        await workload.deployment()
        await workload.deployment()
    assert apiserver.presented == ["first", "second", "second"]
    assert apiserver.refused == 0
    # The token is read again only when the file was replaced, and its value is never logged.
    assert [e["event"] for e in logs] == ["service account token replaced, using the new one"]
    assert "second" not in str(logs)


@pytest.mark.asyncio
async def test_a_refused_token_is_reported_as_a_missing_permission(
    apiserver: APIServerFront, workload: IntegrationWorkload
) -> None:
    """A token the API server no longer honours (rotated there, not yet in the pod) is a 401,
    reported as what the service account cannot do, not retried as if transient."""
    apiserver.rotate("elsewhere")
    with pytest.raises(KubeForbidden) as caught:
        await workload.deployment()
    assert caught.value.status == 401
    assert "elsewhere" not in str(caught.value)
    assert apiserver.refused == 1


@pytest.mark.asyncio
async def test_a_server_not_signed_by_the_mounted_ca_is_not_trusted(
    apiserver: APIServerFront, account: ProjectedServiceAccount
) -> None:
    """TLS is verified against ca.crt: another CA's server gets no request, let alone the token."""
    other = ProjectedServiceAccount(
        account.directory.parent / "other",
        token="first",
        ca_pem=CertificateAuthority("another cluster").pem,
        namespace="prod",
    )
    connection = await KubeConnection.open(in_cluster(other.directory))
    assert connection is not None
    try:
        workload = IntegrationWorkload(connection, target=RemediationTarget(namespace="prod"))
        with pytest.raises(KubeUnavailable):
            await workload.deployment()
    finally:
        await connection.close()
    assert apiserver.presented == []


@pytest.mark.asyncio
async def test_the_pods_namespace_is_read_from_the_service_account(
    account: ProjectedServiceAccount,
) -> None:
    """Connecting says which namespace the pod (and so its service account) lives in."""
    with capture_logs() as logs:
        connection = await KubeConnection.open(in_cluster(account.directory))
    assert connection is not None
    await connection.close()
    assert {"event": "connecting as the pod's service account", "namespace": "prod"}.items() <= (
        logs[0].items()
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("missing", "says"),
    [
        ("token", "cannot read the service account token"),
        ("namespace", "cannot read the service account's namespace file"),
        ("ca.crt", "cannot use the service account in"),
    ],
)
async def test_an_incomplete_service_account_is_reported(
    account: ProjectedServiceAccount, missing: str, says: str
) -> None:
    """A pod without its service account mounted (automountServiceAccountToken: false) gets no
    connection and a reason naming the file, not a crash or a fallback to some kubeconfig."""
    (account.directory / missing).unlink()
    with pytest.raises(KubeInvalid, match=says):
        await KubeConnection.open(in_cluster(account.directory))
    async with open_cluster(in_cluster(account.directory)) as access:
        assert access.connection is None
        assert says in access.missing


async def eventually(condition: Callable[[], bool], *, what: str, seconds: float = 20) -> None:
    """Poll without blocking the loop the fake API server runs in."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def quiet(apiserver: APIServerFront, *, for_seconds: float = 1.0) -> None:
    """Wait until no request has reached the API server for ``for_seconds``."""
    while True:
        seen = len(apiserver.presented)
        await asyncio.sleep(for_seconds)
        if len(apiserver.presented) == seen:
            return


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_serving_receiver_follows_the_token_rotation(
    apiserver: APIServerFront, account: ProjectedServiceAccount, tmp_path: Path
) -> None:
    """``serve`` in mode in_cluster, as the chart runs it: the calls for an incident carry the
    mounted token; after the kubelet replaces it (and the old one is refused), the calls for
    the next incident carry the new one, in the same process."""
    workdir = tmp_path / "receiver"
    workdir.mkdir()
    config = receiver_config(
        workdir,
        kubernetes={
            "mode": "in_cluster",
            "service_account_dir": str(account.directory),
            "request_timeout_seconds": 2,
            "retry_attempts": 1,
        },
        remediation={"target": {"namespace": "prod"}},
    )
    rx = ReceiverProcess(workdir, config)  # the pod's KUBERNETES_SERVICE_* are in its env
    try:
        await asyncio.to_thread(rx.start)
        first = notification([alert("a1")], group_key="{}:{alertname=first}")
        assert (await asyncio.to_thread(rx.post_webhook, first)).status == 200
        await eventually(lambda: bool(apiserver.presented), what="a call for the first incident")
        await quiet(apiserver)
        before = len(apiserver.presented)

        account.rotate("second")
        apiserver.rotate("second")
        following = notification([alert("b1")], group_key="{}:{alertname=second}")
        assert (await asyncio.to_thread(rx.post_webhook, following)).status == 200
        await eventually(
            lambda: len(apiserver.presented) > before, what="a call for the second incident"
        )
        await quiet(apiserver)
    finally:
        await asyncio.to_thread(rx.close)
    assert set(apiserver.presented[:before]) == {"first"}
    assert set(apiserver.presented[before:]) == {"second"}
    assert apiserver.refused == 0
    assert "second" not in rx.logs()


@pytest.mark.asyncio
async def test_an_empty_token_is_refused_at_connect(account: ProjectedServiceAccount) -> None:
    """An empty token file is a broken mount, said so, not sent as an empty bearer token."""
    (account.directory / "token").write_text("\n", encoding="utf-8")
    with pytest.raises(KubeInvalid, match=r"service account token .*: the file is empty"):
        await KubeConnection.open(in_cluster(account.directory))
