"""Alert data is data: hostile label values reach Slack, PagerDuty and the status page as
text only, within each service's limits, through the real outbox against the fakes."""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from receiver import links
from receiver.config import UiSettings
from receiver.notify import IncidentSnapshot
from tests.fakes.slack import markup
from tests.notify_harness import (
    COMMANDER,
    PROMETHEUS_URL,
    PUBLIC_URL,
    Clock,
    Fakes,
    Harness,
    clock_fixture,  # noqa: F401 - fixture
    fakes_fixture,  # noqa: F401 - fixture
    notify_settings,
    snapshot,
)

MARK = "zqhostile"  # in every hostile value, so any leak is found by one search
HOSTILE: dict[str, str] = {
    "html": f"<img src=x onerror=alert('{MARK}')><b>{MARK}</b>",
    "broadcast": f"<!channel> <!here> <!everyone> {MARK}",
    "mention": f"<@U123> <@W999|boss> <!subteam^S999> {MARK}",
    "link": f"<http://evil.example/{MARK}|click here>",
    "lines": f"{MARK}\nStatus: RESOLVED\r\nIncident commander: <@U666>",
    "control": f"bell\x07 esc\x1b[31m nul\x00 rtl\u202e{MARK} sep\u2028end",
    "entities": f"&lt;!channel&gt; &amp; {MARK}",
    "long": MARK + "A" * 100_000,
}
TITLE = " ".join(HOSTILE[k] for k in ("broadcast", "mention", "link", "entities", "lines", "html"))
ACTION = {
    "id": "act-1",
    "name": "enable_fallback",
    "outcome": "applied",
    "target": "deployment/posthog-integration",
    "detail": HOSTILE["link"] + HOSTILE["lines"],
}
INCIDENT_URL = f"{PUBLIC_URL}/incidents/inc-1"


def hostile(clock: Clock, **changes: Any) -> IncidentSnapshot:
    """An incident whose title, reason and labels all come from a hostile alert."""
    fields: dict[str, Any] = {
        "title": TITLE,
        "decision_summary": HOSTILE["broadcast"] + HOSTILE["control"] + HOSTILE["long"],
        "decision_steps": tuple(HOSTILE.values()),
        "labels": {"alertname": "PostHogErrorsHigh", **HOSTILE},
    }
    return snapshot(clock, **(fields | changes))


@asynccontextmanager
async def running(
    tmp_path: Path, fakes: Fakes, clock: Clock, *, ui: UiSettings | None = None, **options: Any
) -> AsyncIterator[Harness]:
    harness = Harness(
        tmp_path / "receiver.sqlite3", notify_settings(fakes, **options), clock, ui=ui
    )
    await harness.open()
    try:
        yield harness
    finally:
        await harness.close()


async def lifecycle(h: Harness, opened: IncidentSnapshot, clock: Clock) -> None:
    """Open, act, resolve, everything delivered."""
    await h.notifier.incident_opened(opened)
    acted = dataclasses.replace(opened, actions=(ACTION,))
    await h.notifier.action_taken(acted, ACTION)
    await h.notifier.incident_resolved(
        dataclasses.replace(acted, status="resolved", resolved_at=clock.t)
    )
    await h.drain()


def controls(text: str) -> list[str]:
    """Control and line-separator characters in ``text`` other than its own line breaks."""
    return [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]


