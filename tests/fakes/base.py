"""A fake HTTP service (on :class:`FakeServer`) that records requests and fails on demand.

Failures are queued (:meth:`FakeService.fail`, :meth:`FakeService.slow`) or permanent while
``down`` is true; a request answered by a failure is counted in ``attempts`` but is not
``received``: only what the service accepted is.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.http import FakeServer

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


class FakeService(FakeServer):
    """Base: subclasses add routes and validate requests."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        self.received: list[Received] = []
        self.rejected: list[tuple[int, str]] = []
        self.attempts = 0
        self.down = False
        self.faults: deque[Fault] = deque()
        self.app.middlewares.append(self._fault_middleware)

    @property
    def url(self) -> str:
        return self.base_url

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
                await self.stall(fault.delay)
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
