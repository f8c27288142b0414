"""The runbook's vocabulary, shared by triage, remediation, notifications and evidence.

These names are the runbook's own: error classes from "Immediate Actions by Error Type",
severities from "Severity Levels", verdicts from the "Decision Tree". Pure data, no I/O.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

__all__ = ["RESPONSE_TIME", "ErrorClass", "Severity", "Verdict"]


class ErrorClass(StrEnum):
    """What kind of failure the PostHog integration is seeing."""

    AUTH = "auth"  # 401/403: key missing, wrong or rotated
    RATE_LIMITED = "rate_limited"  # 429
    UPSTREAM_ERROR = "upstream_error"  # 500/502/503/504 from PostHog
    NETWORK = "network"  # timeouts, DNS, connection refused/reset, TLS
    UNKNOWN = "unknown"


class Severity(StrEnum):
    """P1 complete outage, P2 degraded, P3 minor impact, P4 no user impact."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"

    @property
    def rank(self) -> int:
        """1 for P1 (most severe) to 4 for P4."""
        return int(self.value[1])

    def is_higher_than(self, other: Severity) -> bool:
        return self.rank < other.rank

    @staticmethod
    def highest(severities: list[Severity]) -> Severity:
        return min(severities, key=lambda s: s.rank)


# The runbook's response times; P4 is "next business day", counted here as one day and
# rounded to the next business morning by whoever computes a deadline from it.
RESPONSE_TIME: dict[Severity, timedelta] = {
    Severity.P1: timedelta(minutes=15),
    Severity.P2: timedelta(hours=1),
    Severity.P3: timedelta(hours=4),
    Severity.P4: timedelta(days=1),
}


class Verdict(StrEnum):
    """Where the decision tree ends."""

    VENDOR_INCIDENT = "vendor_incident"  # PostHog's status page shows an incident: fallback, wait
    OUR_INTEGRATION = "our_integration"  # PostHog is fine: our credentials or config
    OUR_INFRASTRUCTURE = "our_infrastructure"  # our service is unhealthy: pods, memory, network
    INTERMITTENT = "intermittent"  # nothing wrong found now: likely resolved or intermittent
    UNKNOWN = "unknown"  # the evidence could not be read
