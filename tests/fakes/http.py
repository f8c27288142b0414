"""A small aiohttp server on 127.0.0.1 and a free port, for fakes of outside services."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from aiohttp import web


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeServer:
    """Runs ``app`` on an OS-chosen port; ``release`` wakes handlers parked in ``stall``."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stall(self, seconds: float) -> None:
        """Answer slowly: wait ``seconds`` or until the server stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), seconds)

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
