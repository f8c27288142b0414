"""Background loops that live as long as the application: started, stopped, woken.

The incident worker, the notification outbox and the revert checks each run one long-lived
task. They share two things that are easy to get subtly wrong, so they live here once:
stopping (cancel, then wait for the task to end) and waiting for new work (until woken, or a
poll interval passes). The wait uses ``asyncio.timeout``, not ``asyncio.wait_for``: on Python
3.11 ``wait_for`` can swallow a cancellation that arrives as the awaited event is set, and the
stop then waits forever for a loop that keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["BackgroundTask", "wait_to_be_woken"]


class BackgroundTask:
    """One named task running ``run()`` from :meth:`start` until :meth:`stop`."""

    def __init__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended; nothing to do when not started."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()


async def wait_to_be_woken(wake: asyncio.Event, *, seconds: float) -> None:
    """Wait until ``wake`` is set or ``seconds`` have passed, then clear it."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()
    wake.clear()
