"""The HTTP listener: the application served on a socket, with bounds on connections.

Before any credential is checked, a socket costs the service a file descriptor. So a client
gets ``server.idle_timeout_seconds`` to send a whole request (a connection idle between
requests, or one that sends its headers a byte at a time, is closed then), and no more than
``server.max_connections`` are open at once: past it a new connection is closed at once, and
counted. A request the HTTP parser refuses (a malformed header) is answered 400 by aiohttp and
logged as one WARNING line, not an ERROR with a traceback per request.

SIGTERM and SIGINT stop the listener, let requests in flight finish (for
``server.shutdown_timeout_seconds`` at most) and then stop the application, as ``aiohttp``'s own
runner does.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from receiver.config import ServerSettings

__all__ = ["MalformedRequests", "connection_limit", "serve"]


class _Refused(asyncio.Protocol):
    """A connection over the limit: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def connection_limit(
    server: web.Server, limit: int, *, refused: Callable[[], None]
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``server`` that closes connections past ``limit`` open ones."""

    def accept() -> asyncio.Protocol:
        if len(server.connections) >= limit:
            refused()
            return _Refused()
        return server()

    return accept


class MalformedRequests(logging.Filter):
    """Turns aiohttp's ERROR-with-traceback for a request its parser refused into a WARNING
    line: a malformed request is the client's error, answered 400, not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = (
                "malformed HTTP request refused: %s %s",
                (
                    error.code,
                    str(error.message).splitlines()[0] if error.message else "",
                ),
            )
            record.exc_info = record.exc_text = None
        return True


async def serve(
    app: web.Application, settings: ServerSettings, *, on_refused: Callable[[], None]
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut it down gracefully."""
    logging.getLogger("aiohttp.server").addFilter(MalformedRequests())
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=settings.idle_timeout_seconds,
        shutdown_timeout=settings.shutdown_timeout_seconds,
    )
    await runner.setup()  # the application's startup
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    assert runner.server is not None
    listener = await loop.create_server(
        connection_limit(runner.server, settings.max_connections, refused=on_refused),
        settings.host,
        settings.port,
        reuse_address=True,
    )
    try:
        await stop.wait()
    finally:
        listener.close()  # no new connections; those open finish in the runner's shutdown
        await runner.cleanup()
