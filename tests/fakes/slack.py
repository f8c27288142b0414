"""Fake Slack: an incoming webhook (:class:`FakeSlack`) and the Web API's chat methods
(:class:`FakeSlackWebApi`, for a bot token's threads).

The webhook: ``POST`` JSON with ``text`` and/or ``blocks``, ``ok``.

Errors as Slack answers them, in plain text: 404 ``no_service`` for an unknown webhook path,
400 ``invalid_payload`` for a body that is not JSON, 400 ``no_text`` with neither text nor
blocks, 400 ``msg_too_long`` for text over 40,000 characters, 400 ``invalid_blocks`` for
blocks Slack would refuse (more than 50, an unknown type, a section without text or with more
than 3,000 characters, a text object that is not ``mrkdwn`` or ``plain_text``).

:func:`markup` lists what Slack would act on in a text: mentions, broadcasts and links, the
``<...>`` sequences; an escaped ``&lt;!channel&gt;`` is text and is not among them.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeService

MAX_TEXT = 40_000
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3_000
MAX_HEADER_TEXT = 150
TEXT_TYPES = {"mrkdwn", "plain_text"}
MARKUP = re.compile(r"<([^<>]*)>")


def markup(text: str) -> list[str]:
    """The ``<...>`` sequences Slack turns into mentions, broadcasts or links."""
    return MARKUP.findall(text)


def _text_object(value: Any, limit: int) -> str | None:
    if not isinstance(value, dict) or value.get("type") not in TEXT_TYPES:
        return "a text object needs type mrkdwn or plain_text"
    text = value.get("text")
    if not isinstance(text, str) or not text:
        return "a text object needs text"
    if len(text) > limit:
        return f"text longer than {limit} characters"
    return None


def _block(block: Any) -> str | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return "a block needs a type"
    kind = block["type"]
    if kind == "divider":
        return None
    if kind == "header":
        return _text_object(block.get("text"), MAX_HEADER_TEXT)
    if kind == "section":
        if "text" not in block and "fields" not in block:
            return "a section needs text or fields"
        if "text" in block:
            return _text_object(block["text"], MAX_SECTION_TEXT)
        return None
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
            return "a context needs 1 to 10 elements"
        for element in elements:
            if problem := _text_object(element, MAX_SECTION_TEXT):
                return problem
        return None
    if kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
            return "an actions block needs 1 to 25 elements"
        for element in elements:
            if problem := _button(element):
                return problem
        return None
    return f"unknown block type {kind}"


def _button(element: Any) -> str | None:
    if not isinstance(element, dict) or element.get("type") != "button":
        return "only buttons are expected here"
    action_id = element.get("action_id")
    if not isinstance(action_id, str) or not 1 <= len(action_id) <= 255:
        return "a button needs an action_id of 1 to 255 characters"
    text = element.get("text")
    if not isinstance(text, dict) or text.get("type") != "plain_text":
        return "a button's text is plain_text"
    if problem := _text_object(text, 75):
        return problem
    value = element.get("value")
    if value is not None and (not isinstance(value, str) or len(value) > 2000):
        return "a button's value is a string of at most 2000 characters"
    if element.get("style") not in (None, "primary", "danger"):
        return "a button's style is primary or danger"
    return None


class FakeSlack(FakeService):
    def __init__(
        self, path: str = "/services/T0001/B0001/abcdefghijklmnopqrstuvwx", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        # What interactive messages' ``response_url`` received (the message's new content).
        self.responses: list[dict[str, Any]] = []
        self.app.router.add_post("/{tail:.*}", self._post)

    def response_url(self, n: int = 1) -> str:
        """A ``response_url`` as Slack puts into an interaction's payload."""
        return f"{self.url}/actions/T0001/{n}/responsexyz"

    @property
    def webhook_url(self) -> str:
        return self.url + self.path

    @property
    def texts(self) -> list[str]:
        return [r.body["text"] for r in self.received]

    @property
    def sections(self) -> list[str]:
        """The text of every section block received, in order."""
        return [
            block["text"]["text"]
            for r in self.received
            for block in r.body.get("blocks", ())
            if block["type"] == "section" and "text" in block
        ]

    async def _post(self, request: web.Request) -> web.Response:
        if request.path.startswith("/actions/"):
            return await self._respond(request)
        if request.path != self.path:
            return self.reject(404, "no_service")
        body, problem = await self.read_json(request)
        if problem or not isinstance(body, dict):
            return self.reject(400, "invalid_payload")
        text = body.get("text")
        blocks = body.get("blocks")
        if text is not None and not isinstance(text, str):
            return self.reject(400, "invalid_payload")
        if not blocks and (text is None or not text.strip()):
            return self.reject(400, "no_text")
        if text is not None and len(text) > MAX_TEXT:
            return self.reject(400, "msg_too_long")
        if blocks:
            if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
                return self.reject(400, "invalid_blocks")
            for block in blocks:
                if _block(block) is not None:
                    return self.reject(400, "invalid_blocks")
        self.record(request, body)
        return web.Response(text="ok")

    async def _respond(self, request: web.Request) -> web.Response:
        """A ``response_url``: JSON with ``text`` (and blocks), ``replace_original``."""
        body, problem = await self.read_json(request)
        if problem or not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return self.reject(400, "invalid_payload")
        for block in body.get("blocks") or ():
            if _block(block) is not None:
                return self.reject(400, "invalid_blocks")
        self.responses.append(body)
        return web.Response(text="ok")


