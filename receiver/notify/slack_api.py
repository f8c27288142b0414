"""Slack's Web API, through the official ``slack_sdk``: the two calls an incident thread needs.

``chat.postMessage`` opens a thread (a top-level message) or adds to one (``thread_ts``);
``chat.update`` edits a message the bot posted. Only this module imports ``slack_sdk``.

Slack answers most errors with HTTP 200 and ``{"ok": false, "error": "<code>"}``; each code
is mapped onto the outbox's two failures. A rate limit (HTTP 429, ``ratelimited``) and
Slack's own trouble (5xx, ``internal_error``, ``fatal_error``, ``service_unavailable``,
``request_timeout``), timeouts and network errors are temporary, with Slack's
``Retry-After`` honoured; everything else (a bad token, a channel the bot is not in, a
message Slack refuses) is permanent: sending it again would be refused again. The SDK's own
retries are turned off, so that every retry goes through the outbox and its durable
back-off. The bot token never appears in an error: errors name the method and Slack's error
code, and what we know the code means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from receiver.notify.delivery import PermanentFailure, TemporaryFailure, parse_retry_after
from receiver.redaction import Redactor

__all__ = ["MESSAGE_GONE", "Posted", "SlackApiFailure", "SlackWebApi"]

MAX_CODE = 100
# Slack's trouble, not ours: worth trying again.
TEMPORARY_CODES = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
# The thread's top message is no longer there (deleted in Slack): open a new thread.
MESSAGE_GONE = frozenset({"message_not_found", "thread_not_found"})
# What to do about the errors people can fix, in their words.
EXPLAINED = {
    "invalid_auth": "the bot token is not valid: check notify.slack.bot_token",
    "not_authed": "no bot token was sent: check notify.slack.bot_token",
    "token_revoked": "the bot token was revoked: install the Slack app again",
    "token_expired": "the bot token expired: install the Slack app again",
    "account_inactive": "the bot's app was removed from the workspace: install it again",
    "missing_scope": "the Slack app lacks the chat:write scope: add it and reinstall the app",
    "channel_not_found": (
        "no channel with the configured ID is visible to the bot: check notify.slack.channel "
        "(an ID such as C0123ABCDE, not a name) and invite the app to a private channel"
    ),
    "not_in_channel": "the bot is not a member of the channel: invite the app to it",
    "is_archived": "the channel is archived: unarchive it or configure another",
    "restricted_action": "the workspace does not let the bot post in this channel",
    "cant_update_message": "the message to update was not posted by this bot",
    "edit_window_closed": "the workspace no longer allows the message to be edited",
    "msg_too_long": "the message is too long for Slack",
    "no_text": "the message has no text",
    "invalid_blocks": "Slack refused the message's blocks",
}


class SlackApiFailure(PermanentFailure):
    """Slack refused a call for a reason that sending it again will not change; ``code`` is
    Slack's error code."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Posted:
    """Where a message went: its channel and its ``ts`` (its id within the channel)."""

    channel: str
    ts: str


class SlackWebApi:
    """``chat.postMessage`` and ``chat.update`` with one bot token, over one aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token: str,
        base_url: str,
        timeout_seconds: float,
        redactor: Redactor,
    ) -> None:
        self._timeout = timeout_seconds
        self._redactor = redactor
        # retry_handlers=[]: the SDK would retry a lost connection on its own; the outbox
        # retries instead, after a durable back-off.
        self._client = AsyncWebClient(
            token=token,
            base_url=base_url.rstrip("/") + "/",
            session=session,
            timeout=max(1, round(timeout_seconds)),
            retry_handlers=[],
        )

    async def post_message(
        self, *, channel: str, content: Mapping[str, Any], thread_ts: str | None = None
    ) -> Posted:
        """Post ``content`` (text and blocks) to ``channel``, as a reply if ``thread_ts``."""
        body = {**content, "channel": channel}
        if thread_ts is not None:
            body["thread_ts"] = thread_ts
        data = await self._call("chat.postMessage", body)
        ts, where = data.get("ts"), data.get("channel")
        if not isinstance(ts, str) or not ts:
            raise PermanentFailure("Slack chat.postMessage answered without the message's ts")
        return Posted(channel=where if isinstance(where, str) and where else channel, ts=ts)

    async def update(self, *, channel: str, ts: str, content: Mapping[str, Any]) -> None:
        """Replace the text and blocks of the bot's message ``ts`` in ``channel``."""
        await self._call("chat.update", {**content, "channel": channel, "ts": ts})

    async def _call(self, method: str, body: dict[str, Any]) -> Mapping[str, Any]:
        try:
            # The SDK applies its timeout only to sessions it opens itself.
            async with asyncio.timeout(self._timeout):
                response = await self._client.api_call(method, json=body)
        except SlackApiError as e:
            raise self._refused(method, e) from None
        except TimeoutError:
            raise TemporaryFailure(f"Slack {method}: no answer within {self._timeout:g}s") from None
        except (aiohttp.ClientError, SlackClientError) as e:
            # Type only: the text of some errors carries the request.
            raise TemporaryFailure(f"Slack {method}: network error ({type(e).__name__})") from None
        data = response.data
        return data if isinstance(data, dict) else {}

    def _refused(self, method: str, error: SlackApiError) -> Exception:
        response = error.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = getattr(response, "data", None)
        raw_code = data.get("error") if isinstance(data, dict) else None
        code = self._redactor.text(str(raw_code))[:MAX_CODE] if raw_code else ""
        headers = getattr(response, "headers", None) or {}
        retry_after = parse_retry_after(headers.get("Retry-After"))
        said = f"Slack {method} answered {code or f'HTTP {status}'}"
        if status == 429 or status >= 500 or code in TEMPORARY_CODES:
            return TemporaryFailure(said, retry_after=retry_after)
        if code in EXPLAINED:
            said = f"{said}: {EXPLAINED[code]}"
        return SlackApiFailure(said, code=code)
