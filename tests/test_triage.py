"""Error class, severity and acknowledge-by deadline from alert labels (pure triage)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.config import (
    ClassRule,
    ConfigError,
    TriageSettings,
    load_settings,
)
from receiver.runbook import ErrorClass, Severity
from receiver.triage import acknowledge_by, assess, classify, severity_of

DEFAULTS = TriageSettings()
A, R, U, N, X = (
    ErrorClass.AUTH,
    ErrorClass.RATE_LIMITED,
    ErrorClass.UPSTREAM_ERROR,
    ErrorClass.NETWORK,
    ErrorClass.UNKNOWN,
)

# Label sets as posthog_errors_total alerts carry them (recording-rule labels plus the
# alert's own), with the class and severity the runbook gives them.
REALISTIC = [
    # The error class named outright, with a status code that says nothing more.
    ({"alertname": "PostHogErrors", "error_type": "auth", "severity": "critical"}, A, "P1"),
    (
        {"alertname": "PostHogErrors", "error_type": "network", "severity": "error"},
        ErrorClass.NETWORK,
        "P2",
    ),
    ({"alertname": "PostHogErrorRateHigh", "status_code": "401", "severity": "critical"}, A, "P1"),
    ({"alertname": "PostHogErrorRateHigh", "status_code": "403", "severity": "warning"}, A, "P3"),
    ({"alertname": "PostHogErrorRateHigh", "code": "401"}, A, "P1"),
    ({"alertname": "PostHogErrorRateHigh", "status_code": "429", "severity": "warning"}, R, "P3"),
    ({"alertname": "PostHogErrorRateHigh", "status_code": "429"}, R, "P2"),
    ({"alertname": "PostHogErrorRateHigh", "status_code": "500", "severity": "error"}, U, "P2"),
    ({"alertname": "PostHogErrorRateHigh", "status_code": "502", "severity": "critical"}, U, "P1"),
    ({"alertname": "PostHogErrorRateHigh", "status_code": "503", "priority": "P4"}, U, "P4"),
    ({"alertname": "PostHogErrorRateHigh", "status_code": "504"}, U, "P2"),
    ({"alertname": "PostHogErrors", "error_type": "ECONNRESET", "severity": "critical"}, N, "P1"),
    ({"alertname": "PostHogErrors", "error_type": "ETIMEDOUT"}, N, "P2"),
    ({"alertname": "PostHogErrors", "code": "ECONNREFUSED", "severity": "info"}, N, "P4"),
    ({"alertname": "PostHogErrors", "reason": "read timeout"}, N, "P2"),
    ({"alertname": "PostHogErrors", "reason": "DNS lookup failed: NXDOMAIN"}, N, "P2"),
    ({"alertname": "PostHogErrors", "error_type": "SSLError", "severity": "warning"}, N, "P3"),
    ({"alertname": "PostHogErrors", "error_type": "tls_handshake_failure"}, N, "P2"),
    ({"alertname": "PostHogErrors", "reason": "Connection refused"}, N, "P2"),
    # 504 by name is PostHog's side, not a network timeout of ours.
    ({"alertname": "PostHogErrors", "error_type": "gateway_timeout"}, U, "P2"),
    ({"alertname": "PostHogErrors", "error_type": "Unauthorized"}, A, "P1"),
    ({"alertname": "PostHogErrors", "reason": "invalid_api_key"}, A, "P1"),
    ({"alertname": "PostHogErrors", "reason": "Too Many Requests"}, R, "P2"),
    ({"alertname": "PostHogErrors", "error_type": "service_unavailable"}, U, "P2"),
    # The alert name, when nothing else says what failed.
    ({"alertname": "PostHogAuthFailures", "severity": "critical"}, A, "P1"),
    ({"alertname": "PostHogRateLimited"}, R, "P2"),
    ({"alertname": "PostHog5xxErrors", "severity": "warning"}, U, "P3"),
    ({"alertname": "PostHogNetworkErrors"}, N, "P2"),
    # A status code beats a misleading name; spaces and case do not matter.
    ({"alertname": "PostHogNetworkErrors", "status_code": " 401 "}, A, "P1"),
    ({"alertname": "PostHogErrors", "status_code": "429", "severity": "CRITICAL"}, R, "P1"),
    ({"alertname": "PostHogErrors", "priority": "p2", "severity": "info"}, X, "P2"),
    ({"alertname": "PostHogErrors", "status_code": "418"}, X, "P3"),
    ({"alertname": "PostHogErrors", "error_type": "ValueError"}, X, "P3"),
    ({}, X, "P3"),
]


@pytest.mark.parametrize(("labels", "error_class", "severity"), REALISTIC)
def test_realistic_labels(labels: dict[str, str], error_class: ErrorClass, severity: str) -> None:
    """A realistic label set gets the runbook's class and severity under the default rules."""
    got = classify(labels, DEFAULTS)
    assert got is error_class
    assert severity_of(labels, got, DEFAULTS) is Severity(severity)


