"""The ``log`` destination: what would have been sent, written to the structured log.

Used for every destination that is not configured (the embedded default configures none),
so a laptop run shows the pages, status-page updates and chat messages the service would
send, through the same outbox, in the same order, with the same hold-off.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import structlog

from receiver.notify.delivery import Message, Sent

__all__ = ["LogSender"]

logger = structlog.get_logger(__name__)


class LogSender:
    """Writes each message to the log as one ``notification`` event."""

    destination = "log"

    def ready_in(self) -> float:
        return 0.0

    async def send(
        self, session: aiohttp.ClientSession, message: Message, state: Mapping[str, str]
    ) -> Sent:
        target, _, kind = message.kind.partition(".")
        logger.info(
            "notification",
            destination="log",
            target=target,
            kind=kind,
            incident_id=message.incident_id,
            payload=message.payload,
        )
        return Sent()
