"""Response times as the runbook defines them: time to acknowledge, time to mitigate.

The runbook promises a response within 15 minutes for a P1, an hour for a P2, four hours for
a P3 and the next business day for a P4; triage turns that into each incident's
acknowledge-by time. An incident is acknowledged the first time a person takes it: in
PagerDuty (its webhook, :mod:`receiver.pagerduty_webhook`) or by an approval on our page,
which calls :meth:`ResponseTimes.acknowledged`. It is mitigated by the first remediation that
verified, or else by recovery (every alert resolved). Both are recorded on the incident (its
timeline, the API, the postmortem) and counted in histograms per severity; the worker keeps
a gauge of acknowledgements overdue, which an alert rule watches.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from receiver.metrics import Metrics
from receiver.runbook import RESPONSE_TIME
from receiver.store import Store, now
from receiver.store.incidents import (
    AcknowledgedVia,
    ResponseTime,
    SeverityResponse,
    record_acknowledgement,
    response_times,
)

__all__ = ["REPORT_DAYS", "ResponseReport", "ResponseTimes"]

# The period the API reports on: long enough for a few incidents of each severity.
REPORT_DAYS = 30


@dataclass(frozen=True)
class ResponseReport:
    """How incidents opened in the last ``days`` were answered, per severity."""

    days: int
    since: float
    severities: list[SeverityResponse]

    def as_dict(self) -> dict[str, Any]:
        since = datetime.fromtimestamp(self.since, UTC).isoformat().replace("+00:00", "Z")
        return {
            "days": self.days,
            "since": since,
            "severities": [
                {
                    "severity": s.severity.value,
                    "targetSeconds": RESPONSE_TIME[s.severity].total_seconds(),
                    "incidents": s.incidents,
                    "met": s.met,
                    "missed": s.missed,
                    "pending": s.pending,
                    "shareMet": s.share_met,
                    "medianSecondsToAcknowledge": s.median_seconds_to_acknowledge,
                    "medianSecondsToMitigate": s.median_seconds_to_mitigate,
                }
                for s in self.severities
            ],
        }


class ResponseTimes:
    """Records acknowledgements (and counts them), and reports the share met."""

    def __init__(self, *, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    async def acknowledged(
        self, incident_id: str, by: str, at: float, source: AcknowledgedVia
    ) -> ResponseTime | None:
        """A person took the incident (``by``, at ``at``, through ``source``): its first
        acknowledgement is recorded and its time to acknowledge counted; a later one changes
        nothing (``None``). Raises ``LookupError`` for an unknown incident."""
        measured = await self._store.write(
            functools.partial(
                record_acknowledgement, incident_id=incident_id, by=by, at=at, via=source
            )
        )
        self._metrics.observe_acknowledgement(measured)
        return measured

    async def report(self, *, days: int = REPORT_DAYS, at: float | None = None) -> ResponseReport:
        """The share of acknowledgements in time per severity, over incidents opened in the
        ``days`` before ``at`` (default: now)."""
        moment = now() if at is None else at
        since = moment - days * 86400
        severities = await self._store.read(lambda c: response_times(c, since=since, at=moment))
        return ResponseReport(days, since, severities)
