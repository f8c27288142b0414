"""Triage, the pure part: which error class, how severe, acknowledged by when.

The runbook sorts an incident by the HTTP status PostHog answered (401/403, 429, 5xx) or by
how the call failed (timeouts, DNS, refused or reset connections, TLS), and rates it P1..P4.
Here that judgement is made from an alert's labels alone, by rules that live in configuration,
so no I/O happens and the same labels always give the same answer. Labels are untrusted
input: they select a class and a severity among configured ones and nothing else, and no
label set can make these functions raise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from receiver.config import TriageSettings
from receiver.runbook import RESPONSE_TIME, ErrorClass, Severity

__all__ = [
    "AlertAssessment",
    "Assessment",
    "acknowledge_by",
    "assess",
    "classify",
    "severity_of",
]

# Label values are matched with full-match regexes; a bounded input keeps a pathological
# value from costing more than a bounded amount of matching.
MAX_LABEL_CHARS = 512
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PRIORITIES = {s.value: s for s in Severity}
# Where several alerts share the highest severity, a recognised class explains more than
# 'unknown'; among recognised ones, the runbook's order decides.
_CLASS_ORDER = (
    ErrorClass.AUTH,
    ErrorClass.RATE_LIMITED,
    ErrorClass.UPSTREAM_ERROR,
    ErrorClass.NETWORK,
    ErrorClass.UNKNOWN,
)


def _value(labels: Mapping[str, str], name: str) -> str | None:
    raw = labels.get(name)
    if not isinstance(raw, str):
        return None
    value = raw[:MAX_LABEL_CHARS].strip()
    return value or None


def classify(labels: Mapping[str, str], settings: TriageSettings) -> ErrorClass:
    """The error class of one alert: the first configured rule that matches, else unknown."""
    for rule in settings.rules:
        for name in rule.labels:
            value = _value(labels, name)
            if value is not None and rule.regex.fullmatch(value):
                return rule.error_class
    return ErrorClass.UNKNOWN


def _priority(value: str | None) -> Severity | None:
    if value is None:
        return None
    text = value.upper()
    if len(text) == 1:
        text = "P" + text  # "1" means P1
    return _PRIORITIES.get(text)


def severity_of(
    labels: Mapping[str, str], error_class: ErrorClass, settings: TriageSettings
) -> Severity:
    """How severe one alert is.

    In order: an explicit priority label (P1..P4); a severity forced for the class in config;
    the alert's severity word (critical, error, warning, info, as configured); the class's
    default severity.
    """
    explicit = _priority(_value(labels, settings.priority_label))
    if explicit is not None:
        return explicit
    forced = settings.class_severity_overrides.get(error_class)
    if forced is not None:
        return forced
    word = _value(labels, settings.severity_label)
    if word is not None and (mapped := settings.severity_labels.get(word.lower())) is not None:
        return mapped
    return settings.class_severity.get(error_class, Severity.P3)


def acknowledge_by(
    opened_at: datetime, severity: Severity, settings: TriageSettings | None = None
) -> datetime:
    """When someone must have acknowledged the incident, by the runbook's response times.

    P1 15 minutes, P2 1 hour, P3 4 hours after ``opened_at``; P4 "next business day": the
    configured hour (UTC) of the first business day after the day it opened. A naive
    ``opened_at`` is taken as UTC; the result is always in UTC.
    """
    settings = settings or TriageSettings()
    opened = opened_at.replace(tzinfo=UTC) if opened_at.tzinfo is None else opened_at
    opened = opened.astimezone(UTC)
    if severity is not Severity.P4:
        return opened + RESPONSE_TIME[severity]
    business = {_WEEKDAYS.index(day) for day in settings.business_days}
    day = opened.date() + timedelta(days=1)
    while day.weekday() not in business:
        day += timedelta(days=1)
    return datetime.combine(day, time(settings.business_day_start_hour), tzinfo=UTC)


@dataclass(frozen=True)
class AlertAssessment:
    """One alert's class and severity."""

    fingerprint: str
    error_class: ErrorClass
    severity: Severity

    def as_dict(self) -> dict[str, str]:
        return {
            "fingerprint": self.fingerprint,
            "error_class": self.error_class.value,
            "severity": self.severity.value,
        }


@dataclass(frozen=True)
class Assessment:
    """A group's class and severity: the most severe alert decides."""

    error_class: ErrorClass
    severity: Severity
    alerts: tuple[AlertAssessment, ...]


def assess(alerts: Iterable[tuple[str, Mapping[str, str]]], settings: TriageSettings) -> Assessment:
    """Classify and rate each ``(fingerprint, labels)``; the group takes the highest severity,
    and the class of an alert with that severity (a recognised class before 'unknown')."""
    rated = tuple(
        AlertAssessment(fp, cls, severity_of(labels, cls, settings))
        for fp, labels in alerts
        for cls in (classify(labels, settings),)
    )
    if not rated:
        return Assessment(ErrorClass.UNKNOWN, settings.class_severity[ErrorClass.UNKNOWN], ())
    top = min(rated, key=lambda a: (a.severity.rank, _CLASS_ORDER.index(a.error_class)))
    return Assessment(top.error_class, top.severity, rated)