@dataclass
class PostedMessage:
    """A message in the fake workspace: who posted it, where, and what it says now."""

    channel: str
    ts: str
    text: str | None
    blocks: list[Any] | None
    by_bot: bool
    thread_ts: str | None = None  # the top message's ts, for a reply
    edits: int = 0


@dataclass
class _Limited:
    retry_after: str


class FakeSlackWebApi(FakeService):
    """A fake Slack Web API: ``chat.postMessage`` and ``chat.update`` under ``/api/``.

    Checked as Slack checks them, answered as Slack answers (HTTP 200 with ``ok: false`` and an
    error code): ``Authorization: Bearer`` with the bot's token (``not_authed`` without one,
    ``invalid_auth`` with another), a JSON body (``invalid_json`` otherwise; this fake takes
    no form-encoded calls), ``channel`` an existing channel (``channel_not_found``) the bot is a
    member of (``not_in_channel``), ``text`` and/or ``blocks`` within Slack's limits
    (``no_text``, ``msg_too_long``, ``invalid_blocks``), ``thread_ts`` the ts of a top-level
    message in that channel (``thread_not_found``), and ``chat.update``'s ``ts`` a message
    there (``message_not_found``) posted by this bot (``cant_update_message``). On demand
    (:meth:`rate_limit`) it answers HTTP 429 ``ratelimited`` with ``Retry-After``.
    """

    def __init__(
        self,
        token: str,
        *,
        channels: tuple[str, ...] = ("C0INCIDENT",),
        not_member: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.token = token
        self.channels = set(channels) | set(not_member)
        self.not_member = set(not_member)
        self.messages: list[PostedMessage] = []
        self.errors: list[tuple[str, str]] = []  # (method, error code) of every ok: false
        self._limited: deque[_Limited] = deque()
        self._sequence = 0
        self.app.router.add_post("/api/{method}", self._call)

    @property
    def api_base(self) -> str:
        """What ``notify.slack.api_base`` is set to for this fake."""
        return self.url + "/api"

    def rate_limit(self, *, retry_after: str, times: int = 1) -> None:
        """Answer the next ``times`` calls with 429 ``ratelimited`` and ``Retry-After``."""
        for _ in range(times):
            self._limited.append(_Limited(retry_after))

    def post_as_someone_else(self, channel: str, text: str) -> str:
        """A message by a person in ``channel``; its ts."""
        message = PostedMessage(channel, self._next_ts(), text, None, by_bot=False)
        self.messages.append(message)
        return message.ts

    def delete(self, ts: str) -> None:
        """Someone deleted a message (and with it, its thread)."""
        self.messages = [m for m in self.messages if ts not in (m.ts, m.thread_ts)]

    def top_messages(self, channel: str = "C0INCIDENT") -> list[PostedMessage]:
        return [m for m in self.messages if m.channel == channel and m.thread_ts is None]

    def replies(self, ts: str) -> list[PostedMessage]:
        return [m for m in self.messages if m.thread_ts == ts]

    def _next_ts(self) -> str:
        self._sequence += 1
        return f"{int(self.clock())}.{self._sequence:06d}"

    def _find(self, channel: str, ts: Any) -> PostedMessage | None:
        for message in self.messages:
            if message.channel == channel and message.ts == ts:
                return message
        return None

    def _error(self, method: str, code: str) -> web.Response:
        self.errors.append((method, code))
        return self.reject(200, code, as_json={"ok": False, "error": code})

    async def _call(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if self._limited:
            limited = self._limited.popleft()
            self.errors.append((method, "ratelimited"))
            self.rejected.append((429, "ratelimited"))
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": limited.retry_after},
            )
        if method not in ("chat.postMessage", "chat.update"):
            return self._error(method, "unknown_method")
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[7:]:
            return self._error(method, "not_authed")
        if authorization[7:] != self.token:
            return self._error(method, "invalid_auth")
        body, problem = await self.read_json(request)
        if problem or not isinstance(body, dict):
            return self._error(method, "invalid_json")
        channel = body.get("channel")
        if not isinstance(channel, str) or not channel:
            return self._error(method, "channel_not_found")
        if channel not in self.channels:
            return self._error(method, "channel_not_found")
        if channel in self.not_member:
            return self._error(method, "not_in_channel")
        if code := _content_problem(body):
            return self._error(method, code)
        if method == "chat.update":
            return self._update(request, body, channel)
        return self._post(request, body, channel)

    def _post(self, request: web.Request, body: dict[str, Any], channel: str) -> web.Response:
        thread_ts = body.get("thread_ts")
        if thread_ts is not None:
            parent = self._find(channel, thread_ts)
            if parent is None or parent.thread_ts is not None:
                return self._error("chat.postMessage", "thread_not_found")
        message = PostedMessage(
            channel,
            self._next_ts(),
            body.get("text"),
            body.get("blocks"),
            by_bot=True,
            thread_ts=thread_ts,
        )
        self.messages.append(message)
        self.record(request, body)
        return web.json_response(
            {"ok": True, "channel": channel, "ts": message.ts, "message": _shown(message)}
        )

    def _update(self, request: web.Request, body: dict[str, Any], channel: str) -> web.Response:
        ts = body.get("ts")
        if not isinstance(ts, str) or not ts:
            return self._error("chat.update", "message_not_found")
        message = self._find(channel, ts)
        if message is None:
            return self._error("chat.update", "message_not_found")
        if not message.by_bot:
            return self._error("chat.update", "cant_update_message")
        message.text = body.get("text")
        message.blocks = body.get("blocks")
        message.edits += 1
        self.record(request, body)
        return web.json_response(
            {"ok": True, "channel": channel, "ts": ts, "text": message.text or ""}
        )


def _content_problem(body: dict[str, Any]) -> str | None:
    text = body.get("text")
    blocks = body.get("blocks")
    if text is not None and not isinstance(text, str):
        return "invalid_arguments"
    if not blocks and (text is None or not text.strip()):
        return "no_text"
    if text is not None and len(text) > MAX_TEXT:
        return "msg_too_long"
    if blocks:
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
            return "invalid_blocks"
        if any(_block(block) is not None for block in blocks):
            return "invalid_blocks"
    return None


def _shown(message: PostedMessage) -> dict[str, Any]:
    shown: dict[str, Any] = {"type": "message", "ts": message.ts, "text": message.text or ""}
    if message.thread_ts is not None:
        shown["thread_ts"] = message.thread_ts
    return shown
