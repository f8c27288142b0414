"""The Kubernetes adapter against an emulated API server over real HTTP, via a kubeconfig."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from receiver.config import KubernetesSettings, RemediationTarget
from receiver.kube.client import KubeConnection, open_cluster
from receiver.kube.deployments import EnvValue
from receiver.kube.errors import KubeForbidden, KubeInvalid, KubeUnavailable
from receiver.kube.secrets import UPDATED_AT
from receiver.kube.workload import IntegrationWorkload
from tests.kube_emulator import (
    DEPLOYMENTS,
    PODS,
    SECRETS,
    ClusterEmulator,
    deployment,
    events_in,
    pod,
    secret,
)

NAME = "posthog-integration"


def containers(cluster: ClusterEmulator, namespace: str = "prod") -> list[dict[str, object]]:
    spec = cluster.current(DEPLOYMENTS, namespace, NAME)["spec"]["template"]["spec"]
    return list(spec["containers"])


@pytest.fixture
def rotating(cluster: ClusterEmulator, kube: KubeConnection) -> IntegrationWorkload:
    """The workload with a source Secret configured: the live key 'old', the next key 'new'."""
    cluster.put_object(
        SECRETS, "prod", "posthog-secrets", secret("posthog-secrets", {"api-key": "b2xk"})
    )
    cluster.put_object(
        SECRETS,
        "prod",
        "posthog-secrets-next",
        secret("posthog-secrets-next", {"api-key": "bmV3"}),
    )
    target = RemediationTarget(namespace="prod", source_secret="posthog-secrets-next")
    return IntegrationWorkload(kube, target=target)


@pytest.mark.asyncio
async def test_no_cluster_configured_gives_no_connection() -> None:
    """With mode 'none' there is no connection to act through, and nothing tries to connect."""
    assert await KubeConnection.open(KubernetesSettings()) is None


@pytest.mark.asyncio
async def test_a_cluster_that_cannot_be_configured_is_reported_not_raised(
    tmp_path: Path,
) -> None:
    """open_cluster yields no connection and says why when the kubeconfig cannot be loaded."""
    settings = KubernetesSettings(mode="kubeconfig", kubeconfig=tmp_path / "missing")
    async with open_cluster(settings) as access:
        assert access.connection is None
        assert access.missing.startswith("cluster not reachable (connect: cannot load the")


@pytest.mark.asyncio
async def test_set_env_rewrites_only_the_named_container(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """Setting a variable adds it to the one container and leaves the sidecar as it was."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    change = await workload.set_env(
        env="RATE_LIMIT_MODE", value="queue", dry_run=False, conflict_attempts=3
    )
    assert change.changed
    assert change.before == EnvValue(present=False)
    sidecar, app = containers(cluster)
    assert sidecar == {
        "name": "log-shipper",
        "image": "shipper:1",
        "env": [{"name": "A", "value": "1"}],
    }
    assert app["env"] == [
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "RATE_LIMIT_MODE", "value": "queue"},
    ]
    # The token from the kubeconfig was sent: the client really went through it.
    assert all(r.headers.get("Authorization") == "Bearer test-token" for r in cluster)


@pytest.mark.asyncio
async def test_every_change_is_server_side_dry_run_first(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """The real patch is preceded by the same patch with dryRun=All."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    await workload.set_env(env="RATE_LIMIT_MODE", value="queue", dry_run=False, conflict_attempts=3)
    patches = [r for r in cluster if r.method.value == "PATCH"]
    assert [r.params.get("dryRun") for r in patches] == ["All", None]
    assert patches[0].data == patches[1].data
    assert patches[0].headers["Content-Type"].startswith("application/merge-patch+json")


@pytest.mark.asyncio
async def test_dry_run_stores_nothing(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """In dry-run only the server-side dry run is sent and the Deployment stays unchanged."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    before = cluster.current(DEPLOYMENTS, "prod", NAME)
    change = await workload.set_env(
        env="RATE_LIMIT_MODE", value="queue", dry_run=True, conflict_attempts=3
    )
    assert not change.changed
    assert cluster.current(DEPLOYMENTS, "prod", NAME) == before
    assert cluster.writes("deployments") == []


@pytest.mark.asyncio
async def test_removing_a_variable(cluster: ClusterEmulator, workload: IntegrationWorkload) -> None:
    """A value of None removes the variable and keeps the others."""
    env = [{"name": "LOG_LEVEL", "value": "info"}, {"name": "POSTHOG_FALLBACK", "value": "true"}]
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment(env=env))
    await workload.set_env(env="POSTHOG_FALLBACK", value=None, dry_run=False, conflict_attempts=3)
    assert containers(cluster)[1]["env"] == [{"name": "LOG_LEVEL", "value": "info"}]