label_names = st.sampled_from(
    ["status_code", "code", "error_type", "reason", "alertname", "priority", "severity"]
) | st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(label_names, st.text(max_size=300), max_size=10))
def test_any_label_set_gets_a_class_and_severity(labels: dict[str, str]) -> None:
    """Any label set, however odd, yields some class and severity and never raises."""
    error_class = classify(labels, DEFAULTS)
    assert isinstance(error_class, ErrorClass)
    assert isinstance(severity_of(labels, error_class, DEFAULTS), Severity)
    assessment = assess([("fp", labels)], DEFAULTS)
    assert assessment.error_class is error_class


def test_huge_label_value_is_classified() -> None:
    """A label value far larger than any real one is still classified (by its beginning)."""
    labels = {"reason": "connection reset " + "x" * 1_000_000}
    assert classify(labels, DEFAULTS) is N


def test_rules_come_from_config_and_first_match_wins() -> None:
    """Configured rules replace the defaults, and the first matching rule decides."""
    rules = TriageSettings(
        rules=[
            ClassRule(labels=["code"], pattern="E42.*", error_class=R),
            ClassRule(labels=["code"], pattern="E.*", error_class=A),
        ]
    )
    assert classify({"code": "E429"}, rules) is R
    assert classify({"code": "E401"}, rules) is A
    assert classify({"status_code": "401"}, rules) is X


def test_priority_label_wins_over_everything() -> None:
    """An explicit priority label beats a forced class severity and the severity word."""
    cfg = TriageSettings(class_severity_overrides={A: Severity.P1})
    assert severity_of({"priority": "P3", "severity": "critical"}, A, cfg) is Severity.P3
    assert severity_of({"priority": "4"}, A, cfg) is Severity.P4


def test_class_override_beats_severity_word_but_default_does_not() -> None:
    """A per-class override wins over the severity label; a per-class default only fills in."""
    cfg = TriageSettings(class_severity_overrides={N: Severity.P1}, class_severity={U: Severity.P4})
    assert severity_of({"severity": "info"}, N, cfg) is Severity.P1
    assert severity_of({"severity": "critical"}, U, cfg) is Severity.P1
    assert severity_of({}, U, cfg) is Severity.P4
    # Classes not named keep their built-in default.
    assert severity_of({}, A, cfg) is Severity.P1


def test_unrecognised_priority_and_severity_fall_back_to_class_default() -> None:
    """A priority like 'P9' or a severity word not configured is ignored, not an error."""
    assert severity_of({"priority": "P9", "severity": "page-me"}, R, DEFAULTS) is Severity.P2


def test_severity_words_are_configurable() -> None:
    """Configured severity words are matched ignoring case."""
    cfg = TriageSettings(severity_labels={"Page": Severity.P1, "ticket": Severity.P4})
    assert severity_of({"severity": "PAGE"}, X, cfg) is Severity.P1
    assert severity_of({"severity": "critical"}, X, cfg) is Severity.P3


OPENED = datetime(2026, 11, 18, 10, 7, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("severity", "delta"),
    [("P1", timedelta(minutes=15)), ("P2", timedelta(hours=1)), ("P3", timedelta(hours=4))],
)
def test_acknowledge_by_response_times(severity: str, delta: timedelta) -> None:
    """P1..P3 must be acknowledged within the runbook's response time."""
    assert acknowledge_by(OPENED, Severity(severity)) == OPENED + delta


