"""A fake HTTP service on a free loopback port that can fail on demand.

Failures are queued (:meth:`FakeService.fail`, :meth:`FakeService.slow`) or permanent while
``down`` is true; a request answered by a failure is counted in ``attempts`` but is not
``received``: only what the service accepted is.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    status: int = 503
    retry_after: str | None = None
    body: str = ""
    delay: float = 0.0  # answer late; with status 0 the request then proceeds normally


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class FakeService:
    """Base: subclasses add routes and validate requests."""

    clock: Callable[[], float] = time.time
    received: list[Received] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    attempts: int = 0
    down: bool = False
    faults: deque[Fault] = field(default_factory=deque)
    url: str = ""

    def __post_init__(self) -> None:
        self.app = web.Application(middlewares=[self._fault_middleware])
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def fail(
        self, status: int, *, times: int = 1, retry_after: str | None = None, body: str = ""
    ) -> None:
        for _ in range(times):
            self.faults.append(Fault(status=status, retry_after=retry_after, body=body))

    def slow(self, seconds: float, *, times: int = 1) -> None:
        for _ in range(times):
            self.faults.append(Fault(status=0, delay=seconds))

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.attempts += 1
        if self.down:
            return web.Response(status=503, text="service unavailable")
        if self.faults:
            fault = self.faults.popleft()
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return web.Response(status=fault.status, text=fault.body, headers=headers)
        return await handler(request)

    def reject(self, status: int, reason: str, *, as_json: Any = None) -> web.Response:
        self.rejected.append((status, reason))
        if as_json is not None:
            return web.json_response(as_json, status=status)
        return web.Response(status=status, text=reason)

    async def read_json(self, request: web.Request) -> tuple[Any, str | None]:
        """The JSON body, or why it is not acceptable."""
        if request.content_type != "application/json":
            return None, f"content type {request.content_type!r} is not application/json"
        raw = await request.read()
        try:
            return json.loads(raw), None
        except ValueError:
            return None, "body is not JSON"

    def record(self, request: web.Request, body: Any) -> None:
        self.received.append(
            Received(request.method, request.path, dict(request.headers), body, self.clock())
        )
