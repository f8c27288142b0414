"""A fake Slack incoming webhook: ``POST`` JSON with ``text`` and/or ``blocks``, ``ok``.

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
    return f"unknown block type {kind}"


class FakeSlack(FakeService):
    def __init__(
        self, path: str = "/services/T0001/B0001/abcdefghijklmnopqrstuvwx", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.app.router.add_post("/{tail:.*}", self._post)

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
