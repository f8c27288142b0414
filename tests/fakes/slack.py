"""A fake Slack incoming webhook: ``POST`` JSON with ``text`` to the secret path, ``ok``.

Errors as Slack answers them, in plain text: 404 ``no_service`` for an unknown webhook path,
400 ``invalid_payload`` for a body that is not JSON, 400 ``no_text`` without text.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.base import FakeService

MAX_TEXT = 40_000


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

    async def _post(self, request: web.Request) -> web.Response:
        if request.path != self.path:
            return self.reject(404, "no_service")
        body, problem = await self.read_json(request)
        if problem or not isinstance(body, dict):
            return self.reject(400, "invalid_payload")
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return self.reject(400, "no_text")
        if len(text) > MAX_TEXT:
            return self.reject(400, "msg_too_long")
        self.record(request, body)
        return web.Response(text="ok")
