"""The PostHog API-key Secret: is the key there, and when did it last change?

When the key changed, as far as the API tells: Secrets carry no "data changed at" field. We
take, in order,
1. our own annotation ``posthog-receiver/api-key-updated-at`` (set when we copy a key in, and
   settable by whatever rotates the key),
2. the latest ``metadata.managedFields[].time`` (the server stamps it on every create, update
   or apply by any field manager; labels-only edits also move it, so it can be late, never
   early),
3. ``metadata.creationTimestamp``.

Secret values never leave this module: callers get booleans and times. Copying a key moves
the base64 string from one Secret to the other without decoding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes_asyncio import client

from receiver.kube.calls import RetryPolicy, call, operation, patch_options
from receiver.kube.errors import KubeConflict, KubeError, KubeNotFound
from receiver.wording import quoted

__all__ = [
    "UPDATED_AT",
    "CopyResult",
    "SecretState",
    "copy_key",
    "key_matches_source",
    "secret_state",
]

UPDATED_AT = "posthog-receiver/api-key-updated-at"
RESOURCE = "secrets"


CopyResult = Literal["copied", "already_equal", "dry_run"]


@dataclass(frozen=True)
class SecretState:
    exists: bool
    non_empty: bool
    changed_at: datetime | None


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _changed_at(meta: Any) -> datetime | None:
    annotated = _parse_time((meta.annotations or {}).get(UPDATED_AT))
    if annotated is not None:
        return annotated
    times = [t for f in meta.managed_fields or [] if (t := _parse_time(f.time)) is not None]
    if times:
        return max(times)
    return _parse_time(meta.creation_timestamp)


async def _read(
    api: client.ApiClient, *, namespace: str, name: str, policy: RetryPolicy
) -> Any | None:
    core = client.CoreV1Api(api)
    try:
        return await call(
            operation("get", RESOURCE, namespace=namespace, name=name),
            lambda: core.read_namespaced_secret(
                name, namespace, _request_timeout=policy.request_timeout_seconds
            ),
            policy=policy,
        )
    except KubeNotFound:
        return None


async def secret_state(
    api: client.ApiClient, *, namespace: str, name: str, key: str, policy: RetryPolicy
) -> SecretState:
    """Whether the Secret exists, whether ``key`` holds a non-empty value, and when it changed."""
    secret = await _read(api, namespace=namespace, name=name, policy=policy)
    if secret is None:
        return SecretState(exists=False, non_empty=False, changed_at=None)
    value = (secret.data or {}).get(key) or ""
    return SecretState(
        exists=True, non_empty=bool(value.strip()), changed_at=_changed_at(secret.metadata)
    )


async def copy_key(
    api: client.ApiClient,
    *,
    namespace: str,
    source: str,
    source_key: str,
    target: str,
    target_key: str,
    dry_run: bool,
    policy: RetryPolicy,
    now: datetime,
    conflict_attempts: int = 5,
) -> CopyResult:
    """Copy ``source[source_key]`` into ``target[target_key]``.

    Raises :class:`KubeNotFound` when either Secret or the source key is missing.
    """
    core = client.CoreV1Api(api)
    op = operation("patch", RESOURCE, namespace=namespace, name=target)
    src = await _read(api, namespace=namespace, name=source, policy=policy)
    value = (src.data or {}).get(source_key) if src is not None else None
    if not value:
        raise KubeNotFound(
            f"source Secret {quoted(source)} has no non-empty key {quoted(source_key)}",
            operation=op,
        )
    for _ in range(conflict_attempts):
        live = await _read(api, namespace=namespace, name=target, policy=policy)
        if live is None:
            raise KubeNotFound(f"Secret {quoted(target)} does not exist", operation=op)
        if (live.data or {}).get(target_key) == value:
            return "already_equal"
        body = {
            "metadata": {
                "resourceVersion": live.metadata.resource_version,
                "annotations": {UPDATED_AT: now.isoformat().replace("+00:00", "Z")},
            },
            "data": {target_key: value},
        }
        try:
            for dry in (True, False) if not dry_run else (True,):
                await call(
                    op,
                    lambda dry=dry, body=body: core.patch_namespaced_secret(  # type: ignore[misc]
                        target, namespace, body, **patch_options(dry_run=dry, policy=policy)
                    ),
                    policy=policy,
                    changes=not dry,
                )
        except KubeConflict:
            continue
        except KubeError as e:
            # The request carried the key: keep the server's answer body (which might echo
            # it) out of messages, logs and tracebacks.
            raise type(e)(
                f"answered {e.status or 'no status'}", operation=op, status=e.status
            ) from None
        return "dry_run" if dry_run else "copied"
    raise KubeConflict(f"the Secret changed under us {conflict_attempts} times", operation=op)


async def key_matches_source(
    api: client.ApiClient,
    *,
    namespace: str,
    source: str,
    source_key: str,
    target: str,
    target_key: str,
    policy: RetryPolicy,
) -> bool:
    """Whether the live key equals the source key (to reconcile an interrupted copy)."""
    src = await _read(api, namespace=namespace, name=source, policy=policy)
    live = await _read(api, namespace=namespace, name=target, policy=policy)
    if src is None or live is None:
        return False
    value = (src.data or {}).get(source_key)
    return bool(value) and (live.data or {}).get(target_key) == value
