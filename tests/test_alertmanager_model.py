"""The webhook payload model on its own: the dedup digest it stores, and what it refuses."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from pydantic import ValidationError

from receiver.alertmanager import WebhookPayload
from receiver.webhook import payload_error
from tests.alertmanager_payloads import alert, notification

# Three alerts out of order: an offset other than UTC, nanoseconds (kept to microseconds), the
# zero time, a real end, "-00:30", non-ASCII text in the group key and a label.
PINNED_BODY = b"""{
  "version": "4",
  "groupKey": "{}/{severity=\\"page\\"}:{team=\\"\\u00e9quipe\\"}",
  "truncatedAlerts": 0,
  "status": "firing",
  "receiver": "posthog-receiver",
  "alerts": [
    {"status": "firing", "labels": {"alertname": "PostHogErrorsHigh", "pod": "b"},
     "startsAt": "2026-01-05T10:00:00.123456789+02:00", "endsAt": "0001-01-01T00:00:00Z",
     "fingerprint": "ffeeddccbbaa9988"},
    {"status": "resolved", "labels": {"alertname": "PostHogErrorsHigh", "pod": "a"},
     "startsAt": "2026-01-05T08:00:00Z", "endsAt": "2026-01-05T09:30:00.5Z",
     "fingerprint": "3a1f0c2e9b8d7c6a"},
    {"status": "firing", "labels": {"alertname": "PostHogErrorsHigh", "pod": "\\u00e9"},
     "startsAt": "2026-01-05T08:00:00-00:30",
     "fingerprint": "0000000000000001"}
  ]
}"""
# Stored inbox rows carry this digest: a different one would make a resend after an upgrade look
# like new news. It must never change.
PINNED_DIGEST = "774ae8159881e45c48418b5994a25bd40a53fbc1292c8e056b17d36eb7961f10"


def test_dedup_key_of_a_fixed_payload_never_changes() -> None:
    payload = WebhookPayload.model_validate_json(PINNED_BODY)
    assert payload.dedup_key() == PINNED_DIGEST
    assert sorted(a.state_key() for a in payload.alerts) == [
        "0000000000000001|firing|2026-01-05T08:00:00-00:30|",
        "3a1f0c2e9b8d7c6a|resolved|2026-01-05T08:00:00+00:00|2026-01-05T09:30:00.500000+00:00",
        "ffeeddccbbaa9988|firing|2026-01-05T10:00:00.123456+02:00|",
    ]


@pytest.mark.parametrize(
    "body",
    [
        PINNED_BODY,
        json.dumps(notification("{}:{a=b}", [alert("f1")])).encode(),
        json.dumps(
            notification(
                "g",
                [
                    alert("f2", "resolved", ends_at="2026-01-05T11:00:00+01:00"),
                    alert("f1", starts_at="2026-01-05T10:00:00.000001Z"),
                    alert("f1", "resolved", ends_at="2026-01-05T10:00:01Z"),
                ],
            )
        ).encode(),
    ],
)
def test_dedup_key_is_the_digest_of_the_group_key_and_sorted_state_keys(body: bytes) -> None:
    payload = WebhookPayload.model_validate_json(body)
    text = "\n".join([payload.group_key, *sorted(a.state_key() for a in payload.alerts)])
    assert payload.dedup_key() == hashlib.sha256(text.encode()).hexdigest()


def _outcome(validate: Any) -> tuple[str, Any]:
    try:
        payload = validate()
    except ValidationError as e:
        return "refused", payload_error(e)
    return "accepted", (payload.truncated_alerts, payload.alerts[0].starts_at.isoformat())


NOT_A_TIME = "Value error, expected an RFC 3339 time, not a number"
NOT_AN_INTEGER = "Value error, expected an integer"
NOT_A_REAL_TIME = "Value error, expected an RFC 3339 time from the year 1970 to 2199"
TIMES: list[tuple[Any, str | None]] = [
    ("2026-01-05T10:00:00Z", None),
    ("2026-01-05T10:00:00.5+05:30", None),
    ("1767607200", NOT_A_REAL_TIME),  # digits: not RFC 3339 (pydantic would read a Unix time)
    ("9999-12-31T23:59:59Z", NOT_A_REAL_TIME),
    ("1969-12-31T23:59:59Z", NOT_A_REAL_TIME),
    ("0001-01-01T00:00:00Z", NOT_A_REAL_TIME),  # the zero time means "not ended", never a start
    ("2026-01-05T10:00:00", "Input should have timezone info"),
    ("2026-01-05", "Input should have timezone info"),
    ("2026-02-30T00:00:00Z", "Input should be a valid datetime or date, day value is outside"),
    ("", NOT_A_REAL_TIME),
    (0, NOT_A_TIME),
    (1_767_607_200, NOT_A_TIME),
    (1.5e9, NOT_A_TIME),
    (10**30, NOT_A_TIME),
    (float("nan"), NOT_A_TIME),
    (float("inf"), NOT_A_TIME),
    (True, NOT_A_TIME),
    (False, NOT_A_TIME),
    (None, "Input should be a valid datetime"),
    ([], "Input should be a valid datetime"),
    ({}, "Input should be a valid datetime"),
]
COUNTS: list[tuple[Any, str | None]] = [
    (0, None),
    (7, None),
    (10**30, None),
    (5.0, None),
    (5000.0, None),
    (-0.0, None),
    (2.0**52 - 1, None),
    (-1, "Input should be greater than or equal to 0"),
    (-5.0, "Input should be greater than or equal to 0"),
    (-(2.0**52) + 1, "Input should be greater than or equal to 0"),
    (2.0**52, NOT_AN_INTEGER),
    (-(2.0**52), NOT_AN_INTEGER),
    (1e20, NOT_AN_INTEGER),
    (3.5, NOT_AN_INTEGER),
    (float("nan"), NOT_AN_INTEGER),
    (float("inf"), NOT_AN_INTEGER),
    (float("-inf"), NOT_AN_INTEGER),
    ("3", NOT_AN_INTEGER),
    (True, NOT_AN_INTEGER),
    (False, NOT_AN_INTEGER),
    (None, NOT_AN_INTEGER),
    ([1], NOT_AN_INTEGER),
    ({}, NOT_AN_INTEGER),
]


@pytest.mark.parametrize(
    ("field", "value", "refusal"),
    [("startsAt", v, r) for v, r in TIMES] + [("truncatedAlerts", v, r) for v, r in COUNTS],
)
def test_json_and_python_input_are_checked_alike(
    field: str, value: Any, refusal: str | None
) -> None:
    """A time must not be a number, a count must be what JSON calls an integer: the same
    verdict and message for a request body (JSON) as for Python data (``model_validate``)."""
    doc = notification("g", [alert("f1"), alert("f2")])
    (doc if field == "truncatedAlerts" else doc["alerts"][0])[field] = value
    from_json = _outcome(lambda: WebhookPayload.model_validate_json(json.dumps(doc)))
    from_python = _outcome(lambda: WebhookPayload.model_validate(copy.deepcopy(doc)))
    assert from_json == from_python
    if refusal is None:
        assert from_json[0] == "accepted"
    else:
        loc = "truncatedAlerts" if field == "truncatedAlerts" else "alerts.0.startsAt"
        assert from_json[0] == "refused"
        assert from_json[1].startswith(f"invalid payload: {loc}: {refusal}")
