"""A stand-in for the PostHog integration's metrics endpoint: ``posthog_errors_total``.

A real aiohttp server on a free loopback port, serving the Prometheus text format, whose
counters (by ``status_code``) the test increments. Real Prometheus scrapes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["ErrorsExporter", "running_exporter"]


@dataclass
class ErrorsExporter:
    """Counters of PostHog errors by status code; ``address`` is ``host:port`` once running."""

    counts: Counter[str] = field(default_factory=Counter)
    address: str = ""
    scrapes: int = 0

    def add(self, status_code: str, n: int = 1) -> None:
        self.counts[status_code] += n

    def render(self) -> str:
        lines = [
            "# HELP posthog_errors_total Errors from the PostHog API, by status code.",
            "# TYPE posthog_errors_total counter",
        ]
        lines += [
            f'posthog_errors_total{{status_code="{code}"}} {value}'
            for code, value in sorted(self.counts.items())
        ]
        return "\n".join(lines) + "\n"


@asynccontextmanager
async def running_exporter(exporter: ErrorsExporter | None = None) -> AsyncIterator[ErrorsExporter]:
    """Serve ``exporter`` at ``/metrics`` on 127.0.0.1 (a free port) until the block ends."""
    exporter = exporter or ErrorsExporter()

    async def metrics(request: web.Request) -> web.Response:
        exporter.scrapes += 1
        return web.Response(text=exporter.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    assert server.sockets
    port = server.sockets[0].getsockname()[1]
    exporter.address = f"127.0.0.1:{port}"
    try:
        yield exporter
    finally:
        await runner.cleanup()
