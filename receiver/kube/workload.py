"""The integration workload as one object: the Deployment, its pods and its API-key Secret.

Why one facade: every name it touches (namespace, Deployment, container, Secrets, pod
selector) comes from configuration once, here, so no caller can aim an operation anywhere
else. It answers :class:`receiver.cluster.ClusterView` for triage and offers the few mutating
operations remediation needs.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from receiver.cluster import ApiKeyReport, ClusterView, PodsReport
from receiver.config import RemediationTarget
from receiver.kube import deployments, events, pods, secrets
from receiver.kube.client import KubeConnection
from receiver.kube.deployments import DeploymentState, EnvChange, EnvValue
from receiver.kube.secrets import CopyResult

__all__ = ["IntegrationWorkload"]


class IntegrationWorkload:
    """The configured Deployment, pods and Secrets, through the process's connection (which
    its owner closes)."""

    def __init__(self, connection: KubeConnection, *, target: RemediationTarget) -> None:
        self._api = connection.api
        self._policy = connection.policy
        self.target = target

    @property
    def where(self) -> str:
        t = self.target
        return f"{t.namespace}/deployment/{t.deployment}"

    # -- reading ----------------------------------------------------------------------------

    async def deployment(self) -> DeploymentState:
        return await deployments.deployment_state(
            self._api,
            namespace=self.target.namespace,
            name=self.target.deployment,
            policy=self._policy,
        )

    async def integration_pods(self) -> PodsReport:
        dep = await self.deployment()
        return await pods.list_pods(
            self._api,
            namespace=self.target.namespace,
            selector=self.target.pod_selector,
            desired_replicas=dep.replicas,
            policy=self._policy,
        )

    async def api_key(self) -> ApiKeyReport:
        state = await secrets.secret_state(
            self._api,
            namespace=self.target.namespace,
            name=self.target.api_key_secret,
            key=self.target.api_key_key,
            policy=self._policy,
        )
        running = await self.integration_pods()
        return ApiKeyReport(
            exists=state.exists,
            non_empty=state.non_empty,
            changed_at=state.changed_at,
            pods_started_at=running.oldest_start,
        )

    async def api_key_matches_source(self) -> bool:
        if self.target.source_secret is None:
            return False
        return await secrets.key_matches_source(
            self._api,
            namespace=self.target.namespace,
            source=self.target.source_secret,
            source_key=self.target.source_key,
            target=self.target.api_key_secret,
            target_key=self.target.api_key_key,
            policy=self._policy,
        )

    # -- changing ---------------------------------------------------------------------------

    async def set_env(
        self,
        *,
        env: str,
        value: str | None,
        dry_run: bool,
        conflict_attempts: int,
        expected: EnvValue | None = None,
    ) -> EnvChange:
        return await deployments.set_env(
            self._api,
            namespace=self.target.namespace,
            name=self.target.deployment,
            container=self.target.container,
            env=env,
            value=value,
            dry_run=dry_run,
            policy=self._policy,
            conflict_attempts=conflict_attempts,
            expected=expected,
        )

    async def restart(self, *, restarted_at: str, dry_run: bool) -> int | None:
        return await deployments.restart(
            self._api,
            namespace=self.target.namespace,
            name=self.target.deployment,
            restarted_at=restarted_at,
            dry_run=dry_run,
            policy=self._policy,
        )

    async def wait_for_rollout(
        self, *, timeout_seconds: float, poll_seconds: float
    ) -> tuple[bool, DeploymentState]:
        return await deployments.wait_for_rollout(
            self._api,
            namespace=self.target.namespace,
            name=self.target.deployment,
            timeout_seconds=timeout_seconds,
            poll_seconds=poll_seconds,
            policy=self._policy,
        )

    async def copy_api_key(
        self, *, dry_run: bool, now: datetime, conflict_attempts: int
    ) -> CopyResult:
        assert self.target.source_secret is not None  # checked when the config is loaded
        return await secrets.copy_key(
            self._api,
            namespace=self.target.namespace,
            source=self.target.source_secret,
            source_key=self.target.source_key,
            target=self.target.api_key_secret,
            target_key=self.target.api_key_key,
            dry_run=dry_run,
            policy=self._policy,
            now=now,
            conflict_attempts=conflict_attempts,
        )

    async def record_event(
        self,
        *,
        reason: str,
        message: str,
        warning: bool,
        now: datetime,
        deployment_uid: str | None = None,
    ) -> None:
        await events.record_event(
            self._api,
            namespace=self.target.namespace,
            deployment=self.target.deployment,
            deployment_uid=deployment_uid,
            reason=reason,
            message=message,
            warning=warning,
            now=now,
            policy=self._policy,
        )


if TYPE_CHECKING:  # the workload answers triage's questions about the cluster

    def _is_a_cluster_view(workload: IntegrationWorkload) -> ClusterView:
        return workload
