"""Kubernetes API failures in our own terms: what to do about them, not which library raised.

- :class:`KubeConflict` (409): someone else changed the object; re-read and try again.
- :class:`KubeForbidden` (401/403): a missing RBAC permission; escalate, naming it.
- :class:`KubeNotFound` (404).
- :class:`KubeInvalid` (400/422): our request is wrong; do not retry.
- :class:`KubeUnavailable` (429, 5xx, timeouts, connection errors): transient; retry, then escalate.

Error bodies are cut short so a large or sensitive response never lands whole in a log line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "KubeConflict",
    "KubeError",
    "KubeForbidden",
    "KubeInvalid",
    "KubeNotFound",
    "KubeUnavailable",
    "translated",
]

T = TypeVar("T")
BODY_LIMIT = 300


class KubeError(Exception):
    """Any failure of a Kubernetes API call. ``operation`` says what we were doing."""

    def __init__(self, message: str, *, operation: str, status: int | None = None) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation
        self.status = status


class KubeConflict(KubeError):
    """409: the object changed since it was read."""


class KubeForbidden(KubeError):
    """401/403: this service account lacks a permission."""


class KubeNotFound(KubeError):
    """404: the object does not exist."""


class KubeInvalid(KubeError):
    """400/422: the request itself is wrong; retrying will not help."""


class KubeUnavailable(KubeError):
    """429, 5xx, timeout or connection failure: transient."""


def _from_api_exception(e: ApiException, operation: str) -> KubeError:
    status = int(e.status or 0)
    detail = f"{status} {e.reason or ''}".strip()
    body = e.body or ""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    message = f"{detail}: {str(body)[:BODY_LIMIT]}" if body else detail
    cls: type[KubeError]
    if status == 409:
        cls = KubeConflict
    elif status in (401, 403):
        cls = KubeForbidden
    elif status == 404:
        cls = KubeNotFound
    elif status in (400, 422):
        cls = KubeInvalid
    else:
        cls = KubeUnavailable
    return cls(message, operation=operation, status=status)


async def translated(operation: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run one API call and raise our own error hierarchy instead of the library's."""
    try:
        return await call()
    except ApiException as e:
        raise _from_api_exception(e, operation) from e
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise KubeUnavailable(
            f"cannot reach the API server: {type(e).__name__}: {e}", operation=operation
        ) from e
