"""Fetching one small JSON document over HTTP, with every way it can fail named.

The status page and our health endpoint are read the same way: one GET with a whole-request
timeout and a size limit, and a failure reported as data (a short reason), never raised, since
the decision tree has to go on and say what it could not read. URLs are shown without their
query string or credentials, which is where tokens hide.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

__all__ = ["Fetched", "fetch_json", "shown_url"]

REASON_CHARS = 200


def shown_url(url: str) -> str:
    """``url`` as it may appear in evidence and logs: no user info, query or fragment."""
    try:
        parsed = URL(url)
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "(invalid URL)"


@dataclass(frozen=True)
class Fetched:
    """What one GET gave: a parsed body, or the reason there is none.

    ``failure`` is one of ``unreachable``, ``timeout``, ``http_status``, ``too_large`` or
    ``malformed``; ``http_status`` is set whenever an answer arrived.
    """

    body: Any = None
    http_status: int | None = None
    failure: str | None = None
    reason: str | None = None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the body: enough to tell that it is too large."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def fetch_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout_seconds: float,
    max_body_bytes: int = 1_048_576,
) -> Fetched:
    """GET ``url`` and parse JSON; every failure comes back as a :class:`Fetched` reason."""
    try:
        async with asyncio.timeout(timeout_seconds):
            async with session.get(
                url, headers={"Accept": "application/json"}, allow_redirects=True
            ) as resp:
                status = resp.status
                body = await _read_limited(resp, max_body_bytes + 1)
    except TimeoutError:
        return Fetched(failure="timeout", reason=f"no answer within {timeout_seconds:g}s")
    except aiohttp.InvalidURL:
        return Fetched(failure="unreachable", reason=f"invalid URL {shown_url(url)}")
    except aiohttp.ClientError as e:
        # aiohttp's messages name the host and the OS error; should one quote the whole URL,
        # it is replaced by the shown form, without credentials or query.
        text = f"{type(e).__name__}: {e}".replace(url, shown_url(url))
        return Fetched(failure="unreachable", reason=_short(text))
    except OSError as e:
        return Fetched(failure="unreachable", reason=_short(f"{type(e).__name__}: {e.strerror}"))
    if len(body) > max_body_bytes:
        return Fetched(
            http_status=status,
            failure="too_large",
            reason=f"answer larger than {max_body_bytes} bytes",
        )
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        parsed = None
        bad_json: str | None = _short(f"not JSON: {e}")
    else:
        bad_json = None
    if not 200 <= status < 300:
        return Fetched(
            body=parsed, http_status=status, failure="http_status", reason=f"HTTP {status}"
        )
    if bad_json is not None:
        return Fetched(http_status=status, failure="malformed", reason=bad_json)
    return Fetched(body=parsed, http_status=status)
