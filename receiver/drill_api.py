"""``POST /api/drills``: the result of a ``posthog-receiver drill``, made into metrics.

A drill is a command (run by hand or by the chart's CronJob) and cannot be scraped, so it
reports its result here, with the webhook's credentials (the route sits under ``/api/``). The
receiver keeps only the metrics: when the last drill ran, when one last passed, how many
steps failed. The time is the receiver's own clock at receipt, not the sender's.
"""

from __future__ import annotations

import time

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from receiver.api import error
from receiver.keys import METRICS

__all__ = ["ROUTES", "DrillResult"]

logger = structlog.get_logger(__name__)

MAX_STEPS = 1000


class DrillResult(BaseModel):
    """What the drill reports: its id, how many steps ran, the names of those that failed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drill: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    steps: int = Field(ge=1, le=MAX_STEPS)
    failed: list[str] = Field(max_length=MAX_STEPS)


async def record_drill(request: web.Request) -> web.Response:
    """Record one drill's result; 204, or 400 for a body that is not a drill result."""
    try:
        result = DrillResult.model_validate_json(await request.read())
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise error(web.HTTPBadRequest, f"invalid drill result: {where}: {first['msg']}") from None
    metrics = request.app[METRICS]
    now = time.time()
    metrics.drill_last_run.set(now)
    metrics.drill_steps_failed.set(len(result.failed))
    if not result.failed:
        metrics.drill_last_success.set(now)
    logger.info("drill recorded", drill=result.drill, steps=result.steps, failed=len(result.failed))
    return web.Response(status=204)


ROUTES = [web.post("/api/drills", record_drill)]
