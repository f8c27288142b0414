"""The runbook's decision tree against fake status page and health servers and a fake cluster."""

from __future__ import annotations

import json

import pytest

from receiver.cluster import PodsReport, PodState
from receiver.config import HealthCheckSettings, UpstreamStatusSettings
from receiver.decision import Answer, Decision, decide
from receiver.health import HealthReader
from receiver.runbook import ErrorClass, Verdict
from receiver.upstream import UpstreamReader
from tests.fakes.cluster import STARTED, FakeCluster, key
from tests.fakes.health import FakeHealth
from tests.fakes.http import unused_port
from tests.fakes.status_page import FakeStatusPage, incident

A, R, U, N, X = (
    ErrorClass.AUTH,
    ErrorClass.RATE_LIMITED,
    ErrorClass.UPSTREAM_ERROR,
    ErrorClass.NETWORK,
    ErrorClass.UNKNOWN,
)


async def run(
    error_class: ErrorClass,
    status_url: str,
    *,
    health_url: str | None = None,
    cluster: FakeCluster | None = None,
    timeout_seconds: float = 2.0,
) -> Decision:
    upstream = UpstreamReader(UpstreamStatusSettings(url=status_url, timeout_seconds=0.3))
    health = (
        HealthReader(HealthCheckSettings(url=health_url, timeout_seconds=0.3))
        if health_url
        else None
    )
    try:
        decision = await decide(
            error_class,
            upstream=upstream,
            health=health,
            cluster=cluster,
            timeout_seconds=timeout_seconds,
        )
    finally:
        await upstream.close()
        if health is not None:
            await health.close()
    # Whatever the path, the decision is plain JSON.
    assert json.loads(json.dumps(decision.as_dict())) == decision.as_dict()
    return decision


def answers(decision: Decision) -> list[str]:
    return [s.answer.value for s in decision.steps]


@pytest.mark.asyncio
@pytest.mark.parametrize("indicator", ["minor", "major", "critical", "maintenance"])
@pytest.mark.parametrize("error_class", [A, U, N])
async def test_vendor_incident_stops_the_tree(
    status_page: FakeStatusPage, health: FakeHealth, indicator: str, error_class: ErrorClass
) -> None:
    """PostHog reporting an incident means: wait and fall back, nothing asked of our pods."""
    status_page.indicator = indicator
    cluster = FakeCluster()
    got = await run(error_class, status_page.url(), health_url=health.url, cluster=cluster)
    assert got.verdict is Verdict.VENDOR_INCIDENT
    assert answers(got) == ["yes"]
    assert "do not restart" in got.summary
    assert cluster.calls == []
    assert health.requests == 0


@pytest.mark.asyncio
async def test_vendor_incident_names_the_incident(status_page: FakeStatusPage) -> None:
    """With summary.json, the step's finding and evidence name PostHog's active incident."""
    status_page.indicator = "major"
    status_page.incidents = [incident("Event ingestion delayed")]
    got = await run(U, status_page.url("summary"))
    step = got.steps[0]
    assert "Event ingestion delayed" in step.finding
    assert step.evidence["incidents"][0]["name"] == "Event ingestion delayed"


@pytest.mark.asyncio
async def test_green_and_healthy_network_errors_are_intermittent(
    status_page: FakeStatusPage, health: FakeHealth
) -> None:
    """PostHog green and our service healthy: likely resolved or intermittent."""
    got = await run(N, status_page.url(), health_url=health.url, cluster=FakeCluster())
    assert got.verdict is Verdict.INTERMITTENT
    assert [s.question for s in got.steps][1:] == [
        "Is our service healthy (health endpoint)?",
        "Are the integration's pods healthy?",
    ]
    assert answers(got) == ["no", "yes", "yes"]
    assert all(s.duration_ms >= 0 for s in got.steps)


@pytest.mark.asyncio
async def test_green_but_nothing_checkable_is_unknown(status_page: FakeStatusPage) -> None:
    """PostHog green but no health URL and no cluster: our side is unknown, not 'intermittent'."""
    got = await run(N, status_page.url())
    assert got.verdict is Verdict.UNKNOWN
    assert answers(got) == ["no", "not_configured", "not_configured"]


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["slow", "malformed", "error"])
async def test_unreadable_status_page_never_concludes_intermittent(
    status_page: FakeStatusPage, health: FakeHealth, mode: str
) -> None:
    """A slow, malformed or failing status page, with our side healthy, ends in unknown."""
    status_page.mode = mode  # type: ignore[assignment]
    got = await run(N, status_page.url(), health_url=health.url, cluster=FakeCluster())
    assert got.verdict is Verdict.UNKNOWN
    assert answers(got) == ["unknown", "yes", "yes"]
    assert "cannot be ruled out" in got.summary


@pytest.mark.asyncio
@pytest.mark.parametrize("error_class", [A, R, U, N, X])
async def test_unreachable_status_page_is_unknown_for_every_class(
    health: FakeHealth, error_class: ErrorClass
) -> None:
    """Offline (status page unreachable) and nothing wrong found: unknown, whatever the class."""
    url = f"http://127.0.0.1:{unused_port()}/api/v2/status.json"
    got = await run(error_class, url, health_url=health.url, cluster=FakeCluster())
    assert got.verdict is Verdict.UNKNOWN
    assert got.steps[0].answer is Answer.UNKNOWN
    assert "unreachable" in got.steps[0].finding


