"""Slack interactivity: the Approve/Deny buttons of an approval message come back here.

``POST /slack/interactions`` is called by Slack, not by a browser, so it is authenticated by
Slack's request signature instead of a sign-in: ``X-Slack-Signature`` is ``v0=`` and the
HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{raw body}`` under the app's signing secret
(``notify.slack.signing_secret``). A request whose timestamp is more than five minutes away
from now is refused like a forged one (401): a captured request cannot be replayed later.

The decision goes through the same path as the page's (the responder, then the remediator's
conditional update), so a click in Slack and one on the page apply the action at most once.
Slack wants an answer within three seconds: the answer is immediate, and the message is
updated with the outcome through the interaction's ``response_url``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import structlog
from aiohttp import web

from receiver.keys import SETTINGS
from receiver.store import StoreUnavailable
from receiver.store.approvals import Approval
from receiver.web import decisions

__all__ = ["REPLAY_WINDOW_SECONDS", "interactions", "setup", "signature", "signature_valid"]

logger = structlog.get_logger(__name__)

REPLAY_WINDOW_SECONDS = 300
_UPDATES: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("slack_message_updates")


def setup(app: web.Application) -> None:
    """Where message updates under way are kept; cancelled when the application stops."""
    updates: set[asyncio.Task[None]] = set()
    app[_UPDATES] = updates

    async def stop(app: web.Application) -> None:
        running = list(updates)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    app.on_cleanup.append(stop)


def signature(secret: bytes, *, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature of a request."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def signature_valid(
    secret: bytes, *, timestamp: str | None, body: bytes, given: str | None, now: float
) -> bool:
    """Whether the request is Slack's, signed within the replay window (constant time)."""
    if not timestamp or not given or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > REPLAY_WINDOW_SECONDS:
        return False
    return hmac.compare_digest(signature(secret, timestamp=timestamp, body=body), given)


def _refused() -> web.Response:
    return web.Response(status=401, text="invalid request signature\n")


async def interactions(request: web.Request) -> web.Response:
    """A click on an Approve/Deny button (``block_actions``): decided once, then the message
    says who decided what."""
    slack = request.app[SETTINGS].notify.slack
    if slack is None or slack.signing_secret is None:
        raise web.HTTPNotFound(text="Slack interactivity is not configured.\n")
    secret = slack.signing_secret.secret.get_secret_value().encode("utf-8")
    body = await request.read()
    if not signature_valid(
        secret,
        timestamp=request.headers.get("X-Slack-Request-Timestamp"),
        body=body,
        given=request.headers.get("X-Slack-Signature"),
        now=time.time(),
    ):
        return _refused()
    payload = _payload(body)
    if payload is None:
        raise web.HTTPBadRequest(text="expected a block_actions payload\n")
    decision, approval_id, user, response_url = payload
    try:
        decided = await decisions.decide(
            request.app,
            approval_id,
            decision=decision,
            by=f"Slack user {user}",
            via="Slack",
            origin="slack",
        )
    except StoreUnavailable:
        raise web.HTTPServiceUnavailable(text="The store is unavailable; try again.\n") from None
    if response_url is not None and _slacks(response_url, api_base=slack.api_base):
        _update_later(request.app, response_url, _outcome_text(decided, decision, user))
    return web.Response(text="")


def _payload(body: bytes) -> tuple[Any, str, str, str | None] | None:
    """(decision, approval id, Slack user id, response_url) of a button click, or ``None``."""
    try:
        form = parse_qs(body.decode("utf-8"), max_num_fields=10)
        data = json.loads(form.get("payload", [""])[0])
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("type") != "block_actions":
        return None
    actions = data.get("actions")
    user = (data.get("user") or {}).get("id") if isinstance(data.get("user"), dict) else None
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        return None
    action_id, value = actions[0].get("action_id"), actions[0].get("value")
    if action_id not in ("approve", "deny") or not isinstance(value, str) or not value:
        return None
    if not isinstance(user, str) or not user:
        return None
    response_url = data.get("response_url")
    decision = "approved" if action_id == "approve" else "denied"
    return decision, value[:64], user[:64], response_url if isinstance(response_url, str) else None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _slacks(url: str, *, api_base: str) -> bool:
    """Whether ``url`` is Slack's (hooks.slack.com, or the configured API's host): the
    receiver posts only to Slack, whatever a payload names."""
    return _origin(url) in (("https", "hooks.slack.com"), _origin(api_base))


def _outcome_text(decided: Approval | None, decision: str, user: str) -> str:
    if decided is None:
        return "This approval was already decided (or has expired); see the incident page."
    verb = "Approved" if decision == "approved" else "Denied"
    # Slack's own mention syntax for the user id Slack sent (an id, not free text).
    return f"{verb} by <@{user}>: {decided.action} on {decided.target}."


def _update_later(app: web.Application, url: str, text: str) -> None:
    """Replace the message's buttons with the outcome, off the request (Slack's 3 seconds)."""
    updates = app[_UPDATES]

    async def update() -> None:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(url, json={"replace_original": True, "text": text}) as response,
            ):
                if response.status >= 300:
                    logger.warning("slack message update refused", status=response.status)
        except (aiohttp.ClientError, TimeoutError) as e:
            logger.warning("slack message update failed", error=type(e).__name__)

    task = asyncio.create_task(update(), name="slack-message-update")
    updates.add(task)
    task.add_done_callback(updates.discard)
