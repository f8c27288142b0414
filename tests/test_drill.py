"""``posthog-receiver drill``: the real command, in a subprocess, against every outside service
faked at its HTTP boundary (PagerDuty, Slack, Statuspage, PostHog's status page, the health
URL) and an emulated API server with a Role; then with each destination broken in turn."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiohttp.test_utils import TestClient
from kmock import Server
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.health import FakeHealth
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.fakes.status_page import FakeStatusPage
from tests.fakes.statuspage import FakeStatuspage
from tests.helpers import TOKEN, bearer
from tests.kube_emulator import (
    DEPLOYMENTS,
    PODS,
    SECRETS,
    ClusterEmulator,
    Rule,
    deployment,
    dumps,
    pod,
    runbook_role,
    secret,
    write_kubeconfig,
)
from tests.notify_harness import COMPONENT_ID, PAGE_ID, ROUTING_KEY, SLACK_PATH, STATUSPAGE_KEY

NAMESPACE = "prod"


@dataclass
class World:
    pagerduty: FakePagerDuty
    slack: FakeSlack
    statuspage: FakeStatuspage
    posthog: FakeStatusPage
    health: FakeHealth
    cluster: ClusterEmulator
    tmp_path: Path

    def config(self, **overrides: Any) -> Path:
        kubeconfig = write_kubeconfig(
            self.tmp_path / "kubeconfig", str(self.cluster.url).rstrip("/")
        )
        data: dict[str, Any] = {
            "webhook": {"bearer_token": {"value": TOKEN}},
            "store": {"path": str(self.tmp_path / "state" / "receiver.sqlite3")},
            "kubernetes": {
                "mode": "kubeconfig",
                "kubeconfig": str(kubeconfig),
                "request_timeout_seconds": 2,
                "retry_attempts": 1,
            },
            "remediation": {"target": {"namespace": NAMESPACE}},
            "notify": {
                "pagerduty": {
                    "routing_key": {"value": ROUTING_KEY},
                    "events_url": self.pagerduty.url,
                    "timeout_seconds": 2,
                },
                "statuspage": {
                    "api_base": self.statuspage.url + "/v1",
                    "page_id": PAGE_ID,
                    "component_id": COMPONENT_ID,
                    "api_key": {"value": STATUSPAGE_KEY},
                    "timeout_seconds": 2,
                },
                "slack": {"webhook_url": {"value": self.slack.webhook_url}, "timeout_seconds": 2},
            },
            "triage": {
                "upstream": {"url": self.posthog.url(), "timeout_seconds": 2},
                "health": {"url": self.health.url, "timeout_seconds": 2},
            },
            **overrides,
        }
        path = self.tmp_path / "receiver.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    async def drill(self, *extra: str, **overrides: Any) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "receiver",
            "drill",
            "--config",
            str(self.config(**overrides)),
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest_asyncio.fixture
async def world(
    tmp_path: Path, status_page: FakeStatusPage, health: FakeHealth
) -> AsyncIterator[World]:
    pagerduty = FakePagerDuty(ROUTING_KEY)
    slack = FakeSlack(SLACK_PATH)
    statuspage = FakeStatuspage(STATUSPAGE_KEY, PAGE_ID, COMPONENT_ID)
    try:
        for fake in (pagerduty, slack, statuspage):
            await fake.start()
        async with ClusterEmulator(role=runbook_role()) as cluster, Server(cluster):
            cluster.put_object(DEPLOYMENTS, NAMESPACE, "posthog-integration", deployment())
            for name in ("posthog-integration-a", "posthog-integration-b"):
                started = "2026-11-01T00:00:00Z"
                cluster.put_object(PODS, NAMESPACE, name, pod(name, started=started))
            key = secret("posthog-secrets", {"api-key": "cGhj"})
            cluster.put_object(SECRETS, NAMESPACE, "posthog-secrets", key)
            yield World(pagerduty, slack, statuspage, status_page, health, cluster, tmp_path)
    finally:
        for fake in (pagerduty, slack, statuspage):
            await fake.stop()


def step_lines(out: str, word: str) -> list[str]:
    """The names of the steps printed with ``word`` (PASS, FAIL, SKIP)."""
    return [line[len(word) + 2 :].rsplit("  (", 1)[0] for line in out.splitlines()
            if line.startswith(word + "  ")]  # fmt: skip


def fix_after(out: str, step: str) -> str:
    """The ``fix:`` line printed under a failed step."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"FAIL  {step}  ("))
    for line in lines[start + 1 :]:
        if line.startswith(("PASS", "FAIL", "SKIP")):
            break
        if line.strip().startswith("fix: "):
            return line.strip().removeprefix("fix: ")
    raise AssertionError(f"no fix printed for {step}:\n{out}")


@pytest.mark.asyncio
async def test_every_step_passes_against_working_destinations(world: World) -> None:
    """All green: PagerDuty triggered then resolved under the drill's own key, Slack posted,
    Statuspage only read, every action dry-run and every permission allowed; exit 0."""
    before = dumps(world.cluster.current(DEPLOYMENTS, NAMESPACE, "posthog-integration"))
    code, out, err = await world.drill()
    assert code == 0, out + err
    assert step_lines(out, "FAIL") == []
    passed = step_lines(out, "PASS")
    assert passed[0] == "PagerDuty: trigger a DRILL alert"
    assert passed[-1] == "PagerDuty: resolve the DRILL alert"
    for expected in (
        "Slack: post a DRILL message",
        "Statuspage: read the page and the component (nothing published)",
        "Kubernetes: dry run of enable_request_queuing",
        "Kubernetes: dry run of enable_fallback",
        "Kubernetes: dry run of restart_for_rotated_key",
        "Kubernetes: may patch deployments.apps/posthog-integration in namespace prod",
        "Kubernetes: may get pods/log in namespace prod",
        "Kubernetes: may get secrets/posthog-secrets in namespace prod",
        "Kubernetes: may create events in namespace prod",
        "PostHog status page: read",
        "Health URL: read",
    ):
        assert expected in passed, out
    assert step_lines(out, "SKIP") == ["Kubernetes: dry run of escalate_infrastructure"]
    assert out.splitlines()[-1].startswith("drill drill-")
    assert "passed" in out.splitlines()[-1]

    (trigger, resolve) = world.pagerduty.alerts
    key = trigger["dedup_key"]
    assert key.startswith("posthog-receiver/drill-")
    assert trigger["payload"]["summary"].startswith("DRILL")
    assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": key}
    assert world.pagerduty.alert_status(key) == "resolved"
    (text,) = world.slack.texts
    assert "DRILL" in text
    # Statuspage: read, nothing written.
    assert world.statuspage.incidents == {}
    assert {r.method for r in world.statuspage.received} == {"GET"}
    # Kubernetes: the dry runs reached the API server, nothing was stored.
    dry_runs = [r for r in world.cluster if r.method.value == "PATCH" and "dryRun" in r.params]
    assert len(dry_runs) == 3
    assert world.cluster.writes("deployments") == []
    assert dumps(world.cluster.current(DEPLOYMENTS, NAMESPACE, "posthog-integration")) == before


@pytest.mark.asyncio
async def test_a_wrong_routing_key_fails_the_pagerduty_step(world: World) -> None:
    """PagerDuty answers 400 to a key it does not know: exit 1, the step and its fix named,
    and no resolve is sent for an alert that was never opened."""
    world.pagerduty.routing_key = "X" * 32
    code, out, _ = await world.drill()
    assert code == 1
    assert step_lines(out, "FAIL") == ["PagerDuty: trigger a DRILL alert"]
    assert "PagerDuty answered 400" in out
    assert "routing_key" in fix_after(out, "PagerDuty: trigger a DRILL alert")
    assert "PagerDuty: resolve the DRILL alert" not in out
    assert ROUTING_KEY not in out
    assert "FAILED (1 step)" in out.splitlines()[-1]


@pytest.mark.asyncio
async def test_a_statuspage_403_fails_the_statuspage_step(world: World) -> None:
    """Statuspage refuses the key (403): exit 1, the step names the answer and the key to
    check; the other steps still run and pass."""
    world.statuspage.fail(403, body='{"error": "You are not authorized to access this page"}')
    code, out, _ = await world.drill()
    assert code == 1
    step = "Statuspage: read the page and the component (nothing published)"
    assert step_lines(out, "FAIL") == [step]
    assert "Statuspage answered 403" in out
    assert "notify.statuspage.api_key" in fix_after(out, step)
    assert STATUSPAGE_KEY not in out
    assert "PagerDuty: resolve the DRILL alert" in step_lines(out, "PASS")


@pytest.mark.asyncio
async def test_a_role_without_patch_on_deployments_fails_the_access_review(world: World) -> None:
    """The Role lost ``patch`` on deployments: the access review is denied and the dry runs
    are refused with 403, each naming the permission to grant; exit 1."""
    world.cluster.role = runbook_role(without=("patch", "deployments"))
    code, out, _ = await world.drill()
    assert code == 1
    review = "Kubernetes: may patch deployments.apps/posthog-integration in namespace prod"
    failed = step_lines(out, "FAIL")
    assert review in failed
    assert "Kubernetes: dry run of restart_for_rotated_key" in failed
    assert "grant 'patch deployments.apps/posthog-integration in namespace prod'" in fix_after(
        out, review
    )
    assert "Kubernetes: may get deployments.apps/posthog-integration in namespace prod" in (
        step_lines(out, "PASS")
    )
    assert not [f for f in failed if not f.startswith("Kubernetes:")]


@pytest.mark.asyncio
async def test_an_unreadable_log_permission_is_found_without_reading_a_log(world: World) -> None:
    """A permission the drill never exercises for real (``get pods/log``) is still checked."""
    world.cluster.role = [r for r in runbook_role() if r != Rule(("",), ("pods/log",), ("get",))]
    code, out, _ = await world.drill()
    assert code == 1
    assert step_lines(out, "FAIL") == ["Kubernetes: may get pods/log in namespace prod"]


@pytest.mark.asyncio
async def test_unconfigured_destinations_are_skipped_not_failed(world: World) -> None:
    """Without notification channels, a cluster or a health URL the drill skips those steps
    and passes on what it can check."""
    code, out, err = await world.drill(
        notify={},
        kubernetes={"mode": "none"},
        triage={"upstream": {"url": world.posthog.url(), "timeout_seconds": 2}},
    )
    assert code == 0, out + err
    assert step_lines(out, "PASS") == ["PostHog status page: read"]
    assert world.pagerduty.received == []


@pytest.mark.asyncio
async def test_a_drill_needs_its_secrets(world: World) -> None:
    """A secret that cannot be read stops the drill before it sends anything (exit 2)."""
    code, _, err = await world.drill(
        webhook={"bearer_token": {"env": "POSTHOG_RECEIVER_TEST_UNSET_TOKEN"}}
    )
    assert code == 2
    assert "webhook.bearer_token" in err
    assert world.pagerduty.attempts == 0


def _drill_metrics(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("posthog_receiver_drill_")
    }


async def _metrics(client: TestClient[Any, Any]) -> dict[str, float]:
    resp = await client.get("/metrics")
    return _drill_metrics(await resp.text())


@pytest.mark.asyncio
async def test_the_result_reaches_the_receiver_as_metrics(
    world: World, client: TestClient[Any, Any]
) -> None:
    """``--report-to``: a passing drill sets the last success; a failing one counts its
    failed steps and leaves the last success where it was."""
    assert await _metrics(client) == {
        "posthog_receiver_drill_last_run_timestamp_seconds": 0.0,
        "posthog_receiver_drill_last_success_timestamp_seconds": 0.0,
        "posthog_receiver_drill_steps_failed": 0.0,
    }
    url = str(client.make_url("/"))
    code, out, err = await world.drill("--report-to", url)
    assert code == 0, out + err
    assert "PASS  Receiver: record the result" in out
    first = await _metrics(client)
    assert first["posthog_receiver_drill_last_success_timestamp_seconds"] > 0
    assert first["posthog_receiver_drill_steps_failed"] == 0

    world.statuspage.fail(403)
    code, out, _ = await world.drill("--report-to", url)
    assert code == 1
    second = await _metrics(client)
    assert second["posthog_receiver_drill_steps_failed"] == 1
    assert (
        second["posthog_receiver_drill_last_run_timestamp_seconds"]
        >= (first["posthog_receiver_drill_last_run_timestamp_seconds"])
    )
    assert (
        second["posthog_receiver_drill_last_success_timestamp_seconds"]
        == first["posthog_receiver_drill_last_success_timestamp_seconds"]
    )


@pytest.mark.asyncio
async def test_a_result_the_receiver_refuses_fails_the_drill(
    world: World, client: TestClient[Any, Any]
) -> None:
    """Wrong credentials for the receiver: the drill says so and exits 1 (the metric would
    otherwise silently go stale)."""
    code, out, _ = await world.drill(
        "--report-to",
        str(client.make_url("/")),
        webhook={"bearer_token": {"value": "not-the-receivers-token"}},
    )
    assert code == 1
    assert "FAIL  Receiver: record the result" in out
    assert "answered 401" in out


@pytest.mark.asyncio
async def test_the_drills_endpoint_checks_credentials_and_body(
    client: TestClient[Any, Any],
) -> None:
    """``POST /api/drills`` takes the webhook's credentials and only a drill result."""
    body = {"drill": "drill-20261205T010000Z", "steps": 3, "failed": []}
    assert (await client.post("/api/drills", json=body)).status == 401
    for bad in (
        {**body, "steps": 0},
        {**body, "failed": "Health URL: read"},
        {**body, "extra": 1},
        {**body, "drill": "<script>"},
    ):
        assert (await client.post("/api/drills", json=bad, headers=bearer())).status == 400
    assert (await client.post("/api/drills", json=body, headers=bearer())).status == 204
    assert (await _metrics(client))["posthog_receiver_drill_last_success_timestamp_seconds"] > 0