# -- Slack --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_slack_shows_hostile_alert_data_as_text(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Labels, title, reason and action detail never ping, link or add a line in Slack: the
    only mentions are config's, the only link is the incident's."""
    async with running(
        tmp_path, fakes, clock, only=("slack",), slack={"mentions": ["<!here>"]}
    ) as h:
        await lifecycle(h, hostile(clock), clock)

    assert fakes.slack.rejected == []
    opened, action, resolved = fakes.slack.texts
    assert fakes.slack.sections == [opened, action, resolved]
    # What Slack acts on: config's commander, <!here> when the incident opens, the link.
    assert markup(opened) == ["!here", COMMANDER[1:-1], INCIDENT_URL]
    assert markup(action) == markup(resolved) == [COMMANDER[1:-1], INCIDENT_URL]
    for text in (opened, action, resolved):
        lines = text.splitlines()
        assert len(lines) == 7  # a newline in a label forged no line
        assert [line.split(":")[0] for line in lines[1:]] == [
            "Status",
            "Impact",
            "Current action",
            "Next update",
            "Incident commander",
            "Incident",
        ]
        assert lines[-1].endswith(f"<{INCIDENT_URL}>")
        assert len(text) <= 3000
        assert controls(text) == []
    # Shown as typed: escaped once, and an entity in a label is shown, not decoded.
    assert "Incident: &lt;!channel&gt; &lt;!here&gt;" in opened
    assert "&amp;lt;!channel&amp;gt; &amp;amp;" in opened
    assert "&lt;http://evil.example/" in action
    assert "Status: RESOLVED" not in opened.splitlines()


@pytest.mark.asyncio
async def test_slack_keeps_the_incident_link_whatever_the_lengths(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """A 100 KB title of characters Slack escapes still fits one section with the link."""
    huge = snapshot(clock, title="<&>" * 40_000, decision_summary="&" * 100_000)
    async with running(
        tmp_path,
        fakes,
        clock,
        only=("slack",),
        slack={"mentions": ["<!subteam^S0ONCALL01|posthog-oncall>"] * 10},
    ) as h:
        await h.notifier.incident_opened(huge)
        await h.drain()
    assert fakes.slack.rejected == []
    (text,) = fakes.slack.texts
    assert len(text) <= 3000
    assert text.endswith(f"… <{INCIDENT_URL}>")
    # Cut between entities, never inside one.
    title = text.splitlines()[-1].removeprefix("Incident: ")
    assert title.startswith("&lt;&amp;&gt;")
    assert title.replace("&lt;", "").replace("&amp;", "").replace("&gt;", "")[:1] == "…"


# -- PagerDuty ----------------------------------------------------------------------------


def hrefs(event: dict[str, Any]) -> list[str]:
    return [link["href"] for link in event["links"]]


@pytest.mark.asyncio
async def test_pagerduty_summary_is_one_bounded_line(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """The summary shows the hostile title on one line, without control characters, in
    1,024 characters, and keeps the error class at its end."""
    title = HOSTILE["lines"] + HOSTILE["control"] + HOSTILE["long"]
    async with running(tmp_path, fakes, clock, only=("pagerduty",)) as h:
        await lifecycle(h, hostile(clock, title=title), clock)
    assert fakes.pagerduty.rejected == []
    trigger = fakes.pagerduty.alerts[0]
    summary = trigger["payload"]["summary"]
    assert summary.startswith(f"[P1] PostHog integration: {MARK} Status: RESOLVED Incident")
    assert summary.endswith("… (upstream_error)")
    assert len(summary) == 1024
    assert controls(summary) == []
    assert "\n" not in summary
    change = fakes.pagerduty.changes[0]["payload"]["summary"]
    assert controls(change) == []
    assert "\n" not in change
    assert len(change) <= 1024


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "generator_url",
    [
        "javascript:alert(document.cookie)//http://prometheus.example.com:9090/",
        "http://evil.example.com/graph?g0.expr=up",
        "https://prometheus.example.com.evil.example/graph",
        "http://evil.example.com@evil.example/graph",
        "http://evil.example\\@prometheus.example.com:9090/graph",
        "http://user@prometheus.example.com:9090/graph",
        "HTTP://evil.example/graph",
        "http://prometheus.example.com:9090/graph?g0.expr=up\nhttp://evil.example",
        "ftp://prometheus.example.com/graph",
        "http://prometheus.example.com:9090/" + "x" * 10_000,
    ],
)
async def test_pagerduty_links_only_to_allowed_hosts(
    tmp_path: Path, fakes: Fakes, clock: Clock, generator_url: str
) -> None:
    """A generatorURL that is not http(s), points elsewhere than the configured Prometheus
    or Alertmanager, or is malformed is left out; config's links and the incident's stay."""
    async with running(tmp_path, fakes, clock, only=("pagerduty",)) as h:
        await lifecycle(h, snapshot(clock, generator_url=generator_url), clock)
    assert fakes.pagerduty.rejected == []
    assert hrefs(fakes.pagerduty.alerts[0]) == [
        "https://wiki.example.com/runbooks/posthog",
        "http://alertmanager.example.com:9093",
        "https://grafana.example.com/d/posthog",
        INCIDENT_URL,
    ]


@pytest.mark.asyncio
async def test_pagerduty_links_follow_configured_hosts(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """By default the Prometheus and Alertmanager hosts are linked; ``link_hosts`` replaces
    them, so only the hosts it names are linked."""
    generator = f"{PROMETHEUS_URL}/graph?g0.expr=up"
    promql = "https://prom.internal.example/graph?g0.expr=up"
    async with running(tmp_path, fakes, clock, only=("pagerduty",)) as h:
        await h.notifier.incident_opened(snapshot(clock, generator_url=generator))
        await h.drain()
    async with running(
        tmp_path,
        fakes,
        clock,
        only=("pagerduty",),
        pagerduty={"link_hosts": ["PROM.internal.example"]},
    ) as h:
        await h.notifier.incident_opened(snapshot(clock, "inc-2", generator_url=promql))
        await h.notifier.incident_opened(snapshot(clock, "inc-3", generator_url=generator))
        await h.drain()
    by_incident = {a["client_url"]: a for a in fakes.pagerduty.alerts}
    default, configured, elsewhere = (
        by_incident[f"{PUBLIC_URL}/incidents/inc-{n}"] for n in (1, 2, 3)
    )
    assert generator in hrefs(default)
    assert "http://alertmanager.example.com:9093" in hrefs(default)
    assert promql in hrefs(configured)
    assert "http://alertmanager.example.com:9093" not in hrefs(configured)
    assert generator not in hrefs(elsewhere)


@pytest.mark.asyncio
@pytest.mark.parametrize("char", ["A", "😀"])
async def test_pagerduty_events_stay_under_512_kb(
    tmp_path: Path, fakes: Fakes, clock: Clock, char: str
) -> None:
    """Megabytes of labels, reasons and action details are cut, largest first, so PagerDuty
    accepts the events; they say so, and keep the summary, links and the incident's URL."""
    labels = {"alertname": "PostHogErrorsHigh", "service": "posthog-integration"}
    labels |= {f"huge{i}": char * 100_000 for i in range(10)}
    big = snapshot(
        clock,
        labels=labels,
        decision_summary=char * 300_000,
        decision_steps=tuple(f"step {i}" for i in range(2000)),
    )
    detailed = {**ACTION, "detail": char * 700_000}
    async with running(tmp_path, fakes, clock, only=("pagerduty",)) as h:
        await h.notifier.incident_opened(big)
        await h.notifier.action_taken(dataclasses.replace(big, actions=(detailed,)), detailed)
        await h.drain()
        failed = [m for m in await h.messages("pagerduty") if m["state"] != "sent"]
    assert fakes.pagerduty.rejected == []
    assert failed == []
    trigger = fakes.pagerduty.alerts[0]
    assert len(json.dumps(trigger).encode()) <= 512 * 1024
    details = trigger["payload"]["custom_details"]
    assert details["incident"] == INCIDENT_URL
    assert "512 KB" in details["truncated"]
    assert "labels" in details["truncated"]
    assert "decision" in details["truncated"]
    # Small parts stay whole: the cut falls on the largest.
    assert details["labels"]["alertname"] == "PostHogErrorsHigh"
    assert details["labels"]["service"] == "posthog-integration"
    assert details["class"] == "upstream_error"
    assert details["labels"]["huge0"].endswith("…")
    assert INCIDENT_URL in hrefs(trigger)
    assert trigger["client_url"] == INCIDENT_URL
    change = fakes.pagerduty.changes[0]
    assert len(json.dumps(change).encode()) <= 512 * 1024
    change_details = change["payload"]["custom_details"]
    assert change_details["incident"] == INCIDENT_URL
    assert "512 KB" in change_details["truncated"]
    assert change_details["action"]["name"] == "enable_fallback"