@pytest.mark.asyncio
async def test_unknown_indicator_is_not_healthy(
    status_page: FakeStatusPage, health: FakeHealth
) -> None:
    """An indicator the tree does not know is an unknown answer, never 'no incident'."""
    status_page.indicator = "degraded"
    got = await run(N, status_page.url(), health_url=health.url)
    assert got.steps[0].answer is Answer.UNKNOWN
    assert got.verdict is Verdict.UNKNOWN


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("report", "finding"),
    [
        (key(exists=False), "does not exist"),
        (key(non_empty=False), "holds no key"),
        (key(rotated=True), "changed after the pods started"),
    ],
)
async def test_auth_with_key_problem_is_our_integration(
    status_page: FakeStatusPage, health: FakeHealth, report: object, finding: str
) -> None:
    """For 401/403, a missing, empty or rotated-but-not-loaded key is our integration's issue."""
    cluster = FakeCluster(api_key_report=report)  # type: ignore[arg-type]
    got = await run(A, status_page.url(), health_url=health.url, cluster=cluster)
    assert got.verdict is Verdict.OUR_INTEGRATION
    assert got.steps[1].answer is Answer.NO
    assert finding in got.steps[1].finding
    assert cluster.calls == ["api_key"]
    # Facts about the secret only, never a key value.
    assert set(got.steps[1].evidence) == {
        "exists",
        "non_empty",
        "changed_at",
        "pods_started_at",
        "rotated_since_pods_started",
    }


@pytest.mark.asyncio
async def test_auth_key_problem_is_ours_even_if_status_page_unreadable() -> None:
    """A missing secret is ours to fix even when PostHog's status cannot be read."""
    url = f"http://127.0.0.1:{unused_port()}/api/v2/status.json"
    got = await run(A, url, cluster=FakeCluster(api_key_report=key(exists=False)))
    assert got.verdict is Verdict.OUR_INTEGRATION
    assert answers(got) == ["unknown", "no"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("error_class", "hint"), [(A, "dashboard"), (R, "queue"), (U, "5xx")])
async def test_green_api_errors_with_nothing_wrong_are_our_integration(
    status_page: FakeStatusPage, health: FakeHealth, error_class: ErrorClass, hint: str
) -> None:
    """PostHog green yet answering 401/429/5xx, our side healthy: our integration (runbook)."""
    got = await run(error_class, status_page.url(), health_url=health.url, cluster=FakeCluster())
    assert got.verdict is Verdict.OUR_INTEGRATION
    assert hint in got.summary
    expected = ["no", "yes", "yes", "yes"] if error_class is A else ["no", "yes", "yes"]
    assert answers(got) == expected


@pytest.mark.asyncio
@pytest.mark.parametrize("error_class", [A, R, U, N, X])
async def test_unhealthy_health_endpoint_is_our_infrastructure(
    status_page: FakeStatusPage, health: FakeHealth, error_class: ErrorClass
) -> None:
    """Our health endpoint reporting PostHog down (PostHog green) is our infrastructure."""
    health.posthog("degraded")
    got = await run(error_class, status_page.url(), health_url=health.url)
    assert got.verdict is Verdict.OUR_INFRASTRUCTURE
    assert "degraded" in got.summary


@pytest.mark.asyncio
async def test_slow_health_endpoint_is_our_infrastructure(
    status_page: FakeStatusPage, health: FakeHealth
) -> None:
    """A health endpoint that does not answer in time counts as unhealthy."""
    health.delay = 5
    got = await run(N, status_page.url(), health_url=health.url)
    assert got.verdict is Verdict.OUR_INFRASTRUCTURE


@pytest.mark.asyncio
async def test_oomkilled_pods_are_our_infrastructure(status_page: FakeStatusPage) -> None:
    """Pods that were OOMKilled or are not ready make it our infrastructure."""
    pods = PodsReport(
        pods=[
            PodState("posthog-integration-1", ready=True, restarts=4, started_at=STARTED,
                     last_termination_reason="OOMKilled"),
            PodState("posthog-integration-2", ready=False, restarts=0, started_at=STARTED,
                     waiting_reason="CrashLoopBackOff"),
        ],
        desired_replicas=2,
    )  # fmt: skip
    got = await run(N, status_page.url(), cluster=FakeCluster(pods=pods))
    assert got.verdict is Verdict.OUR_INFRASTRUCTURE
    assert "OOMKilled" in got.summary
    assert got.steps[-1].evidence["pods"][1]["waiting_reason"] == "CrashLoopBackOff"


@pytest.mark.asyncio
async def test_cluster_failure_is_recorded_not_raised(
    status_page: FakeStatusPage, health: FakeHealth
) -> None:
    """A cluster that errors is an unknown answer with the reason; the tree goes on."""
    cluster = FakeCluster(
        pods=RuntimeError("403 Forbidden: pods is forbidden"),
        api_key_report=RuntimeError("secrets is forbidden"),
    )
    got = await run(A, status_page.url(), health_url=health.url, cluster=cluster)
    assert answers(got) == ["no", "unknown", "yes", "unknown"]
    assert "forbidden" in got.steps[1].finding
    assert got.verdict is Verdict.OUR_INTEGRATION


@pytest.mark.asyncio
async def test_hanging_cluster_is_bounded_by_the_timeout(status_page: FakeStatusPage) -> None:
    """A cluster that never answers is cut off after the configured timeout."""
    got = await run(N, status_page.url(), cluster=FakeCluster(hang=True), timeout_seconds=0.05)
    assert got.steps[-1].answer is Answer.UNKNOWN
    assert "no answer within 0.05s" in got.steps[-1].finding
    assert got.verdict is Verdict.UNKNOWN
