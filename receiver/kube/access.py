"""Ask the API server what this service account may do: ``kubectl auth can-i``, as an API call.

A ``SelfSubjectAccessReview`` answers for the credentials that send it, without touching the
object named, so the drill can check every permission the runbook steps need, including the
ones whose real use would change something.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes_asyncio import client

from receiver.kube.calls import RetryPolicy, call

__all__ = ["Permission", "Verdict", "can_i"]


@dataclass(frozen=True)
class Permission:
    """One RBAC permission: a verb on a resource (maybe one object, maybe a subresource)."""

    verb: str
    resource: str
    namespace: str
    group: str = ""
    name: str | None = None
    subresource: str | None = None

    def __str__(self) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        if self.subresource:
            resource = f"{resource}/{self.subresource}"
        what = f"{resource}/{self.name}" if self.name else resource
        return f"{self.verb} {what} in namespace {self.namespace}"


@dataclass(frozen=True)
class Verdict:
    """The API server's answer for one permission."""

    permission: Permission
    allowed: bool
    reason: str = ""


async def can_i(api: client.ApiClient, permission: Permission, *, policy: RetryPolicy) -> Verdict:
    """Whether our credentials hold ``permission`` (one ``SelfSubjectAccessReview``)."""
    p = permission
    review = client.V1SelfSubjectAccessReview(
        api_version="authorization.k8s.io/v1",
        kind="SelfSubjectAccessReview",
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=p.verb,
                group=p.group,
                resource=p.resource,
                subresource=p.subresource,
                name=p.name,
                namespace=p.namespace,
            )
        ),
    )
    authorization = client.AuthorizationV1Api(api)
    answer = await call(
        "create selfsubjectaccessreviews.authorization.k8s.io",
        lambda: authorization.create_self_subject_access_review(
            review, _request_timeout=policy.request_timeout_seconds
        ),
        policy=policy,
    )
    status = answer.status
    allowed = bool(status.allowed) if status is not None else False
    reason = str((status.reason if status is not None else None) or "")[:300]
    return Verdict(p, allowed, reason)
