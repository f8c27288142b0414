"""Reading PostHog's status page and our health endpoint, against fake HTTP servers."""

from __future__ import annotations

import asyncio

import pytest

from receiver.config import HealthCheckSettings, UpstreamStatusSettings
from receiver.health import HealthReader, HealthState
from receiver.upstream import Indicator, UpstreamReader
from tests.fakes.health import FakeHealth
from tests.fakes.http import unused_port
from tests.fakes.status_page import FakeStatusPage, component, incident

FAST = {"timeout_seconds": 0.3, "cache_ttl_seconds": 0}


async def read(url: str, **settings: float) -> UpstreamReader:
    return UpstreamReader(UpstreamStatusSettings(url=url, **{**FAST, **settings}))


@pytest.mark.asyncio
@pytest.mark.parametrize("indicator", ["none", "minor", "major", "critical"])
async def test_indicator_is_read(status_page: FakeStatusPage, indicator: str) -> None:
    """Each Statuspage indicator is read as is; only 'none' means no incident."""
    status_page.indicator = indicator
    reader = await read(status_page.url())
    try:
        status = await reader.status()
    finally:
        await reader.close()
    assert status.indicator is Indicator(indicator)
    assert status.error is None
    assert status.has_incident is (indicator != "none")
    assert status.description


@pytest.mark.asyncio
async def test_summary_lists_active_incidents_and_degraded_components(
    status_page: FakeStatusPage,
) -> None:
    """summary.json yields unresolved incidents (not resolved ones) and degraded components."""
    status_page.indicator = "major"
    status_page.incidents = [
        incident("Elevated ingestion errors", status="identified", impact="major"),
        incident("Old outage", status="resolved", impact="critical"),
    ]
    status_page.components = [component("Event ingestion", "partial_outage"), component("App")]
    reader = await read(status_page.url("summary"))
    try:
        status = await reader.status()
    finally:
        await reader.close()
    assert [i.name for i in status.incidents] == ["Elevated ingestion errors"]
    assert status.incidents[0].impact == "major"
    assert status.degraded_components == ("Event ingestion: partial_outage",)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("mode", "reason"),
    [("slow", "timeout"), ("malformed", "malformed"), ("error", "http_status: HTTP 503")],
)
async def test_misbehaving_status_page_is_unknown(
    status_page: FakeStatusPage, mode: str, reason: str
) -> None:
    """A slow, malformed or failing status page reads as unknown with the reason, never healthy."""
    status_page.mode = mode  # type: ignore[assignment]
    reader = await read(status_page.url())
    try:
        status = await reader.status()
    finally:
        await reader.close()
    assert status.indicator is Indicator.UNKNOWN
    assert status.has_incident is None
    assert status.error is not None
    assert status.error.startswith(reason)


@pytest.mark.asyncio
async def test_unreachable_status_page_is_unknown() -> None:
    """A status page nobody answers for reads as unknown, with 'unreachable' as the reason."""
    reader = await read(f"http://127.0.0.1:{unused_port()}/api/v2/status.json")
    try:
        status = await reader.status()
    finally:
        await reader.close()
    assert status.indicator is Indicator.UNKNOWN
    assert status.error is not None
    assert status.error.startswith("unreachable")


@pytest.mark.asyncio
@pytest.mark.parametrize("indicator", ["purple", ""])
async def test_unknown_indicator_is_unknown(status_page: FakeStatusPage, indicator: str) -> None:
    """An indicator outside the Statuspage vocabulary is unknown, not taken for 'none'."""
    status_page.indicator = indicator
    reader = await read(status_page.url())
    try:
        status = await reader.status()
    finally:
        await reader.close()
    assert status.indicator is Indicator.UNKNOWN
    assert status.error is not None
    assert "unknown indicator" in status.error


@pytest.mark.asyncio
async def test_long_incident_lists_are_cut_short(status_page: FakeStatusPage) -> None:
    """A page listing many incidents yields a bounded list, so stored evidence stays small."""
    status_page.indicator = "critical"
    status_page.incidents = [incident(f"Outage {n}") for n in range(50)]
    reader = await read(status_page.url("summary"))
    try:
        status = await reader.status()
    finally:
        await reader.close()
    assert len(status.incidents) == 10
    assert status.indicator is Indicator.CRITICAL


@pytest.mark.asyncio
async def test_status_is_cached_for_the_ttl(status_page: FakeStatusPage) -> None:
    """Within the TTL the page is asked once; after it, again (with a controlled clock)."""
    now = [100.0]
    reader = UpstreamReader(
        UpstreamStatusSettings(url=status_page.url(), cache_ttl_seconds=30), clock=lambda: now[0]
    )
    try:
        first = await reader.status()
        status_page.indicator = "major"
        now[0] += 29
        assert (await reader.status()) is first
        assert len(status_page.requests) == 1
        now[0] += 2
        assert (await reader.status()).indicator is Indicator.MAJOR
        assert len(status_page.requests) == 2
    finally:
        await reader.close()


