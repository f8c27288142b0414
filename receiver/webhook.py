"""``POST /webhook/alertmanager``: accept a notification only once it is durably stored.

The checks run cheapest first: size (413), credentials (401), media type (415), payload
(400). Alertmanager retries only 5xx, so anything transient on our side (the store cannot
commit) is a 503, and a 200 is sent only after the commit. A resend of the same news is a
200 too, and is not stored or processed again.
"""

from __future__ import annotations

import base64
import hmac

import structlog
from aiohttp import web
from pydantic import ValidationError

from receiver.alertmanager import WebhookPayload
from receiver.config import WebhookSettings
from receiver.incidents import enqueue_webhook
from receiver.keys import METRICS, SETTINGS, STORE, WORKER
from receiver.store import StoreUnavailable

__all__ = ["is_authorized", "payload_error", "receive_alertmanager"]

logger = structlog.get_logger(__name__)


def _same(given: str, expected: str) -> bool:
    # Header bytes that are not UTF-8 arrive as surrogate escapes: compare them as sent.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def is_authorized(header: str | None, settings: WebhookSettings) -> bool:
    """Check an ``Authorization`` header against the configured bearer token or basic auth.

    Comparisons are constant-time; every configured scheme is evaluated so the time taken does
    not depend on which one matched.
    """
    if settings.allow_unauthenticated:
        return True
    if not header:
        return False
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    ok = False
    if settings.bearer_token is not None:
        expected = settings.bearer_token.secret.get_secret_value()
        ok |= scheme == "bearer" and _same(credentials, expected)
    if settings.basic_auth is not None and scheme == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8
            decoded = ""
        user, _, password = decoded.partition(":")
        expected_pw = settings.basic_auth.password.secret.get_secret_value()
        ok |= _same(user, settings.basic_auth.username) & _same(password, expected_pw)
    return ok


def payload_error(err: ValidationError) -> str:
    """A short, safe description of why a payload was refused (no values echoed back)."""
    first = err.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return "malformed JSON"
    loc = ".".join(str(p) for p in first["loc"])
    if loc == "version":
        return "unsupported payload version: this receiver accepts Alertmanager webhook version 4"
    return f"invalid payload: {loc}: {first['msg']}"


def _reject(request: web.Request, status: int, outcome: str, message: str) -> web.Response:
    request.app[METRICS].webhooks.labels(outcome).inc()
    logger.warning("webhook rejected", status=status, outcome=outcome, reason=message)
    headers = {"WWW-Authenticate": 'Bearer realm="posthog-receiver"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


async def receive_alertmanager(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    limit = settings.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _reject(request, 413, "too_large", f"body larger than {limit} bytes")
    if not is_authorized(request.headers.get("Authorization"), settings.webhook):
        return _reject(request, 401, "unauthorized", "missing or wrong credentials")
    if request.content_type != "application/json":
        return _reject(request, 415, "unsupported_media_type", "expected application/json")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _reject(request, 413, "too_large", f"body larger than {limit} bytes")
    try:
        payload = WebhookPayload.model_validate_json(body)
    except ValidationError as e:
        return _reject(request, 400, "bad_request", payload_error(e))

    dedup_key = payload.dedup_key()
    try:
        stored = await request.app[STORE].write(
            lambda conn: enqueue_webhook(
                conn, dedup_key=dedup_key, group_key=payload.group_key, body=body
            )
        )
    except StoreUnavailable as e:
        request.app[METRICS].webhooks.labels("unavailable").inc()
        logger.error("webhook not stored; asking Alertmanager to retry", error=str(e))
        return web.json_response({"error": "temporarily unable to store; retry"}, status=503)

    outcome = "stored" if stored else "duplicate"
    request.app[METRICS].webhooks.labels(outcome).inc()
    if stored:
        request.app[WORKER].wake()
    # Debug, not info: one line per request is the access log, and its cost is a large share
    # of the request's (docs/benchmarks.md). What a stored notification changed is logged at
    # info by the worker ("notification applied"); refusals are warnings.
    logger.debug(
        "webhook accepted",
        outcome=outcome,
        group_key=payload.group_key,
        alerts=len(payload.alerts),
        status=payload.status,
    )
    return web.json_response({"status": outcome, "alerts": len(payload.alerts)})
