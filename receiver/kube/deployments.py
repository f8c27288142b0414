"""The integration Deployment: read its state, set or remove one env var, restart, wait.

Why read-modify-write of the whole containers list: a strategic-merge patch of one env entry
depends on merge keys a JSON merge patch does not have, and some API emulators replace lists
anyway. We read the Deployment, change the one variable in the one named container, and send
the whole ``containers`` list back as a JSON merge patch carrying the ``resourceVersion`` we
read. The API server refuses it with 409 if anyone changed the Deployment in between; we then
re-read and try again, a bounded number of times.

Every change is first sent with ``dryRun=All`` (admission, validation and RBAC run, nothing is
stored); only if that passes, and the caller is not in dry-run, is it applied.

A change counts as made only when the API server accepted our write: its answer shows the new
value. A write refused with 409 is not ours even if the value is in place when we re-read
(another writer won the race). One ambiguity remains: a write whose answer never came (a
timeout) may have been stored, and its retry is then refused because the object changed. So
each write also stamps the Deployment's own metadata (not the pod template: no rollout) with a
token new for each call (``CHANGE_MARK``); a re-read showing our token proves the server stored
our write.

"Mid-rollout" follows ``kubectl rollout status``: the controller has not observed the latest
generation, or not every replica runs the latest template, or old replicas are still
terminating, or not every updated replica is available.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client

from receiver.kube.calls import RetryPolicy, call, operation, patch_options
from receiver.kube.errors import KubeConflict, KubeInvalid, KubeNotFound
from receiver.wording import quoted

__all__ = [
    "CHANGE_MARK",
    "RESTARTED_AT",
    "DeploymentState",
    "EnvChange",
    "EnvValue",
    "deployment_state",
    "restart",
    "set_env",
    "wait_for_rollout",
]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# On the Deployment's metadata: the token of the last env change we wrote (see above).
CHANGE_MARK = "posthog-receiver/env-change"
RESOURCE = "deployments.apps"


@dataclass(frozen=True)
class EnvValue:
    """One environment variable of one container, as found."""

    present: bool
    value: str | None = None
    from_reference: bool = False  # valueFrom: a ConfigMap/Secret/field reference

    def describe(self) -> str:
        """The value as people read it: quoted, or what stands in for it."""
        if not self.present:
            return "unset"
        if self.from_reference:
            return "set from a reference"
        return quoted(self.value or "")


ABSENT = EnvValue(present=False)


@dataclass(frozen=True)
class DeploymentState:
    """What remediation needs to know about the Deployment, without Kubernetes types."""

    namespace: str
    name: str
    uid: str | None
    resource_version: str | None
    generation: int
    observed_generation: int
    replicas: int
    status_replicas: int
    updated_replicas: int
    available_replicas: int
    paused: bool
    restarted_at: str | None
    env: Mapping[str, Mapping[str, EnvValue]] = field(default_factory=dict)
    change_mark: str | None = None  # CHANGE_MARK: the token of the last change we wrote

    @property
    def containers(self) -> list[str]:
        return list(self.env)

    def env_value(self, container: str, name: str) -> EnvValue:
        return self.env.get(container, {}).get(name, ABSENT)

    @property
    def rollout_in_progress(self) -> bool:
        return bool(self.rollout_problem)

    @property
    def rollout_problem(self) -> str | None:
        """Why the rollout is not finished, or ``None`` when it is."""
        if self.observed_generation < self.generation:
            return (
                f"generation {self.generation} not yet observed "
                f"(observed {self.observed_generation})"
            )
        if self.updated_replicas < self.replicas:
            return f"{self.updated_replicas} of {self.replicas} replicas updated"
        if self.status_replicas > self.updated_replicas:
            return f"{self.status_replicas - self.updated_replicas} old replicas still terminating"
        if self.available_replicas < self.updated_replicas:
            return (
                f"{self.available_replicas} of {self.updated_replicas} updated replicas available"
            )
        return None


@dataclass(frozen=True)
class EnvChange:
    """The result of setting (or removing) one variable.

    ``changed``: the API server accepted our write (never true for a dry run, nor when the
    value was found in place, written by someone else).
    """

    before: EnvValue
    after: EnvValue
    changed: bool
    generation: int | None  # the Deployment's generation after a real change


def _state(dep: Any) -> DeploymentState:
    meta, spec, status = dep.metadata, dep.spec, dep.status
    env: dict[str, dict[str, EnvValue]] = {}
    for c in spec.template.spec.containers or []:
        env[c.name] = {
            e.name: EnvValue(True, e.value, from_reference=e.value_from is not None)
            for e in c.env or []
        }
    annotations = (spec.template.metadata.annotations if spec.template.metadata else None) or {}
    return DeploymentState(
        namespace=meta.namespace,
        name=meta.name,
        uid=meta.uid,
        resource_version=meta.resource_version,
        generation=int(meta.generation or 0),
        observed_generation=int((status.observed_generation if status else None) or 0),
        replicas=int(spec.replicas if spec.replicas is not None else 1),
        status_replicas=int((status.replicas if status else None) or 0),
        updated_replicas=int((status.updated_replicas if status else None) or 0),
        available_replicas=int((status.available_replicas if status else None) or 0),
        paused=bool(spec.paused),
        restarted_at=annotations.get(RESTARTED_AT),
        env=env,
        change_mark=(meta.annotations or {}).get(CHANGE_MARK),
    )


async def _read(api: client.ApiClient, *, namespace: str, name: str, policy: RetryPolicy) -> Any:
    apps = client.AppsV1Api(api)
    return await call(
        operation("get", RESOURCE, namespace=namespace, name=name),
        lambda: apps.read_namespaced_deployment(
            name, namespace, _request_timeout=policy.request_timeout_seconds
        ),
        policy=policy,
    )


async def deployment_state(
    api: client.ApiClient, *, namespace: str, name: str, policy: RetryPolicy
) -> DeploymentState:
    """Read the Deployment."""
    return _state(await _read(api, namespace=namespace, name=name, policy=policy))


async def _patch(
    api: client.ApiClient,
    *,
    namespace: str,
    name: str,
    body: dict[str, Any],
    dry_run: bool,
    policy: RetryPolicy,
) -> Any:
    apps = client.AppsV1Api(api)
    return await call(
        operation("patch", RESOURCE, namespace=namespace, name=name),
        lambda: apps.patch_namespaced_deployment(
            name, namespace, body, **patch_options(dry_run=dry_run, policy=policy)
        ),
        policy=policy,
        changes=not dry_run,
    )


async def _dry_run_then_apply(
    api: client.ApiClient,
    *,
    namespace: str,
    name: str,
    body: dict[str, Any],
    dry_run: bool,
    policy: RetryPolicy,
) -> Any:
    """Server-side dry run first; the real patch only if that passed and we are not dry."""
    await _patch(api, namespace=namespace, name=name, body=body, dry_run=True, policy=policy)
    if dry_run:
        return None
    return await _patch(
        api, namespace=namespace, name=name, body=body, dry_run=False, policy=policy
    )


def _new_env(entries: list[dict[str, Any]], env: str, value: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    found = False
    for entry in entries:
        if entry.get("name") == env:
            found = True
            if value is not None:
                out.append({"name": env, "value": value})
        else:
            out.append(entry)
    if not found and value is not None:
        out.append({"name": env, "value": value})
    return out


async def set_env(
    api: client.ApiClient,
    *,
    namespace: str,
    name: str,
    container: str,
    env: str,
    value: str | None,
    dry_run: bool,
    policy: RetryPolicy,
    conflict_attempts: int = 5,
    expected: EnvValue | None = None,
) -> EnvChange:
    """Set ``env`` to ``value`` in ``container`` (remove it when ``value`` is None).

    With ``expected``, change nothing unless the live value is ``expected`` when written
    (a revert must not clobber what someone else set): the result then has ``changed=False``
    and the live value in ``before``. ``changed=False`` also when the value is found in place
    without our write having been accepted (set by someone else, or refused with 409).

    Raises :class:`KubeNotFound` if the container does not exist, :class:`KubeConflict` if
    the Deployment kept changing under us for ``conflict_attempts`` read-modify-writes,
    :class:`KubeInvalid` if the server's answer to the write does not show the change.
    """
    target = EnvValue(True, value) if value is not None else ABSENT
    op = operation("patch", RESOURCE, namespace=namespace, name=name)
    token = uuid.uuid4().hex
    first: EnvValue | None = None
    last_conflict: KubeConflict | None = None
    for _ in range(conflict_attempts):
        dep = await _read(api, namespace=namespace, name=name, policy=policy)
        state = _state(dep)
        if container not in state.env:
            raise KubeNotFound(f"no container {quoted(container)} in the Deployment", operation=op)
        before = state.env_value(container, env)
        first = before if first is None else first
        if before == target and not dry_run and state.change_mark == token:
            # A write of this call whose answer was lost (timeout) was stored after all.
            return EnvChange(first, target, changed=True, generation=state.generation)
        if before == target or (expected is not None and before != expected):
            return EnvChange(before, target, changed=False, generation=None)
        containers: list[dict[str, Any]] = api.sanitize_for_serialization(
            dep.spec.template.spec.containers
        )
        for c in containers:
            if c.get("name") == container:
                c["env"] = _new_env(c.get("env") or [], env, value)
        body = {
            "metadata": {
                "resourceVersion": state.resource_version,
                "annotations": {CHANGE_MARK: token},
            },
            "spec": {"template": {"spec": {"containers": containers}}},
        }
        try:
            result = await _dry_run_then_apply(
                api, namespace=namespace, name=name, body=body, dry_run=dry_run, policy=policy
            )
        except KubeConflict as e:
            last_conflict = e
            continue
        if result is None:
            return EnvChange(before, target, changed=False, generation=None)
        stored = _state(result)
        if stored.env_value(container, env) != target:
            raise KubeInvalid(
                f"the API server answered the write, but its Deployment shows {env}="
                f"{stored.env_value(container, env).describe()}, not {target.describe()}",
                operation=op,
            )
        return EnvChange(before, target, changed=True, generation=stored.generation)
    raise KubeConflict(
        f"the Deployment changed under us {conflict_attempts} times in a row "
        f"(last: {last_conflict})",
        operation=op,
        status=409,
    )


async def restart(
    api: client.ApiClient,
    *,
    namespace: str,
    name: str,
    restarted_at: str,
    dry_run: bool,
    policy: RetryPolicy,
) -> int | None:
    """``kubectl rollout restart``: stamp the pod template; the new generation, or None if dry."""
    body = {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}},
    }
    result = await _dry_run_then_apply(
        api, namespace=namespace, name=name, body=body, dry_run=dry_run, policy=policy
    )
    return int(result.metadata.generation or 0) if result is not None else None


async def wait_for_rollout(
    api: client.ApiClient,
    *,
    namespace: str,
    name: str,
    timeout_seconds: float,
    poll_seconds: float,
    policy: RetryPolicy,
) -> tuple[bool, DeploymentState]:
    """Poll until the rollout finished (``True``) or the timeout passed (``False``)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        state = await deployment_state(api, namespace=namespace, name=name, policy=policy)
        if not state.rollout_in_progress:
            return True, state
        if time.monotonic() >= deadline:
            return False, state
        await asyncio.sleep(min(poll_seconds, max(deadline - time.monotonic(), 0.0)))
