"""A fake of our integration's health endpoint (``GET /health``, JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.http import FakeServer


@dataclass
class FakeHealth:
    """Answers ``body`` (JSON-encoded unless bytes) with ``status``, after ``delay`` seconds."""

    body: Any = field(
        default_factory=lambda: {"status": "ok", "services": {"posthog": {"status": "ok"}}}
    )
    status: int = 200
    delay: float = 0.0
    requests: int = 0
    server: FakeServer = field(default_factory=FakeServer)

    def __post_init__(self) -> None:
        self.server.app.router.add_get("/health", self._health)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/health"

    def posthog(self, value: Any) -> None:
        self.body = {"status": "ok", "services": {"posthog": {"status": value}}}

    async def _health(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await self.server.stall(self.delay)
        if isinstance(self.body, bytes):
            return web.Response(body=self.body, status=self.status, content_type="application/json")
        return web.json_response(self.body, status=self.status)
