"""A person's decision on an approval, from the incident page or Slack: one path for both.

The decision goes to the responder (decided at most once, whoever clicks first); the one that
decided is also the incident's acknowledgement (``source="approval"``): whoever approves or
denies an action has taken the incident, as the runbook's response times count it. A repeat
click, or a decision after a PagerDuty acknowledgement, changes nothing there.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from receiver.keys import RESPONDER, RESPONSE_TIMES
from receiver.leadership import NotLeader
from receiver.store.approvals import Approval, Decision

__all__ = ["decide"]

logger = structlog.get_logger(__name__)


async def decide(
    app: web.Application,
    approval_id: str,
    *,
    decision: Decision,
    by: str,
    via: str,
    origin: str,
) -> Approval | None:
    """Approve or deny (``None``: decided or expired before); raises 503 without a
    responder or on a replica that does not lead, and lets ``StoreUnavailable`` through for
    the caller's answer."""
    responder = app.get(RESPONDER)
    if responder is None:
        raise web.HTTPServiceUnavailable(text="Remediation is not running here.\n")
    try:
        decided = await responder.decide_approval(
            approval_id, decision=decision, by=by, via=via, origin=origin
        )
    except NotLeader:
        # With several replicas only the leader decides and applies (its writes are fenced
        # by its term): nothing was recorded here, so the person's click can simply be sent
        # again, and the Service may route it to the leader.
        raise web.HTTPServiceUnavailable(
            text="This replica does not lead: nothing was recorded. Try again.\n",
            headers={"Retry-After": "2"},
        ) from None
    if decided is None:
        return None
    at = decided.decided_at if decided.decided_at is not None else decided.requested_at
    try:
        await app[RESPONSE_TIMES].acknowledged(decided.incident_id, by, at, source="approval")
    except LookupError:
        # Retention removed the incident meanwhile: the decision stands, nothing to time.
        logger.warning("approval for an incident no longer stored", approval_id=approval_id)
    return decided
