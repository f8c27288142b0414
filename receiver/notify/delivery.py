"""Delivery to outside systems: one message, one HTTP call, and what its answer means.

Every destination module maps its service's answers onto two errors: :class:`TemporaryFailure`
(429, 5xx, Statuspage's 420, timeouts and network errors: the outbox tries again later,
honouring ``Retry-After``) and :class:`PermanentFailure` (400 and other 4xx: retrying cannot
help, so the message is recorded as failed and counted). Error texts never carry URLs,
headers or request bodies, so no credential can leak through them; response bodies are cut
short, after the :class:`~receiver.redaction.Redactor` replaced any secret a service echoes
back (in any of its encodings: the cut must not leave half a secret behind).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from receiver.redaction import Redactor

__all__ = [
    "Answer",
    "DeliveryError",
    "Message",
    "PermanentFailure",
    "Sender",
    "Sent",
    "TemporaryFailure",
    "http_call",
    "parse_retry_after",
]

MAX_ERROR_BODY = 200


class DeliveryError(Exception):
    """A message could not be delivered this time."""


class TemporaryFailure(DeliveryError):
    """Worth trying again: rate limited, the service failing, or the network."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentFailure(DeliveryError):
    """The service refused the message itself; sending it again would be refused again."""


@dataclass(frozen=True)
class Message:
    """One stored notification, as the outbox hands it to a sender."""

    id: int
    destination: str
    incident_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    created_at: float
    scope: str = ""  # what the destination remembers is kept per scope (the incident's if "")

    @property
    def state_key(self) -> str:
        return self.scope or self.incident_id


@dataclass(frozen=True)
class Sent:
    """A delivered message, and what the destination wants remembered for its scope (an
    empty value forgets a key)."""

    remember: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None  # a reason, when there was nothing to send after all


class Sender(Protocol):
    """Delivers messages of one destination; ``state`` is what it remembered so far."""

    destination: str

    def ready_in(self) -> float:
        """0.0 when a message may be sent now (and counts it against any rate limit),
        otherwise the seconds until one may."""
        ...

    async def send(
        self, session: aiohttp.ClientSession, message: Message, state: Mapping[str, str]
    ) -> Sent: ...


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


@dataclass(frozen=True)
class Answer:
    """A service's answer: its status and its body."""

    status: int
    body: str

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


async def http_call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    service: str,
    json_body: Any,
    headers: Mapping[str, str] | None = None,
    timeout_seconds: float,
    ok: tuple[int, ...],
    temporary: tuple[int, ...] = (429,),
    redactor: Redactor,
) -> Answer:
    """Send one JSON request; raise :class:`DeliveryError` unless the status is in ``ok``.

    5xx and the ``temporary`` statuses are temporary failures; other statuses are permanent.
    An error keeps the start of the answer's body, with every secret ``redactor`` knows
    replaced, in case the service echoes one back.
    """
    try:
        async with session.request(
            method,
            url,
            json=json_body,
            headers=dict(headers or {}),
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            allow_redirects=False,
        ) as response:
            body = await response.text(errors="replace")
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except TimeoutError:
        raise TemporaryFailure(f"{service}: no answer within {timeout_seconds:g}s") from None
    except aiohttp.ClientError as e:
        # The exception text can name the URL (a Slack webhook URL is a secret): type only.
        raise TemporaryFailure(f"{service}: network error ({type(e).__name__})") from None
    if status in ok:
        return Answer(status, body)
    short = redactor.text(" ".join(body.split()))[:MAX_ERROR_BODY]
    text = f"{service} answered {status}: {short}" if short else f"{service} answered {status}"
    if status >= 500 or status in temporary:
        raise TemporaryFailure(text, retry_after=retry_after)
    raise PermanentFailure(text)