@pytest.mark.asyncio
async def test_conflict_is_reread_and_retried(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """A 409 makes the adapter read the Deployment again and write on the fresh version."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("patch", "deployments", 409, times=1)
    change = await workload.set_env(
        env="RATE_LIMIT_MODE", value="queue", dry_run=False, conflict_attempts=3
    )
    assert change.changed
    reads = [r for r in cluster if r.method.value == "GET"]
    assert len(reads) == 2
    assert containers(cluster)[1]["env"][-1] == {"name": "RATE_LIMIT_MODE", "value": "queue"}


@pytest.mark.asyncio
async def test_stale_resource_version_is_a_conflict(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """A change made by someone else between our read and write is kept, not overwritten."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    edited = cluster.current(DEPLOYMENTS, "prod", NAME)
    edited["spec"]["template"]["spec"]["containers"][1]["image"] = "integration:2"
    # Our first patch is held up in flight while someone else edits the Deployment.
    cluster.fail("patch", "deployments", None, times=1, delay=0.2)

    async def someone_else() -> None:
        while not any(r.method.value == "PATCH" for r in cluster):
            await asyncio.sleep(0.01)
        cluster.put_object(DEPLOYMENTS, "prod", NAME, edited)

    task = asyncio.create_task(someone_else())
    change = await workload.set_env(
        env="RATE_LIMIT_MODE", value="queue", dry_run=False, conflict_attempts=3
    )
    await task
    assert change.changed
    assert len([r for r in cluster if r.method.value == "PATCH"]) == 3  # 409, dry run, real
    app = containers(cluster)[1]
    assert app["image"] == "integration:2"
    assert app["env"][-1] == {"name": "RATE_LIMIT_MODE", "value": "queue"}


@pytest.mark.asyncio
async def test_forbidden_names_the_permission(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """A 403 is not retried and says which verb on which resource in which namespace."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("patch", "deployments", 403, times=5)
    with pytest.raises(KubeForbidden) as caught:
        await workload.set_env(
            env="RATE_LIMIT_MODE", value="queue", dry_run=False, conflict_attempts=3
        )
    assert caught.value.operation == f"patch deployments.apps/{NAME} in namespace prod"
    assert len([r for r in cluster if r.method.value == "PATCH"]) == 1


@pytest.mark.asyncio
async def test_server_errors_are_retried(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """Two 503s and then success: the read succeeds on the third attempt."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("get", "deployments", 503, times=2)
    state = await workload.deployment()
    assert state.name == NAME
    assert len([r for r in cluster if r.method.value == "GET"]) == 3


@pytest.mark.asyncio
async def test_server_errors_give_up_after_the_attempts(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """Persistent 500s end in KubeUnavailable after the configured attempts."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("get", "deployments", 500, times=10)
    with pytest.raises(KubeUnavailable, match="gave up after 3 attempts"):
        await workload.deployment()
    assert len([r for r in cluster if r.method.value == "GET"]) == 3


@pytest.mark.asyncio
async def test_timeouts_are_retried(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """A request slower than the request timeout is retried and the next one succeeds."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("get", "deployments", None, times=1, delay=1.0)
    state = await workload.deployment()
    assert state.name == NAME


@pytest.mark.asyncio
async def test_restart_stamps_the_pod_template(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """A rollout restart sets kubectl's restartedAt annotation on the pod template."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    generation = await workload.restart(restarted_at="2026-02-02T00:00:00Z", dry_run=False)
    assert generation == 2
    annotations = cluster.current(DEPLOYMENTS, "prod", NAME)["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations == {"kubectl.kubernetes.io/restartedAt": "2026-02-02T00:00:00Z"}


@pytest.mark.asyncio
async def test_paused_and_mid_rollout_are_seen(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """The state reports a paused Deployment and an unfinished rollout."""
    cluster.rollouts_finish = False
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment(paused=True))
    state = await workload.deployment()
    assert state.paused
    assert state.rollout_problem == "generation 1 not yet observed (observed 0)"


@pytest.mark.asyncio
async def test_wait_for_rollout_times_out(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """A rollout that never finishes ends the wait with False at the timeout."""
    cluster.rollouts_finish = False
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    finished, state = await workload.wait_for_rollout(timeout_seconds=0.2, poll_seconds=0.05)
    assert not finished
    assert state.rollout_in_progress


@pytest.mark.asyncio
async def test_pods_by_label_selector(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """Only pods matching the selector in the namespace are reported, with their health."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment(replicas=2))
    cluster.put_object(PODS, "prod", "a", pod("a", started="2026-01-01T10:00:00Z"))
    cluster.put_object(PODS, "prod", "b", pod("b", started="2026-01-01T09:00:00Z", ready=False))
    cluster.put_object(PODS, "prod", "other", pod("other", started="2026-01-01T08:00:00Z", app="x"))
    cluster.put_object(PODS, "staging", "c", pod("c", started="2026-01-01T07:00:00Z"))
    report = await workload.integration_pods()
    assert sorted(p.name for p in report.pods) == ["a", "b"]
    assert report.oldest_start == datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert report.problems == ["b not ready (Running)"]


@pytest.mark.asyncio
async def test_api_key_changed_after_pods_started(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """The key's change time comes from managedFields and is compared with the oldest pod."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.put_object(PODS, "prod", "a", pod("a", started="2026-01-01T10:00:00Z"))
    cluster.put_object(
        SECRETS,
        "prod",
        "posthog-secrets",
        secret("posthog-secrets", {"api-key": "c2VjcmV0"}, managed_at="2026-01-01T11:00:00Z"),
    )
    report = await workload.api_key()
    assert report.exists
    assert report.non_empty
    assert report.changed_at == datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert report.rotated_since_pods_started


@pytest.mark.asyncio
async def test_api_key_missing_or_empty(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """A missing Secret and an empty key are told apart, and neither counts as rotated."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    missing = await workload.api_key()
    assert (missing.exists, missing.non_empty) == (False, False)
    cluster.put_object(
        SECRETS, "prod", "posthog-secrets", secret("posthog-secrets", {"api-key": ""})
    )
    empty = await workload.api_key()
    assert (empty.exists, empty.non_empty, empty.rotated_since_pods_started) == (True, False, False)


@pytest.mark.asyncio
async def test_copy_api_key_moves_the_value_and_stamps_it(
    cluster: ClusterEmulator, rotating: IntegrationWorkload
) -> None:
    """The source key is copied into the live Secret, annotated with the change time."""
    at = datetime(2026, 3, 1, tzinfo=UTC)
    assert await rotating.copy_api_key(dry_run=False, now=at, conflict_attempts=3) == "copied"
    live = cluster.current(SECRETS, "prod", "posthog-secrets")
    assert live["data"] == {"api-key": "bmV3"}
    assert live["metadata"]["annotations"] == {UPDATED_AT: "2026-03-01T00:00:00Z"}
    assert await rotating.api_key_matches_source()
    again = await rotating.copy_api_key(dry_run=False, now=at, conflict_attempts=3)
    assert again == "already_equal"


@pytest.mark.asyncio
async def test_event_is_written_on_the_deployment(
    cluster: ClusterEmulator, workload: IntegrationWorkload
) -> None:
    """A decision becomes a core/v1 Event whose involved object is the Deployment."""
    await workload.record_event(
        reason="RemediationApplied",
        message="set RATE_LIMIT_MODE=queue",
        warning=False,
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    (event,) = events_in(cluster, "prod")
    assert event["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": NAME,
        "namespace": "prod",
    }
    assert (event["reason"], event["type"]) == ("RemediationApplied", "Normal")


@pytest.mark.asyncio
async def test_in_cluster_mode_outside_a_pod_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mode in_cluster outside a pod fails clearly instead of using some local kubeconfig."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeInvalid, match="not running in a pod"):
        await KubeConnection.open(KubernetesSettings(mode="in_cluster"))


@pytest.mark.asyncio
async def test_refused_key_copy_does_not_echo_the_key(
    cluster: ClusterEmulator, rotating: IntegrationWorkload
) -> None:
    """An error answer to the Secret patch is reported without its body."""
    cluster.fail("patch", "secrets", 422)
    with pytest.raises(KubeInvalid) as caught:
        await rotating.copy_api_key(dry_run=False, now=datetime.now(UTC), conflict_attempts=3)
    assert str(caught.value) == "patch secrets/posthog-secrets in namespace prod: answered 422"
    assert caught.value.__cause__ is None