@pytest.mark.asyncio
async def test_concurrent_readers_share_one_request(status_page: FakeStatusPage) -> None:
    """A burst of alerts triaged at once costs the status page one request."""
    reader = UpstreamReader(UpstreamStatusSettings(url=status_page.url(), cache_ttl_seconds=30))
    try:
        results = await asyncio.gather(*(reader.status() for _ in range(10)))
    finally:
        await reader.close()
    assert len(status_page.requests) == 1
    assert {r.indicator for r in results} == {Indicator.NONE}


@pytest.mark.asyncio
async def test_query_string_is_not_shown(status_page: FakeStatusPage) -> None:
    """A token in the status URL's query string does not appear in the evidence."""
    reader = await read(status_page.url() + "?api_key=sekret-token-123")
    try:
        status = await reader.status()
    finally:
        await reader.close()
    assert status.indicator is Indicator.NONE
    assert "sekret" not in str(status.as_dict())


def check(url: str | None, **kw: object) -> HealthReader:
    return HealthReader(HealthCheckSettings(url=url, timeout_seconds=0.3, **kw))  # type: ignore[arg-type]


async def health_of(reader: HealthReader) -> tuple[HealthState, str | None, str | None]:
    try:
        status = await reader.check()
    finally:
        await reader.close()
    return status.state, status.value, status.reason


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("value", "state"),
    [
        ("ok", HealthState.HEALTHY),
        ("UP", HealthState.HEALTHY),
        ("healthy", HealthState.HEALTHY),
        ("degraded", HealthState.UNHEALTHY),
        ("down", HealthState.UNHEALTHY),
        (False, HealthState.UNHEALTHY),
        ({"nested": "ok"}, HealthState.UNKNOWN),
    ],
)
async def test_health_value_at_path(health: FakeHealth, value: object, state: HealthState) -> None:
    """The value at the configured path decides, compared ignoring case with healthy values."""
    health.posthog(value)
    got, _, _ = await health_of(check(health.url))
    assert got is state


@pytest.mark.asyncio
async def test_health_path_and_values_are_configurable(health: FakeHealth) -> None:
    """Another path (with a list index) and other healthy values can be configured."""
    health.body = {"checks": [{"name": "posthog", "state": "GREEN"}]}
    got, value, _ = await health_of(
        check(health.url, path="checks.0.state", healthy_values=["green"])
    )
    assert (got, value) == (HealthState.HEALTHY, "GREEN")


@pytest.mark.asyncio
async def test_health_missing_path_is_unknown(health: FakeHealth) -> None:
    """An answer without the configured path is unknown: it says the config is off."""
    health.body = {"status": "ok"}
    got, _, reason = await health_of(check(health.url))
    assert got is HealthState.UNKNOWN
    assert reason is not None
    assert "services.posthog.status" in reason


@pytest.mark.asyncio
async def test_health_bad_json_is_unknown(health: FakeHealth) -> None:
    """A 200 that is not JSON is unknown."""
    health.body = b"<html>ok</html>"
    got, _, reason = await health_of(check(health.url))
    assert got is HealthState.UNKNOWN
    assert reason is not None
    assert reason.startswith("malformed")


@pytest.mark.asyncio
async def test_health_5xx_is_unhealthy_with_value(health: FakeHealth) -> None:
    """A 5xx is unhealthy, and the value it carries is kept as evidence."""
    health.posthog("down")
    health.status = 503
    got, value, _ = await health_of(check(health.url))
    assert (got, value) == (HealthState.UNHEALTHY, "down")


@pytest.mark.asyncio
async def test_health_4xx_is_unknown(health: FakeHealth) -> None:
    """A 4xx (wrong URL or missing auth) is unknown, not unhealthy."""
    health.status = 404
    got, _, _ = await health_of(check(health.url))
    assert got is HealthState.UNKNOWN


@pytest.mark.asyncio
async def test_health_timeout_is_unhealthy(health: FakeHealth) -> None:
    """A health endpoint that does not answer in time is unhealthy (runbook: curl -sf)."""
    health.delay = 5
    got, _, reason = await health_of(check(health.url))
    assert got is HealthState.UNHEALTHY
    assert reason is not None
    assert reason.startswith("timeout")


@pytest.mark.asyncio
async def test_health_unreachable_is_unhealthy() -> None:
    """A health endpoint nobody answers for is unhealthy."""
    got, _, reason = await health_of(check(f"http://127.0.0.1:{unused_port()}/health"))
    assert got is HealthState.UNHEALTHY
    assert reason is not None
    assert reason.startswith("unreachable")


@pytest.mark.asyncio
async def test_health_not_configured() -> None:
    """Without a URL the step is reported as not configured."""
    got, _, _ = await health_of(check(None))
    assert got is HealthState.NOT_CONFIGURED


@pytest.mark.asyncio
async def test_health_url_credentials_are_not_shown(health: FakeHealth) -> None:
    """User info and query string of the health URL never reach the evidence."""
    url = health.url.replace("http://", "http://ops:hunter2-pass@") + "?token=sekret-token-456"
    reader = check(url)
    try:
        status = await reader.check()
    finally:
        await reader.close()
    assert status.state is HealthState.HEALTHY
    shown = str(status.as_dict())
    assert "hunter2" not in shown
    assert "sekret" not in shown
    assert status.url == health.url