@pytest.mark.asyncio
async def test_pagerduty_event_under_the_limit_is_not_cut(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """An ordinary event goes whole, with no truncation note."""
    async with running(tmp_path, fakes, clock, only=("pagerduty",)) as h:
        await h.notifier.incident_opened(hostile(clock))
        await h.drain()
    details = fakes.pagerduty.alerts[0]["payload"]["custom_details"]
    assert "truncated" not in details
    assert details["labels"]["long"] == HOSTILE["long"]  # data, sent as data


# -- the status page ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_nothing_from_labels_reaches_customers(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """The status page says only config's text: no title, label, reason or action of the
    hostile alert reaches a request to it."""
    async with running(
        tmp_path, fakes, clock, only=("statuspage",), statuspage={"hold_off_seconds": 0}
    ) as h:
        await lifecycle(h, hostile(clock), clock)
    assert fakes.statuspage.rejected == []
    assert len(fakes.statuspage.received) >= 2
    for request in fakes.statuspage.received:
        sent = json.dumps(request.body, ensure_ascii=False)
        assert MARK not in sent
        assert "<" not in sent
        assert "evil" not in sent


LINK_KEY = "signing-key-for-incident-links-0c4f"


def signed_for(url: str, incident_id: str, *, now: float) -> bool:
    """Whether ``url`` is the incident's page with a valid signature (not the API's JSON)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path == links.incident_path(incident_id) and links.verify(
        LINK_KEY.encode(),
        parts.path,
        exp=query.get("exp", [None])[0],
        sig=query.get("sig", [None])[0],
        now=now,
    )


