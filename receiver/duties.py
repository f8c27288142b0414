"""The leader's duties: the loops only the replica that leads runs, started and stopped with it.

Every replica takes webhooks (committed to the shared inbox before its ``200``) and serves the
API and the UI. Only the leader runs the duties: the incident worker (the inbox applied into
incidents, triage, remediation, evidence, retention), the revert checks and the notification
outbox. Applying the inbox on the leader only keeps one writer of incidents: the inbox is in
the shared store, so nothing waits anywhere else, and applying is idempotent anyway.

Gaining the lead starts them at once: what a previous leader left (pending incident events,
due reverts, undelivered messages) is in the store, and each loop's first pass picks it up.
Something whose intent committed under an older term with no outcome is reconciled, not
repeated: the journal reads the Deployment back before acting again, and a resent PagerDuty
event carries the same dedup key. Losing the lead stops them (cancelled, not awaited to the
end of what they were doing): whatever they were doing is refused by the fence
(``receiver.fencing``) if it tries to commit or call out.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from receiver.leadership import Leader, LeadershipChange

__all__ = ["Duty", "LeaderDuties"]

logger = structlog.get_logger(__name__)


class Duty(Protocol):
    """A loop that can be started, stopped, and started again."""

    def start(self) -> None: ...
    async def stop(self) -> None: ...
    @property
    def alive(self) -> bool: ...


class LeaderDuties:
    """Runs ``duties`` while ``leader`` leads; :meth:`close` stops them for good."""

    def __init__(self, leader: Leader) -> None:
        self._leader = leader
        self._duties: list[Duty] = []
        self._stopping: asyncio.Task[None] | None = None
        self._closed = False
        leader.add_listener(self._changed)

    def add(self, duty: Duty) -> None:
        """Run ``duty`` while leading (from now, if leading now)."""
        self._duties.append(duty)
        if self._leader.is_leader and not self._closed and self._stopping is None:
            duty.start()

    @property
    def running(self) -> bool:
        """Every duty runs (a follower runs none: ``False``)."""
        return bool(self._duties) and all(d.alive for d in self._duties)

    def _changed(self, change: LeadershipChange) -> None:
        if self._closed:
            return
        if change.leading:
            if self._stopping is None:
                self._start()
            # else: the stop under way starts them again once done, if still leading
        elif self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(
                self._stop_then_follow(), name="leader-duties-stop"
            )

    def _start(self) -> None:
        for duty in self._duties:
            if not duty.alive:
                duty.start()
        logger.info("leader duties started", duties=len(self._duties))

    async def _stop_all(self) -> None:
        await asyncio.gather(*(duty.stop() for duty in self._duties))

    async def _stop_then_follow(self) -> None:
        try:
            await self._stop_all()
            logger.info("leader duties stopped: following")
        finally:
            self._stopping = None
        if self._leader.is_leader and not self._closed:
            self._start()  # the lead came back while they were stopping

    async def close(self) -> None:
        """Stop every duty for good (the application stops)."""
        self._closed = True
        stopping = self._stopping
        if stopping is not None:
            await asyncio.gather(stopping, return_exceptions=True)
        await self._stop_all()
