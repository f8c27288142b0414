"""Fuzzing ``POST /webhook/alertmanager`` with malformed and adversarial requests.

Each test drives the real application through a real HTTP server with thousands of generated
requests (hypothesis runs in a worker thread; every request goes through the test's event
loop). Whatever comes in, the service must answer with a status the OpenAPI description
documents and never a 5xx, refuse what is not a valid notification without storing it,
accept every valid one, keep the store consistent with the incident rules, and afterwards
still answer ``/healthz`` and ``/readyz`` and process a valid notification.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import string
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import pytest_asyncio
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from receiver.alertmanager import (
    MAX_ANNOTATION_VALUE_CHARS,
    MAX_GROUP_KEY_CHARS,
    MAX_LABEL_NAME_CHARS,
    MAX_LABEL_VALUE_CHARS,
    MAX_LABELS,
)
from receiver.keys import STORE, WORKER
from receiver.openapi import load_spec
from receiver.store.inbox import inbox_size
from tests.alertmanager_payloads import (
    BASIC_PASSWORD,
    BASIC_USER,
    BEARER,
    TOKEN,
    ZERO_TIME,
    alert,
    basic_header,
    notification,
    served_app,
    store_problems,
    wait_processed,
)

T = TypeVar("T")
ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]

MAX_BODY = 1_048_576
PATH = "/webhook/alertmanager"
REFUSALS = {400, 401, 413, 415}
OPENAPI = OpenAPI.from_dict(load_spec())
WEBHOOK_RESPONSES = load_spec()["paths"][PATH]["post"]["responses"]
ACCEPTED = Draft202012Validator(load_spec()["components"]["schemas"]["WebhookAccepted"])
REFUSED = Draft202012Validator(load_spec()["components"]["schemas"]["Error"])
# Raise for a longer search (e.g. FUZZ_SCALE=20 overnight); 1 keeps the suite fast.
FUZZ_SCALE = float(os.environ.get("FUZZ_SCALE", "1"))

FUZZ = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def fuzz(examples: int) -> settings:
    """Hypothesis settings for ``examples`` requests; no deadline (the app shares the CPU)."""
    return settings(FUZZ, max_examples=max(1, round(examples * FUZZ_SCALE)))


# -- the harness -----------------------------------------------------------------------------


@dataclass
class Fuzzer:
    """Sends requests from hypothesis' thread through the test's event loop, and checks them."""

    client: TestClient[web.Request, web.Application]
    loop: asyncio.AbstractEventLoop
    stored: int = 0
    answers: dict[int, int] = field(default_factory=dict)

    @property
    def app(self) -> web.Application:
        return self.client.server.app  # type: ignore[return-value]

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout=60)

    def post(
        self,
        body: bytes,
        *,
        headers: dict[str, str] | None = None,
        content_type: str | None = "application/json",
    ) -> tuple[int, Any]:
        """POST ``body``; the status and the parsed JSON answer, checked against the description."""
        sent = dict(BEARER if headers is None else headers)
        if content_type is not None:
            sent["Content-Type"] = content_type

        async def send() -> tuple[int, bytes, dict[str, str]]:
            async with self.client.post(PATH, data=body, headers=sent) as resp:
                return resp.status, await resp.read(), dict(resp.headers)

        status, data, received = self.run(send())
        self.answers[status] = self.answers.get(status, 0) + 1
        assert status < 500, f"{status} for a request: {data[:300]!r}"
        # As documented (cheaply: the contract tests validate whole responses with openapi-core).
        assert str(status) in WEBHOOK_RESPONSES, status
        assert received.get("Content-Type", "").startswith("application/json")
        answer = json.loads(data)
        (ACCEPTED if status == 200 else REFUSED).validate(answer)
        if status == 200 and answer["status"] == "stored":
            self.stored += 1
        return status, answer

    def post_json(self, doc: Any, **kwargs: Any) -> tuple[int, Any]:
        return self.post(json.dumps(doc).encode(), **kwargs)

    def raw(self, request: bytes) -> int:
        """Send raw bytes as an HTTP request on a new connection; the status answered."""

        async def send() -> bytes:
            reader, writer = await asyncio.open_connection(
                self.client.server.host, self.client.server.port
            )
            try:
                writer.write(request)
                await writer.drain()
                return await reader.read()
            finally:
                writer.close()

        answer = self.run(send())
        status = int(answer.split(b" ", 2)[1])
        self.answers[status] = self.answers.get(status, 0) + 1
        return status

    def explore(self, test: Callable[[], None]) -> Awaitable[None]:
        """Run a hypothesis test off the event loop, so that the app keeps serving meanwhile."""
        return self.loop.run_in_executor(None, test)

    async def still_sound(self) -> None:
        """The service survived: store consistent, probes green, a new alert still processed."""
        await wait_processed(self.app)
        assert await store_problems(self.app) == []
        inbox = await self.app[STORE].read(inbox_size)
        assert inbox == self.stored, "every stored answer is one inbox row, and only those"
        assert self.app[WORKER].alive
        for probe in ("/healthz", "/readyz"):
            async with self.client.get(probe) as resp:
                assert resp.status == 200, probe
        group = '{}:{alertname="Afterwards"}'
        async with self.client.post(
            PATH, json=notification(group, [alert("after-fuzz")]), headers=BEARER
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "stored"
        await wait_processed(self.app)
        async with self.client.get(
            "/api/incidents", params={"status": "open"}, headers=BEARER
        ) as resp:
            assert group in [i["groupKey"] for i in (await resp.json())["incidents"]]


@contextmanager
def no_errors_logged() -> Iterator[None]:
    """Fail if the service logged an error (an unhandled exception or a failing worker)."""
    with structlog.testing.capture_logs() as logs:
        yield
    errors = [e for e in logs if e.get("log_level") in ("error", "critical", "exception")]
    assert errors == [], errors[:3]


@pytest_asyncio.fixture
async def fuzzer(tmp_path: Path, aiohttp_client: ClientFactory) -> Fuzzer:
    client = await aiohttp_client(served_app(tmp_path, max_body_bytes=MAX_BODY))
    return Fuzzer(client, asyncio.get_running_loop())


# -- strategies ------------------------------------------------------------------------------

GROUPS = ['{}:{alertname="PostHogErrors"}', '{}:{status_code="429"}', "{}/{}:{a=b}"]
FINGERPRINTS = ["3a1f0c2e9b8d7c6a", "0000000000000001", "ffeeddccbbaa9988", "f4"]

label_names = st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=30)
any_text = st.text(max_size=40)  # any Unicode: NUL, RTL marks, emoji, combining characters
huge_text = st.builds(lambda c, n: c * n, st.characters(), st.integers(1_000, 60_000))
label_sets = st.dictionaries(label_names | any_text, any_text, max_size=4)
# 2000-01-01 to 2100-01-01, in milliseconds (Alertmanager sends sub-second times)
times = st.integers(946_684_800_000, 4_102_444_800_000).map(
    lambda ms: datetime.fromtimestamp(ms / 1000, UTC)
)


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@st.composite
def valid_alerts(draw: st.DrawFn, *, fingerprints: st.SearchStrategy[str]) -> dict[str, Any]:
    status = draw(st.sampled_from(["firing", "resolved"]))
    ends = rfc3339(draw(times)) if status == "resolved" else draw(st.sampled_from([ZERO_TIME]))
    return draw(
        st.fixed_dictionaries(
            {
                "status": st.just(status),
                "labels": label_sets,
                "startsAt": times.map(rfc3339),
                "fingerprint": fingerprints,
            },
            optional={
                "annotations": label_sets,
                "endsAt": st.just(ends),
                "generatorURL": any_text,
                "unknownField": st.integers() | any_text,
            },
        )
    )


GROUP_KEYS = st.sampled_from(GROUPS) | st.text(min_size=1, max_size=80)
FINGERPRINT_VALUES = st.sampled_from(FINGERPRINTS) | st.text(min_size=1, max_size=128)


@st.composite
def valid_payloads(
    draw: st.DrawFn,
    *,
    groups: st.SearchStrategy[str] = GROUP_KEYS,
    fingerprints: st.SearchStrategy[str] = FINGERPRINT_VALUES,
    max_alerts: int = 4,
) -> dict[str, Any]:
    """Version 4 notifications as the description allows them: any Unicode, optional fields."""
    alerts = draw(
        st.lists(valid_alerts(fingerprints=fingerprints), min_size=1, max_size=max_alerts)
    )
    firing = any(a["status"] == "firing" for a in alerts)
    return draw(
        st.fixed_dictionaries(
            {
                "version": st.just("4"),
                "groupKey": groups,
                "status": st.just("firing" if firing else "resolved"),
                "receiver": any_text,
                "alerts": st.just(alerts),
            },
            optional={
                "truncatedAlerts": st.integers(0, 2**62),
                "groupLabels": label_sets,
                "commonLabels": label_sets,
                "commonAnnotations": label_sets,
                "externalURL": any_text,
                "newerAlertmanagerField": st.lists(st.integers(), max_size=3),
            },
        )
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)

WRONG_TYPES: list[Any] = [None, True, 0, -1, 1.5, "x", [], {}, ["4"], {"k": "v"}]
REQUIRED_TOP = ["version", "groupKey", "status", "receiver", "alerts"]
REQUIRED_ALERT = ["status", "labels", "startsAt", "fingerprint"]
STRING_FIELDS_TOP = ["groupKey", "receiver", "externalURL"]
STRING_FIELDS_ALERT = ["fingerprint", "generatorURL"]
LABEL_FIELDS_TOP = ["groupLabels", "commonLabels", "commonAnnotations"]
LABEL_FIELDS_ALERT = ["labels", "annotations"]


@dataclass(frozen=True)
class Mutant:
    """A request body, what it was made from, and whether it must be refused."""

    body: bytes
    how: str
    must_refuse: bool


def _dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()


@st.composite
def mutants(draw: st.DrawFn) -> Mutant:
    """A valid notification broken in one way (or, where marked, changed in a way that is not)."""
    doc = draw(valid_payloads(max_alerts=2))
    first = doc["alerts"][0]
    kind = draw(
        st.sampled_from(
            [
                "drop_required",
                "drop_alert_required",
                "wrong_version",
                "string_field_wrong_type",
                "label_set_wrong_type",
                "label_value_not_string",
                "alerts_wrong_type",
                "alert_not_object",
                "bad_status",
                "bad_time",
                "bad_lengths",
                "negative_count",
                "non_finite_number",
                "duplicate_key",
                "truncated_json",
                "trailing_garbage",
                "other_encoding",
                "count_as_string",
            ]
        )
    )
    if kind == "drop_required":
        key = draw(st.sampled_from(REQUIRED_TOP))
        del doc[key]
        return Mutant(_dump(doc), f"{kind}:{key}", True)
    if kind == "drop_alert_required":
        key = draw(st.sampled_from(REQUIRED_ALERT))
        del first[key]
        return Mutant(_dump(doc), f"{kind}:{key}", True)
    if kind == "wrong_version":
        doc["version"] = draw(
            st.sampled_from(["3", "5", "", "4.0", " 4", "v4", 4, 4.0, *WRONG_TYPES])
        )
        return Mutant(_dump(doc), f"{kind}:{doc['version']!r}", True)
    if kind == "string_field_wrong_type":
        target, key = draw(
            st.sampled_from(
                [(doc, k) for k in STRING_FIELDS_TOP] + [(first, k) for k in STRING_FIELDS_ALERT]
            )
        )
        target[key] = draw(st.sampled_from([v for v in WRONG_TYPES if not isinstance(v, str)]))
        return Mutant(_dump(doc), f"{kind}:{key}", True)
    if kind == "label_set_wrong_type":
        target, key = draw(
            st.sampled_from(
                [(doc, k) for k in LABEL_FIELDS_TOP] + [(first, k) for k in LABEL_FIELDS_ALERT]
            )
        )
        target[key] = draw(st.sampled_from([v for v in WRONG_TYPES if not isinstance(v, dict)]))
        return Mutant(_dump(doc), f"{kind}:{key}", True)
    if kind == "label_value_not_string":
        value = draw(st.sampled_from([None, True, 7, 7.5, ["a"], {"a": "b"}]))
        first["labels"] = {**first["labels"], "status_code": value}
        return Mutant(_dump(doc), kind, True)
    if kind == "alerts_wrong_type":
        doc["alerts"] = draw(st.sampled_from([None, "alerts", 3, {}, []]))
        return Mutant(_dump(doc), kind, True)
    if kind == "alert_not_object":
        doc["alerts"].append(draw(st.sampled_from([None, "alert", 3, [], [first]])))
        return Mutant(_dump(doc), kind, True)
    if kind == "bad_status":
        bad = draw(st.sampled_from(["FIRING", "Resolved", "pending", "", "inactive", 1, None]))
        target = draw(st.sampled_from([doc, first]))
        target["status"] = bad
        return Mutant(_dump(doc), f"{kind}:{bad!r}", True)
    if kind == "bad_time":
        bad = draw(
            st.sampled_from(
                ["", "now", "yesterday", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z"]
            )
            | st.sampled_from([None, True, [], {}, "25:00", 1_767_607_200, 1.5e9])
            # without an offset, or a date alone: not RFC 3339, and not comparable
            | st.sampled_from(["2026-01-05T10:00:00", "2026-01-05", "2026-01-05 10:00:00"])
        )
        key = "startsAt" if bad is None else draw(st.sampled_from(["startsAt", "endsAt"]))
        first[key] = bad  # (a null endsAt is allowed: not ended)
        return Mutant(_dump(doc), f"{kind}:{bad!r}", True)
    if kind == "bad_lengths":
        key, value = draw(
            st.sampled_from([("fingerprint", ""), ("fingerprint", "f" * 129), ("groupKey", "")])
        )
        (first if key == "fingerprint" else doc)[key] = value
        return Mutant(_dump(doc), f"{kind}:{key}", True)
    if kind == "negative_count":
        doc["truncatedAlerts"] = draw(st.integers(max_value=-1))
        return Mutant(_dump(doc), kind, True)
    if kind == "non_finite_number":
        literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        where = draw(st.sampled_from(["truncatedAlerts", "label", "startsAt"]))
        if where == "truncatedAlerts":
            doc["truncatedAlerts"] = "__NONFINITE__"
        elif where == "label":
            first["labels"] = {**first["labels"], "value": "__NONFINITE__"}
        else:
            first["startsAt"] = "__NONFINITE__"
        body = _dump(doc).replace(b'"__NONFINITE__"', literal.encode())
        return Mutant(body, f"{kind}:{where}:{literal}", True)
    if kind == "duplicate_key":
        # JSON parsers keep the last of duplicate keys: the last value decides.
        last_valid = draw(st.booleans())
        key, good, bad = draw(
            st.sampled_from([("version", "4", "3"), ("status", doc["status"], "unknown")])
        )
        doc[key] = bad if last_valid else good
        text = _dump(doc)[:-1] + f', "{key}": {json.dumps(good if last_valid else bad)}}}'.encode()
        return Mutant(text, f"{kind}:{key}:last_valid={last_valid}", not last_valid)
    if kind == "truncated_json":
        body = _dump(doc)
        cut = draw(st.integers(0, len(body) - 1))
        return Mutant(body[:cut], kind, True)
    if kind == "trailing_garbage":
        garbage = draw(st.sampled_from([b"}", b"]", b",", b"{}", b"x", b'"', b"\x00"]))
        return Mutant(_dump(doc) + garbage, kind, True)
    if kind == "other_encoding":
        codec = draw(st.sampled_from(["utf-16", "utf-32"]))
        return Mutant(json.dumps(doc).encode(codec), f"{kind}:{codec}", True)
    # count_as_string: a count that is not a JSON integer (a string, a boolean, a fraction),
    # or one that is, though written as a float
    count = draw(st.integers(0, 10**30))
    literal, refuse = draw(
        st.sampled_from(
            [
                (json.dumps(str(count)), True),
                ("true", True),
                ("false", True),
                (f"{count}.5", True),
                # written as a float, a count is taken only below 2**52, where a fraction shows
                (f"{count}.0", count >= 2**52),
                ("1e20", True),
                ("5.0E3", False),
            ]
        )
    )
    doc["truncatedAlerts"] = "__COUNT__"
    body = _dump(doc).replace(b'"__COUNT__"', literal.encode())
    return Mutant(body, f"{kind}:{literal}", refuse)


def nested(depth: int, *, kind: str) -> bytes:
    if kind == "arrays":
        return b"[" * depth + b"]" * depth
    if kind == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    # deep nesting inside an otherwise valid notification's labels
    doc = notification("nested", [alert("n1")])
    body = _dump(doc)
    deep = b'{"a":' * depth + b'"x"' + b"}" * depth
    return body.replace(b'"annotations": {', b'"annotations": {"deep": ' + deep + b", ", 1)


# -- a reference model of incidents, to check the store against ------------------------------


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.fromisoformat(text)
    return None if parsed.year == 1 else parsed


@dataclass
class IncidentModel:
    """What the incident rules say the receiver holds after a sequence of notifications."""

    seen: set[tuple[Any, ...]] = field(default_factory=set)
    open: dict[str, dict[str, str]] = field(default_factory=dict)
    closed: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def receive(self, doc: dict[str, Any]) -> str:
        """Apply one notification; ``stored`` or ``duplicate``, as the webhook must answer."""
        states = sorted(
            (
                a["fingerprint"],
                a["status"],
                str(_moment(a["startsAt"])),
                str(_moment(a.get("endsAt"))),
            )
            for a in doc["alerts"]
        )
        key = (doc["groupKey"], *states)
        if key in self.seen:
            return "duplicate"
        self.seen.add(key)
        group = doc["groupKey"]
        firing = any(a["status"] == "firing" for a in doc["alerts"])
        if group not in self.open:
            if not firing:
                return "stored"  # news of resolution for nothing open: nothing changes
            self.open[group] = {}
        alerts = self.open[group]
        for a in doc["alerts"]:
            alerts[a["fingerprint"]] = a["status"]
        if "firing" not in alerts.values():
            self.closed.setdefault(group, []).append(self.open.pop(group))
        return "stored"

    def incidents(self) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
        found = [(g, "open", tuple(sorted(a.items()))) for g, a in self.open.items()]
        for group, closed in self.closed.items():
            found += [(group, "resolved", tuple(sorted(a.items()))) for a in closed]
        return sorted(found)


async def incidents_via_api(
    client: TestClient[web.Request, web.Application],
) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """Every incident as the API serves it, each validated against the description."""
    async with client.get("/api/incidents", params={"limit": "1000"}, headers=BEARER) as resp:
        listed = (await resp.json())["incidents"]
    assert len(listed) < 1000, "more incidents than one page: lower FUZZ_SCALE"
    found = []
    for summary in listed:
        path = f"/api/incidents/{summary['id']}"
        async with client.get(path, headers=BEARER) as resp:
            data = await resp.read()
            OPENAPI.validate_response(
                MockRequest("http://localhost", "get", path, headers=BEARER),
                MockResponse(data, status_code=resp.status, headers=dict(resp.headers)),
            )
        incident = json.loads(data)
        alerts = tuple(sorted((a["fingerprint"], a["status"]) for a in incident["alerts"]))
        found.append((incident["groupKey"], incident["status"], alerts))
    return sorted(found)


# -- the properties --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_valid_notifications_are_always_accepted_and_follow_the_incident_rules(
    fuzzer: Fuzzer,
) -> None:
    """Every valid notification is a 200, stored or duplicate as the incident rules say."""
    model = IncidentModel()

    @fuzz(400)
    @given(valid_payloads())
    def accepted(doc: dict[str, Any]) -> None:
        status, answer = fuzzer.post_json(doc)
        assert status == 200, answer
        assert answer == {"status": model.receive(doc), "alerts": len(doc["alerts"])}

    with no_errors_logged():
        await fuzzer.explore(accepted)
        await wait_processed(fuzzer.app)
        assert await incidents_via_api(fuzzer.client) == model.incidents()
        await fuzzer.still_sound()


@pytest.mark.asyncio
async def test_unicode_strings_up_to_the_limits_are_accepted_and_longer_ones_refused(
    fuzzer: Fuzzer,
) -> None:
    """Label values, annotations, label names and group keys of any Unicode are 200 up to
    their limit; one character more is a 400 naming the field and the limit."""
    limits = [
        (MAX_LABEL_VALUE_CHARS, "alerts.0.labels.huge"),
        (MAX_ANNOTATION_VALUE_CHARS, "alerts.0.annotations.description"),
        (MAX_GROUP_KEY_CHARS, "groupKey"),
        (MAX_LABEL_NAME_CHARS, "alerts.0.labels"),
    ]

    @fuzz(100)
    @given(
        doc=valid_payloads(max_alerts=2),
        char=st.characters(),
        where=st.sampled_from(range(4)),
        over=st.booleans(),
    )
    def bounded(doc: dict[str, Any], char: str, where: int, over: bool) -> None:
        limit, field = limits[where]
        text = char * (limit + 1 if over else limit)
        if where == 0:
            doc["alerts"][0]["labels"] = {**doc["alerts"][0]["labels"], "huge": text}
        elif where == 1:
            doc["alerts"][0]["annotations"] = {"description": text}
        elif where == 2:
            doc["groupKey"] = text
        else:
            doc["alerts"][0]["labels"] = {text: "value"}
        status, answer = fuzzer.post_json(doc)
        if not over:
            assert status == 200, answer
            return
        assert status == 400, answer
        assert field in answer["error"]
        assert str(limit) in answer["error"]

    with no_errors_logged():
        await fuzzer.explore(bounded)
        await fuzzer.still_sound()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("startsAt", "9999-12-31T23:59:59Z", "2199"),
        ("startsAt", "1969-12-31T23:59:59Z", "1970"),
        ("endsAt", "9999-12-31T23:59:59Z", "2199"),
    ],
)
async def test_times_that_cannot_be_real_are_refused_at_the_door(
    fuzzer: Fuzzer, field: str, value: str, limit: str
) -> None:
    """A start in the year 9999 (or before the epoch) is a 400 naming the field, not an
    incident whose triage fails later where nobody hears of it."""
    doc = {
        "version": "4",
        "groupKey": "{}:{}",
        "status": "firing",
        "receiver": "r",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "A"},
                "startsAt": "2026-01-05T10:00:00Z",
                "fingerprint": "f1",
                field: value,
            }
        ],
    }
    status, answer = await asyncio.to_thread(fuzzer.post_json, doc)
    assert status == 400, answer
    assert f"alerts.0.{field}" in answer["error"]
    assert limit in answer["error"]


@pytest.mark.asyncio
async def test_more_labels_than_the_limit_are_refused(fuzzer: Fuzzer) -> None:
    """An alert with more labels than the limit is a 400 that says how many are allowed."""
    doc = {
        "version": "4",
        "groupKey": "{}:{}",
        "status": "firing",
        "receiver": "r",
        "alerts": [
            {
                "status": "firing",
                "labels": {f"l{i}": "v" for i in range(MAX_LABELS + 1)},
                "startsAt": "2026-01-05T10:00:00Z",
                "fingerprint": "f1",
            }
        ],
    }
    status, answer = await asyncio.to_thread(fuzzer.post_json, doc)
    assert status == 400, answer
    assert "alerts.0.labels" in answer["error"]
    assert str(MAX_LABELS) in answer["error"]


@pytest.mark.asyncio
async def test_broken_notifications_are_refused_and_not_stored(fuzzer: Fuzzer) -> None:
    """A notification broken in any one way is a 400 with a reason, and nothing is stored."""

    @fuzz(800)
    @given(mutants())
    def refused(mutant: Mutant) -> None:
        status, answer = fuzzer.post(mutant.body)
        if mutant.must_refuse:
            assert status == 400, (mutant.how, answer)
            assert answer["error"]
        else:
            assert status == 200, (mutant.how, answer)

    with no_errors_logged():
        await fuzzer.explore(refused)
        await fuzzer.still_sound()


@pytest.mark.asyncio
async def test_random_bytes_and_json_are_refused(fuzzer: Fuzzer) -> None:
    """Random bytes and arbitrary JSON documents are a 400, never a 5xx, and nothing is stored."""

    @fuzz(700)
    @given(st.binary(max_size=2048) | json_values.map(_dump))
    def refused(body: bytes) -> None:
        status, answer = fuzzer.post(body)
        assert status == 400, (body[:200], answer)

    with no_errors_logged():
        await fuzzer.explore(refused)
        await fuzzer.still_sound()


@pytest.mark.asyncio
async def test_deeply_nested_json_is_refused(fuzzer: Fuzzer) -> None:
    """JSON nested up to hundreds of thousands of levels (under the size limit) is a 400."""

    @fuzz(100)
    @given(depth=st.integers(1, 200_000), kind=st.sampled_from(["arrays", "objects", "in_labels"]))
    def refused(depth: int, kind: str) -> None:
        body = nested(depth, kind=kind)
        status, answer = fuzzer.post(body)
        if len(body) > MAX_BODY:
            assert status == 413
        elif kind == "in_labels" and depth == 1:
            assert status == 400  # an annotation that is an object, not a string
        else:
            assert status == 400, (kind, depth, answer)

    with no_errors_logged():
        await fuzzer.explore(refused)
        await fuzzer.still_sound()


@pytest.mark.asyncio
async def test_enormous_alert_groups_under_the_size_limit_are_stored_and_applied(
    fuzzer: Fuzzer,
) -> None:
    """A group of thousands of alerts is a 200 under the size limit, a 413 over it."""

    @fuzz(8)
    @given(count=st.integers(500, 6_000), pad=st.integers(0, 120))
    def accepted(count: int, pad: int) -> None:
        alerts = [
            alert(f"{i:016x}", labels={"alertname": "PostHogErrors", "i": str(i), "p": "x" * pad})
            for i in range(count)
        ]
        body = _dump(notification(f"{{}}:{{big={count}-{pad}}}", alerts))
        status, answer = fuzzer.post(body)
        assert status == (200 if len(body) <= MAX_BODY else 413), answer
        if status == 200:
            assert answer == {"status": "stored", "alerts": count}

    with no_errors_logged():
        await fuzzer.explore(accepted)
        await fuzzer.still_sound()
        biggest = 0
        async with fuzzer.client.get("/api/incidents", params={"limit": "20"}, headers=BEARER) as r:
            for summary in (await r.json())["incidents"]:
                async with fuzzer.client.get(
                    f"/api/incidents/{summary['id']}", headers=BEARER
                ) as i:
                    biggest = max(biggest, len((await i.json())["alerts"]))
        if fuzzer.answers.get(200, 0) > 1:  # the one after the fuzzing is small
            assert biggest >= 500


GOOD_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
]
BAD_TYPES = [
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "application/jsonx",
    "application/problem+json",
    "*/*",
    "",
]
GOOD_AUTH = [
    f"Bearer {TOKEN}",
    f"bearer {TOKEN}",
    f"Bearer   {TOKEN}  ",
    basic_header(BASIC_USER, BASIC_PASSWORD)["Authorization"],
]


def _bad_auth() -> st.SearchStrategy[str]:
    b64 = st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
    printable = st.text(alphabet=string.printable.strip("\r\n\x0b\x0c") + "é€😀", max_size=60)
    return st.one_of(
        st.sampled_from(
            [
                "",
                "Bearer",
                "Bearer ",
                f"Bearer {TOKEN}x",
                f"Bearer {TOKEN[:-1]}",
                f"Token {TOKEN}",
                f"Digest {TOKEN}",
                f"Basic {TOKEN}",
                TOKEN,
                f"Bearer{TOKEN}",
                "Basic",
                "Basic ====",
                "Basic !!!notbase64",
                basic_header(BASIC_USER, "wrong")["Authorization"],
                basic_header("someone", BASIC_PASSWORD)["Authorization"],
                basic_header(BASIC_USER, BASIC_PASSWORD + "\x00")["Authorization"],
            ]
        ),
        st.tuples(st.sampled_from(["Bearer ", "Basic ", ""]), printable).map("".join),
        b64.map(lambda s: f"Basic {s}"),
    ).filter(lambda h: h not in GOOD_AUTH)


@pytest.mark.asyncio
async def test_header_abuse_is_refused_with_the_right_status(fuzzer: Fuzzer) -> None:
    """Wrong content types get 415 and bogus credentials 401, valid ones 200; never a 5xx."""
    good_body = notification("{}:{headers}", [alert("h1")])

    @fuzz(500)
    @given(
        auth=st.sampled_from(GOOD_AUTH) | _bad_auth() | st.none(),
        content_type=st.sampled_from(GOOD_TYPES + BAD_TYPES) | st.none(),
        request_id=st.none()
        | st.text(alphabet=string.printable.strip("\r\n\x0b\x0c"), max_size=300),
    )
    def answered(auth: str | None, content_type: str | None, request_id: str | None) -> None:
        headers = {} if auth is None else {"Authorization": auth}
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        status, _ = fuzzer.post(_dump(good_body), headers=headers, content_type=content_type)
        if auth not in GOOD_AUTH:
            assert status == 401
        elif content_type not in GOOD_TYPES:
            assert status == 415
        else:
            assert status == 200

    with no_errors_logged():
        await fuzzer.explore(answered)
        await fuzzer.still_sound()


@pytest.mark.asyncio
async def test_raw_header_bytes_never_cause_a_server_error(fuzzer: Fuzzer) -> None:
    """Arbitrary bytes in Authorization, Content-Type and other headers get a 4xx, never a 5xx."""
    body = _dump(notification("{}:{raw}", [alert("r1")]))
    schemes = st.sampled_from([b"", b"Bearer ", b"bearer ", b"Basic ", b"Digest "])
    header_bytes = st.tuples(schemes, st.binary(max_size=80)).map(
        lambda parts: (parts[0] + parts[1]).replace(b"\r", b"").replace(b"\n", b"")
    )

    @fuzz(500)
    @given(
        name=st.sampled_from([b"Authorization", b"Content-Type", b"X-Request-Id", b"X-Other"]),
        value=header_bytes,
        authorized=st.booleans(),
    )
    def answered(name: bytes, value: bytes, authorized: bool) -> None:
        headers = [b"Host: localhost", b"Connection: close", b"Content-Length: %d" % len(body)]
        if name != b"Content-Type":
            headers.append(b"Content-Type: application/json")
        if authorized and name != b"Authorization":
            headers.append(f"Authorization: Bearer {TOKEN}".encode())
        headers.append(name + b": " + value)
        request = b"POST " + PATH.encode() + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
        status = fuzzer.raw(request + body)
        assert status < 500, (name, value)
        assert status in {200} | REFUSALS

    with no_errors_logged():
        await fuzzer.explore(answered)
    # raw requests are not counted as stored answers: count what is in the inbox instead
    fuzzer.stored = await fuzzer.app[STORE].read(inbox_size)
    assert fuzzer.stored <= 1  # the same notification each time: stored once, then duplicates
    await fuzzer.still_sound()


@pytest.mark.asyncio
async def test_non_ascii_authorization_is_refused_not_a_server_error(fuzzer: Fuzzer) -> None:
    """Regression: an Authorization header with non-ASCII or non-UTF-8 bytes is a 401, not a 500."""
    body = _dump(notification("{}:{r}", [alert("r1")]))
    for value in (
        b"Bearer \xff\xfe",
        b"Basic \xc3\xa9\xc3\xa9",
        b"Basic \xff",
        "Bearer é".encode(),
    ):
        request = (
            b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\nAuthorization: %s\r\n\r\n"
            % (len(body), value)
        )
        status = await asyncio.get_running_loop().run_in_executor(None, fuzzer.raw, request + body)
        assert status == 401, value
    api = (
        b"GET /api/incidents HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\r\n\r\n"
    )
    assert await asyncio.get_running_loop().run_in_executor(None, fuzzer.raw, api) == 401


def test_reference_model_follows_the_incident_rules() -> None:
    """The model used as the oracle opens, updates, resolves and deduplicates as documented."""
    model = IncidentModel()
    firing = notification("g", [alert("a"), alert("b")])
    assert model.receive(firing) == "stored"
    assert model.receive(firing) == "duplicate"
    one_done = notification("g", [alert("a", "resolved", ends_at="2026-01-05T10:01:00Z")])
    assert model.receive(one_done) == "stored"
    assert model.incidents() == [("g", "open", (("a", "resolved"), ("b", "firing")))]
    both_done = notification(
        "g",
        [
            alert("a", "resolved", ends_at="2026-01-05T10:01:00Z"),
            alert("b", "resolved", ends_at="2026-01-05T10:02:00Z"),
        ],
    )
    assert model.receive(both_done) == "stored"
    assert (
        model.receive(notification("h", [alert("x", "resolved", ends_at="2026-01-05T10:00:00Z")]))
        == "stored"
    )
    assert model.incidents() == [("g", "resolved", (("a", "resolved"), ("b", "resolved")))]


@pytest.mark.asyncio
async def test_incident_queries_with_any_parameters_never_fail(fuzzer: Fuzzer) -> None:
    """Any ``status``, ``limit`` or incident id on the incidents API is a 200, 400 or 404."""
    for group in GROUPS:
        async with fuzzer.client.post(
            PATH, json=notification(group, [alert("q1")]), headers=BEARER
        ) as resp:
            assert resp.status == 200
        fuzzer.stored += 1
    await wait_processed(fuzzer.app)
    async with fuzzer.client.get("/api/incidents", headers=BEARER) as resp:
        ids = [i["id"] for i in (await resp.json())["incidents"]]
    numbers = st.integers().map(str) | st.sampled_from(["9" * 5000, "1e3", " 7 ", "0x10", "½"])

    def get(path: str, params: dict[str, str]) -> tuple[int, bytes]:
        async def send() -> tuple[int, bytes]:
            async with fuzzer.client.get(path, params=params, headers=BEARER) as resp:
                return resp.status, await resp.read()

        return fuzzer.run(send())

    @fuzz(300)
    @given(
        status=st.none() | st.sampled_from(["open", "resolved"]) | any_text,
        limit=st.none() | numbers | any_text,
        incident=st.sampled_from(ids) | st.text(min_size=1, max_size=100),
        suffix=st.sampled_from(["", "/postmortem", "/chart.svg", "/evidence"]),
    )
    def answered(status: str | None, limit: str | None, incident: str, suffix: str) -> None:
        params = {k: v for k, v in (("status", status), ("limit", limit)) if v is not None}
        code, data = get("/api/incidents", params)
        valid_status = status in (None, "open", "resolved")
        assert code == (200 if valid_status and _is_int(limit) else 400), (params, data[:200])
        code, data = get(f"/api/incidents/{quote(incident, safe='')}{suffix}", {})
        assert code == (200 if incident in ids else 404), (incident, suffix, data[:200])

    with no_errors_logged():
        await fuzzer.explore(answered)
        await fuzzer.still_sound()


def _is_int(text: str | None) -> bool:
    if text is None:
        return True
    try:
        int(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("truncatedAlerts", True),
        ("truncatedAlerts", "3"),
        ("truncatedAlerts", 3.5),
        ("truncatedAlerts", 4503599627370496.5),  # parses as ...496.0: no room for a fraction
        ("startsAt", 1_767_607_200),
        ("startsAt", "2026-01-05T10:00:00"),
        ("startsAt", "2026-01-05"),
        ("endsAt", "2026-01-05T10:00:00"),
    ],
)
@pytest.mark.asyncio
async def test_values_the_description_forbids_are_refused(
    fuzzer: Fuzzer, field: str, value: Any
) -> None:
    """Regression: a count that is not an integer, or a time that is a number or has no offset,
    is a 400 (lenient parsing took them, and naive times cannot be compared with aware ones)."""
    doc = notification("{}:{strict}", [alert("s1"), alert("s2")])
    (doc if field == "truncatedAlerts" else doc["alerts"][1])[field] = value
    status, answer = await asyncio.get_running_loop().run_in_executor(None, fuzzer.post_json, doc)
    assert status == 400, answer
    assert field in answer["error"]
    await fuzzer.still_sound()


@pytest.mark.parametrize("literal", ["5.0", "5.0E3", "0"])
@pytest.mark.asyncio
async def test_integer_counts_written_as_floats_are_accepted(fuzzer: Fuzzer, literal: str) -> None:
    """A count JSON calls an integer (``5.0``, ``5.0E3``) is accepted, as the description says."""
    doc = notification("{}:{counts}", [alert("c1")])
    doc["truncatedAlerts"] = "__COUNT__"
    body = json.dumps(doc).encode().replace(b'"__COUNT__"', literal.encode())
    status, answer = await asyncio.get_running_loop().run_in_executor(None, fuzzer.post, body)
    assert status == 200, answer
    await fuzzer.still_sound()
