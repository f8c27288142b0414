"""One place that runs an API call with our error hierarchy and a bounded retry.

Why here: every module of the adapter needs the same rules. Transient failures (5xx, 429,
timeouts, connection errors) are retried a few times with exponential backoff, then surface as
:class:`~receiver.kube.errors.KubeUnavailable` for the caller to escalate. Other errors are not
retried here: a 409 needs a re-read by the caller, a 403 a person.

A request that changes the cluster (``changes=True``) first calls the policy's ``fence``: with
several replicas, the leader's check that it still leads (``receiver.fencing``), so a replica
that lost the lead writes nothing, whichever module asks.

``operation`` is written as the permission the call needs ("patch deployments.apps/NAME in
namespace NS"), so a 403 names exactly what the service account is missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from receiver.kube.errors import KubeUnavailable, translated

__all__ = ["MERGE_PATCH", "RetryPolicy", "call", "operation", "patch_options"]

MERGE_PATCH = "application/merge-patch+json"

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may take and how often a transient failure is retried."""

    attempts: int = 3
    backoff_seconds: float = 0.5
    request_timeout_seconds: float = 10.0
    # Called right before each request that changes the cluster; raises to stop it.
    fence: Callable[[], object] | None = field(default=None, compare=False)


def operation(verb: str, resource: str, *, namespace: str, name: str | None = None) -> str:
    """The permission a call needs, in RBAC terms: verb, resource, name, namespace."""
    what = f"{resource}/{name}" if name else resource
    return f"{verb} {what} in namespace {namespace}"


def patch_options(*, dry_run: bool, policy: RetryPolicy) -> dict[str, Any]:
    """Keyword arguments of a JSON merge patch, server-side dry run when ``dry_run``."""
    options: dict[str, Any] = {
        "_content_type": MERGE_PATCH,
        "_request_timeout": policy.request_timeout_seconds,
    }
    if dry_run:
        options["dry_run"] = "All"
    return options


async def call(
    op: str, fn: Callable[[], Awaitable[T]], *, policy: RetryPolicy, changes: bool = False
) -> T:
    """Run ``fn`` (one API request), retrying transient failures ``policy.attempts`` times;
    a request that ``changes`` the cluster passes ``policy.fence`` before each attempt."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential(multiplier=policy.backoff_seconds, max=30),
        retry=retry_if_exception_type(KubeUnavailable),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                if changes and policy.fence is not None:
                    policy.fence()
                return await translated(op, fn)
    except KubeUnavailable as e:
        detail = str(e).removeprefix(f"{op}: ")
        raise KubeUnavailable(
            f"{detail} (gave up after {policy.attempts} attempts)", operation=op, status=e.status
        ) from e
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