@pytest.mark.parametrize(
    ("opened", "due"),
    [
        (datetime(2026, 11, 18, 10, 7, tzinfo=UTC), datetime(2026, 11, 19, 9, tzinfo=UTC)),
        (datetime(2026, 11, 18, 3, 0, tzinfo=UTC), datetime(2026, 11, 19, 9, tzinfo=UTC)),
        (datetime(2026, 11, 20, 15, 0, tzinfo=UTC), datetime(2026, 11, 23, 9, tzinfo=UTC)),
        (datetime(2026, 11, 21, 12, 0, tzinfo=UTC), datetime(2026, 11, 23, 9, tzinfo=UTC)),
        # Another zone is converted first: Friday 23:30 in New York is Saturday in UTC.
        (
            datetime(2026, 11, 20, 23, 30, tzinfo=UTC) - timedelta(hours=5),
            datetime(2026, 11, 23, 9, tzinfo=UTC),
        ),
    ],
)
def test_p4_is_due_next_business_day_morning(opened: datetime, due: datetime) -> None:
    """P4 is due at 09:00 UTC on the first business day after the day it opened."""
    assert acknowledge_by(opened, Severity.P4) == due


def test_p4_business_day_is_configurable() -> None:
    """The business-day hour and days come from config; a naive time is taken as UTC."""
    cfg = TriageSettings(business_day_start_hour=7, business_days=["sun"])
    due = acknowledge_by(datetime(2026, 11, 18, 10, 7), Severity.P4, cfg)
    assert due == datetime(2026, 11, 22, 7, tzinfo=UTC)


def test_group_takes_highest_severity_and_its_class() -> None:
    """A group's severity is its most severe alert's, and so is its class."""
    got = assess(
        [
            ("a", {"status_code": "429", "severity": "warning"}),
            ("b", {"error_type": "ECONNRESET", "severity": "critical"}),
            ("c", {"status_code": "401", "severity": "info"}),
        ],
        DEFAULTS,
    )
    assert (got.error_class, got.severity) == (N, Severity.P1)
    assert [a.fingerprint for a in got.alerts] == ["a", "b", "c"]


def test_group_prefers_a_recognised_class_on_a_tie() -> None:
    """Between equally severe alerts, a recognised class explains more than 'unknown'."""
    got = assess(
        [
            ("a", {"error_type": "weird", "severity": "critical"}),
            ("b", {"status_code": "503", "severity": "critical"}),
        ],
        DEFAULTS,
    )
    assert (got.error_class, got.severity) == (U, Severity.P1)


def test_embedded_config_triage_is_the_documented_default() -> None:
    """The example config spells out exactly the built-in triage defaults."""
    import os

    os.environ.setdefault("POSTHOG_RECEIVER_WEBHOOK_TOKEN", "test-token")
    loaded = load_settings(None).triage
    assert loaded.model_dump() == DEFAULTS.model_dump()
    assert loaded.upstream.url == "https://status.posthog.com/api/v2/status.json"
    assert loaded.health.url is None


def test_invalid_rule_pattern_is_a_config_error(tmp_path: Path) -> None:
    """A rule with a broken regex is refused at load, naming the field."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "webhook: {allow_unauthenticated: true}\n"
        "triage:\n  rules:\n    - {labels: [code], pattern: '(', error_class: auth}\n"
    )
    with pytest.raises(ConfigError, match=r"triage\.rules\.0.*not a valid regex"):
        load_settings(cfg)


def test_unknown_error_class_in_config_is_refused(tmp_path: Path) -> None:
    """A rule naming a class the runbook does not know is refused at load."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "webhook: {allow_unauthenticated: true}\n"
        "triage:\n  rules:\n    - {labels: [code], pattern: 'x', error_class: teapot}\n"
    )
    with pytest.raises(ConfigError, match=r"triage\.rules\.0\.error_class"):
        load_settings(cfg)


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)a", r"a(?!b)"])
def test_a_rule_that_cannot_run_in_linear_time_is_refused(tmp_path: Path, pattern: str) -> None:
    """Backreferences and lookaround need backtracking: check-config refuses them, naming the
    rule and saying why."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "webhook: {allow_unauthenticated: true}\n"
        f"triage:\n  rules:\n    - {{labels: [code], pattern: '{pattern}', error_class: auth}}\n"
    )
    with pytest.raises(ConfigError, match=r"triage\.rules\.0.*linear time"):
        load_settings(cfg)


def test_a_backtracking_pattern_matches_a_long_label_at_once() -> None:
    """``(a+)+$`` against a long label would take Python's engine longer than the age of the
    universe; the rules' engine answers in linear time (the default runner's timeout bounds
    this test, no timing assertion)."""
    settings = TriageSettings(
        rules=[ClassRule(labels=["reason"], pattern=r"(a+)+$", error_class=ErrorClass.AUTH)]
    )
    hostile = {"reason": "a" * 500 + "!"}
    assert classify(hostile, settings) is ErrorClass.UNKNOWN
    assert classify({"reason": "A" * 500}, settings) is ErrorClass.AUTH