@pytest.mark.asyncio
async def test_signed_links_are_kept_whole_at_every_limit(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """With a link key, the longer signed link still ends Slack's message and stays whole in
    a PagerDuty event cut to 512 KB: both verify, and open the incident's page."""
    ui = UiSettings.model_validate({"link_key": {"value": LINK_KEY}, "link_ttl_hours": 1})
    huge = snapshot(
        clock,
        title="<&>" * 40_000,
        decision_summary="&" * 300_000,
        labels={f"huge{i}": "A" * 100_000 for i in range(10)},
    )
    async with running(tmp_path, fakes, clock, ui=ui, only=("slack", "pagerduty")) as h:
        await h.notifier.incident_opened(huge)
        await h.drain()
    assert (fakes.slack.rejected, fakes.pagerduty.rejected) == ([], [])
    (text,) = fakes.slack.texts
    assert len(text) <= 3000
    link = markup(text)[-1]  # the incident commander is mentioned before it
    assert text.endswith(f"<{link}>")
    # Slack's text escapes "&" as "&amp;", in links too (Slack decodes it back).
    assert signed_for(link.replace("&amp;", "&"), huge.id, now=clock())
    trigger = fakes.pagerduty.alerts[0]
    assert len(json.dumps(trigger).encode()) <= 512 * 1024
    assert "512 KB" in trigger["payload"]["custom_details"]["truncated"]
    url = trigger["client_url"]
    assert signed_for(url, huge.id, now=clock())
    assert trigger["payload"]["custom_details"]["incident"] == url
    assert url in hrefs(trigger)
    # Valid for link_ttl_hours, then refused.
    assert not signed_for(url, huge.id, now=clock() + 3601)
