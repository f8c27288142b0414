"""The remediator end to end: emulated API server over HTTP, SQLite journal, incident timeline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from receiver.config import (
    KubernetesSettings,
    PrometheusSettings,
    Settings,
    WebhookSettings,
    load_settings,
)
from receiver.kube.client import ClusterAccess, KubeConnection, open_cluster
from receiver.kube.workload import IntegrationWorkload
from receiver.prometheus import PrometheusClient
from receiver.remediation import ActionOutcome, Remediator, open_remediator
from receiver.runbook import ErrorClass, Verdict
from receiver.store import Store
from receiver.store import approvals as approval
from receiver.store.incidents import get_incident
from receiver.store.journal import get_entry, write_intent
from tests.conftest import open_incident, remediation_settings, resolve_incident
from tests.kube_emulator import (
    DEPLOYMENTS,
    PODS,
    SECRETS,
    ClusterEmulator,
    deployment,
    events_in,
    pod,
    secret,
)

NAME = "posthog-integration"
Make = Callable[..., Awaitable[Remediator]]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture()
async def make(store: Store, kube: KubeConnection) -> Make:
    """Build remediators on the shared store; with ``cluster=False`` no cluster is configured."""

    async def build(
        *,
        cluster: bool = True,
        clock: Clock | None = None,
        prometheus: PrometheusClient | None = None,
        **overrides: Any,
    ) -> Remediator:
        settings = remediation_settings(**overrides)
        # These tests are about what each action does: none waits for a person here
        # (approvals: tests/test_approvals.py).
        unattended = [a.model_copy(update={"approval": "none"}) for a in settings.actions]
        settings = settings.model_copy(update={"actions": unattended})
        workload = IntegrationWorkload(kube, target=settings.target) if cluster else None
        kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
        return Remediator(
            settings=settings, store=store, workload=workload, prometheus=prometheus, **kwargs
        )

    return build


def env_of(cluster: ClusterEmulator, namespace: str = "prod", name: str = NAME) -> dict[str, str]:
    spec = cluster.current(DEPLOYMENTS, namespace, name)["spec"]["template"]["spec"]
    app = next(c for c in spec["containers"] if c["name"] == "posthog-integration")
    return {e["name"]: e["value"] for e in app.get("env", [])}


async def timeline(store: Store, incident_id: str) -> list[dict[str, Any]]:
    incident = await store.read(lambda conn: get_incident(conn, incident_id))
    assert incident is not None
    return [t for t in incident["timeline"] if t["kind"] == "remediation"]


def statuses(outcomes: list[ActionOutcome]) -> list[tuple[str, str]]:
    return [(o.action, o.status) for o in outcomes]


async def rate_limited(
    remediator: Remediator, incident_id: str, **labels: str
) -> list[ActionOutcome]:
    return await remediator.remediate(
        incident_id=incident_id,
        error_class=ErrorClass.RATE_LIMITED,
        verdict=Verdict.OUR_INTEGRATION,
        labels=labels,
    )


async def auth_failing(
    remediator: Remediator, incident_id: str, verdict: Verdict = Verdict.OUR_INTEGRATION
) -> list[ActionOutcome]:
    return await remediator.remediate(
        incident_id=incident_id, error_class=ErrorClass.AUTH, verdict=verdict, labels={}
    )


async def revert_now(remediator: Remediator, incident_id: str) -> list[ActionOutcome]:
    """Schedule the incident's revert (no hold-down in these tests) and run it."""
    await remediator.schedule_revert(incident_id=incident_id)
    return await remediator.revert(incident_id=incident_id)


def pods_started_before_the_key(cluster: ClusterEmulator, *, key: str, changed_at: str) -> None:
    """The Deployment, one pod started at 10:00, the key Secret last changed at ``changed_at``."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.put_object(PODS, "prod", "p1", pod("p1", started="2026-01-01T10:00:00Z"))
    cluster.put_object(
        SECRETS,
        "prod",
        "posthog-secrets",
        secret("posthog-secrets", {"api-key": key}, managed_at=changed_at),
    )


# -- each action applied and reverted ----------------------------------------------------------


@pytest.mark.asyncio
async def test_rate_limited_enables_queuing_and_revert_removes_it(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """429s set RATE_LIMIT_MODE=queue; after resolve the variable, absent before, is removed."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    remediator = await make()
    incident = await open_incident(store)

    outcomes = await rate_limited(remediator, incident)
    assert statuses(outcomes) == [("enable_request_queuing", "applied")]
    assert (outcomes[0].before, outcomes[0].after) == ("unset", '"queue"')
    assert env_of(cluster) == {"LOG_LEVEL": "info", "RATE_LIMIT_MODE": "queue"}

    await resolve_incident(store, incident)
    assert await remediator.schedule_revert(incident_id=incident) is not None
    assert await remediator.due_reverts() == [incident]
    reverted = await remediator.revert(incident_id=incident)
    assert statuses(reverted) == [("enable_request_queuing", "reverted")]
    assert reverted[0].reason == "removed RATE_LIMIT_MODE"
    assert env_of(cluster) == {"LOG_LEVEL": "info"}
    assert await remediator.due_reverts() == []


@pytest.mark.asyncio
async def test_upstream_errors_enable_fallback_and_revert_restores_the_old_value(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """5xx set POSTHOG_FALLBACK=true; the revert sets back the value it had before."""
    env = [{"name": "POSTHOG_FALLBACK", "value": "false"}]
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment(env=env))
    remediator = await make()
    incident = await open_incident(store)

    outcomes = await remediator.remediate(
        incident_id=incident,
        error_class=ErrorClass.UPSTREAM_ERROR,
        verdict=Verdict.VENDOR_INCIDENT,
        labels={},
    )
    assert statuses(outcomes) == [("enable_fallback", "applied")]
    assert env_of(cluster) == {"POSTHOG_FALLBACK": "true"}

    reverted = await revert_now(remediator, incident)
    assert statuses(reverted) == [("enable_fallback", "reverted")]
    assert env_of(cluster) == {"POSTHOG_FALLBACK": "false"}


@pytest.mark.asyncio
async def test_rotated_key_restarts_the_deployment(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """401s with a key changed after the pods started lead to a rollout restart."""
    pods_started_before_the_key(cluster, key="bmV3LWtleQ==", changed_at="2026-01-01T12:00:00Z")
    remediator = await make()
    incident = await open_incident(store)
    outcomes = await auth_failing(remediator, incident)
    assert statuses(outcomes) == [("restart_for_rotated_key", "applied")]
    template = cluster.current(DEPLOYMENTS, "prod", NAME)["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]

    await remediator.schedule_revert(incident_id=incident)
    assert await remediator.due_reverts() == []  # a restart has nothing to set back


@pytest.mark.asyncio
async def test_key_not_rotated_escalates_instead_of_restarting(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """A key older than the pods is not fixed by a restart: escalate, saying to rotate it."""
    pods_started_before_the_key(cluster, key="b2xk", changed_at="2026-01-01T09:00:00Z")
    remediator = await make()
    incident = await open_incident(store)
    outcomes = await auth_failing(remediator, incident)
    assert statuses(outcomes) == [("restart_for_rotated_key", "escalated")]
    assert "rotate the key" in outcomes[0].reason
    assert cluster.writes("deployments") == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("changed_at", "status"),
    [("2026-01-01T09:00:00Z", "escalated"), ("2026-01-01T12:00:00Z", "awaiting_approval")],
)
async def test_approval_is_asked_only_for_a_restart_that_would_help(
    cluster: ClusterEmulator, store: Store, kube: KubeConnection, changed_at: str, status: str
) -> None:
    """The restart waits for a person by default, but nobody is asked to approve one that
    would change nothing: a key older than the pods escalates at once (rotate it)."""
    pods_started_before_the_key(cluster, key="b2xk", changed_at=changed_at)
    settings = remediation_settings()
    restart = next(a for a in settings.actions if a.kind == "restart_if_key_rotated")
    assert restart.approval_required
    remediator = Remediator(
        settings=settings, store=store, workload=IntegrationWorkload(kube, target=settings.target)
    )
    incident = await open_incident(store)
    outcomes = await auth_failing(remediator, incident)
    assert statuses(outcomes) == [("restart_for_rotated_key", status)]
    requested = await store.read(lambda c: approval.for_incident(c, incident))
    assert len(requested) == (status == "awaiting_approval")
    if status == "escalated":
        assert "rotate the key" in outcomes[0].reason
    assert cluster.writes("deployments") == []


@pytest.mark.asyncio
async def test_opt_in_copy_of_a_new_key_then_restart(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """The opt-in action copies the key from the source Secret and restarts; no secret is logged."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.put_object(
        SECRETS, "prod", "posthog-secrets", secret("posthog-secrets", {"api-key": "b2xkLWtleQ=="})
    )
    cluster.put_object(
        SECRETS, "prod", "posthog-next", secret("posthog-next", {"api-key": "bmV3LWtleQ=="})
    )
    remediator = await make(
        target={"namespace": "prod", "source_secret": "posthog-next"},
        actions=[{"name": "copy_api_key", "kind": "copy_api_key", "error_classes": ["auth"]}],
    )
    incident = await open_incident(store)
    with capture_logs() as logs:
        outcomes = await auth_failing(remediator, incident)
    assert statuses(outcomes) == [("copy_api_key", "applied")]
    assert cluster.current(SECRETS, "prod", "posthog-secrets")["data"] == {
        "api-key": "bmV3LWtleQ=="
    }
    template = cluster.current(DEPLOYMENTS, "prod", NAME)["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]
    recorded = repr(logs) + repr(await timeline(store, incident)) + repr(events_in(cluster, "prod"))
    for value in ("bmV3LWtleQ==", "new-key", "b2xkLWtleQ==", "old-key"):
        assert value not in recorded


@pytest.mark.asyncio
async def test_unhealthy_infrastructure_is_escalated_with_what_is_wrong(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """Our infrastructure unhealthy: gather the pod problems and escalate, change nothing."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment(replicas=2))
    cluster.put_object(PODS, "prod", "p1", pod("p1", started="2026-01-01T10:00:00Z", ready=False))
    remediator = await make()
    incident = await open_incident(store)
    outcomes = await auth_failing(remediator, incident, Verdict.OUR_INFRASTRUCTURE)
    assert statuses(outcomes) == [
        ("restart_for_rotated_key", "skipped"),
        ("escalate_infrastructure", "escalated"),
    ]
    assert outcomes[0].reason == "our infrastructure is unhealthy: no blind restarts"
    assert "1 of 2 pods exist" in outcomes[1].reason
    assert "p1 not ready (Running)" in outcomes[1].reason
    assert cluster.writes("deployments") == []


# -- every decision is recorded ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_every_decision_is_on_the_timeline_in_the_log_and_an_event(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """An applied action and a skipped one both reach the timeline, the log and Events."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    remediator = await make(budget_per_incident=1)
    incident = await open_incident(store)
    with capture_logs() as logs:
        await rate_limited(remediator, incident)
        await remediator.remediate(
            incident_id=incident, error_class=ErrorClass.UPSTREAM_ERROR, verdict=None, labels={}
        )
    entries = await timeline(store, incident)
    assert [(e["data"]["action"], e["data"]["status"]) for e in entries] == [
        ("enable_request_queuing", "applied"),
        ("enable_fallback", "skipped"),
    ]
    assert [(entry["action"], entry["status"]) for entry in logs] == [
        ("enable_request_queuing", "applied"),
        ("enable_fallback", "skipped"),
    ]
    reasons = sorted(e["reason"] for e in events_in(cluster, "prod"))
    assert reasons == ["RemediationApplied", "RemediationSkipped"]


# -- guards, each skipping with its reason --------------------------------------------------------


@pytest.mark.asyncio
async def test_kill_switch_file_stops_everything(
    cluster: ClusterEmulator, store: Store, make: Make, tmp_path: Path
) -> None:
    """While the kill-switch file exists nothing is changed; removing it lets actions run."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    stop = tmp_path / "stop"
    stop.touch()
    remediator = await make(kill_switch_file=str(stop))
    incident = await open_incident(store)
    outcomes = await rate_limited(remediator, incident)
    assert [(o.status, o.reason) for o in outcomes] == [
        ("skipped", f"kill switch file {stop} exists")
    ]
    assert cluster.writes("deployments") == []
    stop.unlink()
    assert statuses(await rate_limited(remediator, incident)) == [
        ("enable_request_queuing", "applied")
    ]


@pytest.mark.asyncio
async def test_kill_switch_postpones_reverts(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """With the kill switch on, a due revert changes nothing and is postponed."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    incident = await open_incident(store)
    await rate_limited(await make(), incident)
    stopped = await make(kill_switch=True)
    outcomes = await revert_now(stopped, incident)
    assert [o.status for o in outcomes] == ["skipped"]
    assert env_of(cluster)["RATE_LIMIT_MODE"] == "queue"
    assert await stopped.due_reverts() == []


@pytest.mark.asyncio
async def test_budget_per_incident(cluster: ClusterEmulator, store: Store, make: Make) -> None:
    """Beyond the budget an incident gets no more changes."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    remediator = await make(budget_per_incident=0)
    incident = await open_incident(store)
    outcomes = await rate_limited(remediator, incident)
    assert outcomes[0].reason == "budget spent: 0 of 0 actions already taken for this incident"
    assert cluster.writes("deployments") == []


@pytest.mark.asyncio
async def test_cooldown_per_action_and_target(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """The same action on the same target is not repeated within the cooldown, even for
    another incident."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    clock = Clock()
    remediator = await make(cooldown_seconds=600, clock=clock)
    first = await open_incident(store, "first")
    await rate_limited(remediator, first)
    await resolve_incident(store, first)
    await revert_now(remediator, first)

    clock.now += 60
    second = await open_incident(store, "second")
    outcomes = await rate_limited(remediator, second)
    assert [(o.status, o.reason) for o in outcomes] == [
        ("skipped", "cooldown: applied 60s ago, wait 540s more")
    ]
    assert "RATE_LIMIT_MODE" not in env_of(cluster)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("paused", "finish", "reason"),
    [
        (True, True, "the Deployment is paused"),
        (False, False, "the Deployment is mid-rollout: generation 1 not yet observed (observed 0)"),
    ],
)
async def test_paused_or_mid_rollout_deployment_is_refused(
    cluster: ClusterEmulator, store: Store, make: Make, paused: bool, finish: bool, reason: str
) -> None:
    """A paused Deployment, or one mid-rollout, is left alone."""
    cluster.rollouts_finish = finish
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment(paused=paused))
    remediator = await make()
    outcomes = await rate_limited(remediator, await open_incident(store))
    assert [(o.status, o.reason) for o in outcomes] == [("skipped", reason)]
    assert cluster.writes("deployments") == []


@pytest.mark.asyncio
async def test_vendor_incident_never_restarts_our_pods(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """Auth errors during a PostHog incident enable the fallback but do not restart our pods."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    remediator = await make()
    outcomes = await auth_failing(remediator, await open_incident(store), Verdict.VENDOR_INCIDENT)
    assert statuses(outcomes) == [
        ("enable_fallback", "applied"),
        ("restart_for_rotated_key", "skipped"),
    ]
    template = cluster.current(DEPLOYMENTS, "prod", NAME)["spec"]["template"]
    assert "annotations" not in template["metadata"]


@pytest.mark.asyncio
async def test_dry_run_changes_nothing(cluster: ClusterEmulator, store: Store, make: Make) -> None:
    """In dry-run the change is only server-side dry-run and reported, never stored."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    before = cluster.current(DEPLOYMENTS, "prod", NAME)
    remediator = await make(dry_run=True)
    incident = await open_incident(store)
    outcomes = await rate_limited(remediator, incident)
    assert statuses(outcomes) == [("enable_request_queuing", "dry_run")]
    assert cluster.current(DEPLOYMENTS, "prod", NAME) == before
    assert cluster.writes("deployments") == []
    assert [r.params.get("dryRun") for r in cluster if r.method.value == "PATCH"] == ["All"]
    await remediator.schedule_revert(incident_id=incident)
    assert await remediator.due_reverts() == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("dry_run", "status", "reason"),
    [
        (
            True,
            "dry_run",
            'dry run: would set RATE_LIMIT_MODE to "queue"; its current value was not read '
            "(no cluster configured)",
        ),
        (False, "skipped", "no cluster configured"),
    ],
)
async def test_without_a_cluster_nothing_breaks(
    store: Store, make: Make, dry_run: bool, status: str, reason: str
) -> None:
    """With no cluster configured remediation reports instead of failing."""
    remediator = await make(cluster=False, dry_run=dry_run)
    incident = await open_incident(store)
    outcomes = await rate_limited(remediator, incident)
    assert [(o.status, o.reason) for o in outcomes] == [(status, reason)]
    assert len(await timeline(store, incident)) == 1


# -- labels cannot aim anywhere else -----------------------------------------------------------


@pytest.mark.asyncio
async def test_labels_naming_another_target_change_nothing_else(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """Labels naming another namespace, Deployment, container or variable are ignored."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.put_object(DEPLOYMENTS, "kube-system", NAME, deployment())
    cluster.put_object(DEPLOYMENTS, "prod", "billing", deployment("billing"))
    untouched = {
        ("kube-system", NAME): cluster.current(DEPLOYMENTS, "kube-system", NAME),
        ("prod", "billing"): cluster.current(DEPLOYMENTS, "prod", "billing"),
    }
    remediator = await make()
    outcomes = await rate_limited(
        remediator,
        await open_incident(store),
        namespace="kube-system",
        deployment="billing",
        container="log-shipper",
        env="PATH",
        value="/tmp",
    )
    assert statuses(outcomes) == [("enable_request_queuing", "applied")]
    assert outcomes[0].target == "prod/posthog-integration/posthog-integration env RATE_LIMIT_MODE"
    for (namespace, name), before in untouched.items():
        assert cluster.current(DEPLOYMENTS, namespace, name) == before
    assert {r.name for r in cluster.writes("deployments")} == {NAME}
    assert {r.namespace for r in cluster.writes("deployments")} == {"prod"}


# -- Kubernetes errors ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_conflict_is_retried_and_applied(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """A 409 on the patch is re-read and retried, and the action is applied once."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("patch", "deployments", 409, times=2)
    remediator = await make()
    outcomes = await rate_limited(remediator, await open_incident(store))
    assert statuses(outcomes) == [("enable_request_queuing", "applied")]
    assert len(cluster.writes("deployments")) == 1


@pytest.mark.asyncio
async def test_write_refused_because_another_writer_set_the_value_is_never_applied(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """Our PATCH is refused (409) because someone else set the same value first: the value is
    in place, but not by our write, so the outcome is not "applied", no cooldown starts, and
    resolving the incident leaves the value to whoever set it."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())

    def someone_else_sets_it() -> None:
        changed = cluster.current(DEPLOYMENTS, "prod", NAME)
        changed["spec"]["template"]["spec"]["containers"][1]["env"].append(
            {"name": "RATE_LIMIT_MODE", "value": "queue"}
        )
        cluster.put_object(DEPLOYMENTS, "prod", NAME, changed)

    refused = cluster.fail(
        "patch", "deployments", 409, dry_run=False, meanwhile=someone_else_sets_it
    )
    remediator = await make()
    incident = await open_incident(store)
    outcomes = await rate_limited(remediator, incident)

    assert refused.served == 1
    assert len(cluster.writes("deployments")) == 1  # ours, refused; nothing written again
    assert [(o.status, o.reason) for o in outcomes] == [
        (
            "skipped",
            "already in place: RATE_LIMIT_MODE=queue was set by someone else while our write "
            "was refused; left for them to set back",
        )
    ]
    entry = await store.read(lambda c: get_entry(c, incident, "enable_request_queuing"))
    assert entry is not None
    assert entry.state == "held"
    await resolve_incident(store, incident)
    assert await remediator.schedule_revert(incident_id=incident) is None
    assert env_of(cluster)["RATE_LIMIT_MODE"] == "queue"


@pytest.mark.asyncio
async def test_change_under_way_for_another_incident_is_relied_on_not_repeated(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """The journal is the single source: an intent of another open incident for the same
    change (its write under way, e.g. in another process) is relied on, not written again."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    first = await open_incident(store, "first")
    second = await open_incident(store, "second")
    await store.write(
        lambda c: write_intent(
            c,
            incident_id=first,
            action="enable_request_queuing",
            kind="set_env",
            target="prod/posthog-integration/posthog-integration env RATE_LIMIT_MODE",
            before={"present": False, "value": None, "from_reference": False},
            after={"present": True, "value": "queue", "from_reference": False},
            at=0.0,
        )
    )
    remediator = await make()
    outcomes = await rate_limited(remediator, second)
    assert [(o.status, o.reason) for o in outcomes] == [
        (
            "skipped",
            f"already in place: RATE_LIMIT_MODE=queue under way for incident {first}; "
            "set back when the last incident needing it resolves",
        )
    ]
    assert cluster.writes("deployments") == []
    entry = await store.read(lambda c: get_entry(c, second, "enable_request_queuing"))
    assert entry is not None
    assert entry.state == "held"


@pytest.mark.asyncio
async def test_forbidden_escalates_naming_the_permission(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """A 403 escalates with the missing verb, resource and namespace."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("patch", "deployments", 403, times=10)
    remediator = await make()
    incident = await open_incident(store)
    outcomes = await rate_limited(remediator, incident)
    assert [(o.status, o.reason) for o in outcomes] == [
        (
            "escalated",
            "missing RBAC permission: patch deployments.apps/posthog-integration "
            "in namespace prod (answered 403)",
        )
    ]
    entry = await store.read(lambda c: get_entry(c, incident, "enable_request_queuing"))
    assert entry is not None
    assert entry.state == "failed"


@pytest.mark.asyncio
@pytest.mark.parametrize(("status", "delay"), [(503, 0.0), (None, 1.0)])
async def test_server_errors_and_timeouts_retry_then_escalate(
    cluster: ClusterEmulator, store: Store, make: Make, status: int | None, delay: float
) -> None:
    """Persistent 5xx or timeouts are retried a bounded number of times, then escalated."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("get", "deployments", status, times=10, delay=delay)
    remediator = await make()
    outcomes = await rate_limited(remediator, await open_incident(store))
    assert [o.status for o in outcomes] == ["escalated"]
    assert outcomes[0].reason.startswith("Kubernetes API unavailable: get deployments.apps/")
    assert "gave up after 3 attempts" in outcomes[0].reason
    assert len([r for r in cluster if r.method.value == "GET" and r.resource is not None]) == 3


@pytest.mark.asyncio
async def test_api_outage_is_transient_other_refusals_are_not(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """An action the unavailable API stopped is marked transient (the responder tries the
    incident again later); one the API refused (403) is final."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("get", "deployments", 503, times=3)
    remediator = await make()
    down = await rate_limited(remediator, await open_incident(store, "outage"))
    assert [(o.status, o.transient) for o in down] == [("escalated", True)]

    cluster.fail("patch", "deployments", 403, times=2)
    refused = await rate_limited(remediator, await open_incident(store, "forbidden"))
    assert [(o.status, o.transient) for o in refused] == [("escalated", False)]


# -- crash safety ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_intent_applied_before_a_crash_is_not_applied_again(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """After a crash between the patch and the journal's outcome, the live object confirms the
    change and nothing is patched again; the revert still knows the old value."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    incident = await open_incident(store)
    target = "prod/posthog-integration/posthog-integration env RATE_LIMIT_MODE"
    # What the crashed process left behind: its intent, and the change on the server.
    await store.write(
        lambda c: write_intent(
            c,
            incident_id=incident,
            action="enable_request_queuing",
            kind="set_env",
            target=target,
            before={"present": False, "value": None},
            after={"present": True, "value": "queue"},
            at=0.0,
        )
    )
    spec = cluster.current(DEPLOYMENTS, "prod", NAME)
    spec["spec"]["template"]["spec"]["containers"][1]["env"].append(
        {"name": "RATE_LIMIT_MODE", "value": "queue"}
    )
    cluster.put_object(DEPLOYMENTS, "prod", NAME, spec)

    remediator = await make()
    outcomes = await rate_limited(remediator, incident)
    assert statuses(outcomes) == [("enable_request_queuing", "applied")]
    assert "not applied again" in outcomes[0].reason
    assert cluster.writes("deployments") == []

    assert statuses(await revert_now(remediator, incident)) == [
        ("enable_request_queuing", "reverted")
    ]
    assert "RATE_LIMIT_MODE" not in env_of(cluster)


@pytest.mark.asyncio
async def test_intent_not_applied_before_a_crash_is_applied_once(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """An intent whose change never reached the server is applied, exactly once."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    incident = await open_incident(store)
    await store.write(
        lambda c: write_intent(
            c,
            incident_id=incident,
            action="enable_request_queuing",
            kind="set_env",
            target="prod/posthog-integration/posthog-integration env RATE_LIMIT_MODE",
            before={"present": False, "value": None},
            after={"present": True, "value": "queue"},
            at=0.0,
        )
    )
    remediator = await make()
    assert statuses(await rate_limited(remediator, incident)) == [
        ("enable_request_queuing", "applied")
    ]
    assert statuses(await rate_limited(remediator, incident)) == [
        ("enable_request_queuing", "skipped")
    ]
    assert len(cluster.writes("deployments")) == 1


@pytest.mark.asyncio
async def test_timed_out_patch_that_went_through_is_still_reverted(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """A patch whose answer timed out but which the server applied is journalled as ours."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("patch", "deployments", None, times=1, delay=1.0, dry_run=False)
    remediator = await make()
    incident = await open_incident(store)
    outcomes = await rate_limited(remediator, incident)
    assert statuses(outcomes) == [("enable_request_queuing", "applied")]
    assert len(cluster.writes("deployments")) == 2  # the slow one (stored) and the retry (409)
    assert statuses(await revert_now(remediator, incident)) == [
        ("enable_request_queuing", "reverted")
    ]
    assert "RATE_LIMIT_MODE" not in env_of(cluster)


# -- revert ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_revert_leaves_a_value_someone_changed_since(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """If someone set the variable to something else after us, the revert leaves it."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    remediator = await make()
    incident = await open_incident(store)
    await rate_limited(remediator, incident)
    changed = cluster.current(DEPLOYMENTS, "prod", NAME)
    changed["spec"]["template"]["spec"]["containers"][1]["env"][-1]["value"] = "drop"
    cluster.put_object(DEPLOYMENTS, "prod", NAME, changed)

    outcomes = await revert_now(remediator, incident)
    assert [(o.status, o.reason) for o in outcomes] == [
        ("skipped", 'RATE_LIMIT_MODE was changed since to "drop"; left as is')
    ]
    assert env_of(cluster)["RATE_LIMIT_MODE"] == "drop"


@pytest.mark.asyncio
async def test_revert_waits_for_the_hold_down_across_restarts(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """The revert's due time is stored: a new remediator sees it once the hold-down passed."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    clock = Clock()
    incident = await open_incident(store)
    await rate_limited(await make(clock=clock, revert_hold_down_seconds=600), incident)
    await resolve_incident(store, incident)
    first = await make(clock=clock, revert_hold_down_seconds=600)
    assert await first.schedule_revert(incident_id=incident) == clock.now + 600
    assert await first.schedule_revert(incident_id=incident) is None  # a resend changes nothing

    clock.now += 599
    after_restart = await make(clock=clock, revert_hold_down_seconds=600)
    assert await after_restart.due_reverts() == []
    clock.now += 1
    assert await after_restart.due_reverts() == [incident]
    done = await after_restart.revert_due()
    assert {i: statuses(o) for i, o in done.items()} == {
        incident: [("enable_request_queuing", "reverted")]
    }
    assert await after_restart.due_reverts() == []


@pytest.mark.asyncio
async def test_value_needed_by_another_open_incident_is_handed_over(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """A revert leaves a value another open incident relies on; that incident reverts it."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    remediator = await make()
    first = await open_incident(store, "first")
    second = await open_incident(store, "second")
    assert statuses(await rate_limited(remediator, first)) == [
        ("enable_request_queuing", "applied")
    ]
    held = await rate_limited(remediator, second)
    assert [(o.status, o.reason) for o in held] == [
        (
            "skipped",
            f"already in place: RATE_LIMIT_MODE=queue applied for incident {first}; "
            "set back when the last incident needing it resolves",
        )
    ]

    await resolve_incident(store, first)
    outcomes = await revert_now(remediator, first)
    assert [o.status for o in outcomes] == ["skipped"]
    assert f"still needed by open incident {second}" in outcomes[0].reason
    assert env_of(cluster)["RATE_LIMIT_MODE"] == "queue"

    await resolve_incident(store, second)
    assert statuses(await revert_now(remediator, second)) == [
        ("enable_request_queuing", "reverted")
    ]
    assert "RATE_LIMIT_MODE" not in env_of(cluster)


# -- verify ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rollout_not_finishing_escalates(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """A change whose rollout does not finish within the timeout is escalated."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.rollouts_finish = False
    remediator = await make()
    outcomes = await rate_limited(remediator, await open_incident(store))
    assert [o.status for o in outcomes] == ["escalated"]
    assert outcomes[0].reason == (
        "set RATE_LIMIT_MODE=queue, but the rollout did not finish within 0.3s "
        "(generation 2 not yet observed (observed 1))"
    )


class FakePrometheus:
    """Prometheus's instant-query API answering a scripted series of error rates."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.queries: list[str] = []

    async def query(self, request: web.Request) -> web.Response:
        promql = request.query.get("query")
        if not promql:
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": "no query"}, status=400
            )
        self.queries.append(promql)
        value = self.values[min(len(self.queries) - 1, len(self.values) - 1)]
        return web.json_response(
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [{"metric": {}, "value": [1_800_000_000, str(value)]}],
                },
            }
        )


@pytest_asyncio.fixture()
async def prometheus_with() -> AsyncIterator[
    Callable[[list[float]], Awaitable[tuple[FakePrometheus, PrometheusClient]]]
]:
    servers: list[TestServer] = []
    clients: list[PrometheusClient] = []

    async def start(values: list[float]) -> tuple[FakePrometheus, PrometheusClient]:
        fake = FakePrometheus(values)
        app = web.Application()
        app.router.add_get("/api/v1/query", fake.query)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        client = PrometheusClient(str(server.make_url("/")))
        clients.append(client)
        return fake, client

    yield start
    for client in clients:
        await client.close()
    for server in servers:
        await server.close()


VERIFY = {
    "promql": "sum(rate(posthog_errors_total[5m]))",
    "window_seconds": 0.5,
    "poll_seconds": 0.05,
}


@pytest.mark.asyncio
async def test_error_rate_falling_confirms_the_action(
    cluster: ClusterEmulator, store: Store, make: Make, prometheus_with: Any
) -> None:
    """When the configured query shows the error rate falling, the action stands as applied."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    fake, client = await prometheus_with([4.0, 4.0, 1.5])
    remediator = await make(prometheus=client, verify=VERIFY)
    outcomes = await rate_limited(remediator, await open_incident(store))
    assert statuses(outcomes) == [("enable_request_queuing", "applied")]
    assert fake.queries[:3] == [VERIFY["promql"]] * 3


@pytest.mark.asyncio
async def test_verify_reads_the_top_level_prometheus(
    cluster: ClusterEmulator, store: Store, kube: KubeConnection
) -> None:
    """open_remediator sends remediation.verify's query to prometheus.url, the one
    Prometheus setting (the evidence reads the same one)."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    fake = FakePrometheus([4.0, 4.0, 1.5])
    app = web.Application()
    app.router.add_get("/api/v1/query", fake.query)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        settings = Settings(
            webhook=WebhookSettings(allow_unauthenticated=True),
            prometheus=PrometheusSettings(url=str(server.make_url("/")), timeout_seconds=2),
            remediation=remediation_settings(verify=VERIFY),
        )
        async with open_remediator(
            settings, store=store, cluster=ClusterAccess(kube)
        ) as remediator:
            outcomes = await rate_limited(remediator, await open_incident(store))
    finally:
        await server.close()
    assert statuses(outcomes) == [("enable_request_queuing", "applied")]
    assert fake.queries[:3] == [VERIFY["promql"]] * 3


@pytest.mark.asyncio
async def test_error_rate_not_falling_escalates(
    cluster: ClusterEmulator, store: Store, make: Make, prometheus_with: Any
) -> None:
    """When the error rate does not fall within the window, the action is escalated."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    _, client = await prometheus_with([4.0, 4.0, 5.0])
    remediator = await make(prometheus=client, verify=VERIFY)
    outcomes = await rate_limited(remediator, await open_incident(store))
    assert [o.status for o in outcomes] == ["escalated"]
    assert outcomes[0].reason == (
        "set RATE_LIMIT_MODE=queue, but the error rate did not fall within 0.5s (4 -> 5)"
    )


@pytest.mark.asyncio
async def test_unloadable_cluster_config_degrades_to_reports(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kubeconfig that cannot be loaded does not crash the service: outcomes say why."""
    monkeypatch.setenv("POSTHOG_RECEIVER_WEBHOOK_TOKEN", "t0ken-for-tests")
    settings = load_settings(None).model_copy(
        update={
            "kubernetes": KubernetesSettings(mode="kubeconfig", kubeconfig=tmp_path / "missing"),
            "remediation": remediation_settings(dry_run=False),
        }
    )
    incident = await open_incident(store)
    async with (
        open_cluster(settings.kubernetes) as cluster,
        open_remediator(settings, store=store, cluster=cluster) as remediator,
    ):
        outcomes = await rate_limited(remediator, incident)
    assert [o.status for o in outcomes] == ["skipped"]
    assert outcomes[0].reason.startswith("cluster not reachable (connect: cannot load the cluster")


@pytest.mark.asyncio
async def test_embedded_default_reports_dry_run_without_a_cluster(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the embedded default, remediation answers with dry-run outcomes and no cluster."""
    monkeypatch.setenv("POSTHOG_RECEIVER_WEBHOOK_TOKEN", "t0ken-for-tests")
    incident = await open_incident(store)
    async with open_remediator(
        load_settings(None), store=store, cluster=ClusterAccess(None)
    ) as remediator:
        outcomes = await remediator.remediate(
            incident_id=incident,
            error_class=ErrorClass.UPSTREAM_ERROR,
            verdict=Verdict.VENDOR_INCIDENT,
            labels={},
        )
    assert [(o.action, o.status) for o in outcomes] == [("enable_fallback", "dry_run")]


@pytest.mark.asyncio
async def test_endless_conflicts_fail_without_a_change(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """When every write conflicts, the action fails after the configured re-reads."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("patch", "deployments", 409, times=100)
    remediator = await make(conflict_attempts=3)
    outcomes = await rate_limited(remediator, await open_incident(store))
    assert [o.status for o in outcomes] == ["failed"]
    assert "changed under us 3 times in a row" in outcomes[0].reason
    assert "RATE_LIMIT_MODE" not in env_of(cluster)


@pytest.mark.asyncio
async def test_restart_interrupted_after_the_patch_is_not_repeated(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """A restart whose stamp is on the live template is confirmed, not restarted again."""
    stamped = deployment()
    marker = "2026-01-01T12:30:00Z"
    stamped["spec"]["template"]["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/restartedAt": marker
    }
    cluster.put_object(DEPLOYMENTS, "prod", NAME, stamped)
    incident = await open_incident(store)
    await store.write(
        lambda c: write_intent(
            c,
            incident_id=incident,
            action="restart_for_rotated_key",
            kind="restart_if_key_rotated",
            target=f"prod/{NAME}",
            before=None,
            after={"restartedAt": marker},
            at=0.0,
        )
    )
    remediator = await make()
    outcomes = await auth_failing(remediator, incident)
    assert statuses(outcomes) == [("restart_for_rotated_key", "applied")]
    assert cluster.writes("deployments") == []


@pytest.mark.asyncio
async def test_unanswered_patch_is_reconciled_on_the_next_event(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """A patch that kept failing with 5xx leaves its intent; the next event settles it once."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.fail("patch", "deployments", 503, times=3, dry_run=False)
    remediator = await make()
    incident = await open_incident(store)
    first = await rate_limited(remediator, incident)
    assert [o.status for o in first] == ["escalated"]
    entry = await store.read(lambda c: get_entry(c, incident, "enable_request_queuing"))
    assert entry is not None
    assert entry.state == "intent"

    second = await rate_limited(remediator, incident)
    assert statuses(second) == [("enable_request_queuing", "applied")]
    assert len(cluster.writes("deployments")) == 4  # three refused, one stored
    assert env_of(cluster)["RATE_LIMIT_MODE"] == "queue"


@pytest.mark.asyncio
async def test_ignored_label_selection_is_recorded(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """A label naming an action that is not configured is noted on the timeline, not acted on."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    remediator = await make()
    incident = await open_incident(store)
    outcomes = await rate_limited(remediator, incident, runbook_action="scale_to_zero")
    assert outcomes == []
    assert [e["message"] for e in await timeline(store, incident)] == [
        'ignored: label runbook_action="scale_to_zero" names no applicable configured action'
    ]
    assert cluster.writes("deployments") == []


@pytest.mark.asyncio
async def test_dry_run_is_reported_once_and_applied_when_switched_off(
    cluster: ClusterEmulator, store: Store, make: Make
) -> None:
    """A repeated event in dry-run does not repeat the report; without dry-run it applies."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    incident = await open_incident(store)
    dry = await make(dry_run=True)
    assert statuses(await rate_limited(dry, incident)) == [("enable_request_queuing", "dry_run")]
    again = await rate_limited(dry, incident)
    assert [(o.status, o.reason) for o in again] == [
        ("skipped", "already handled for this incident (dry_run)")
    ]
    live = await make(dry_run=False)
    assert statuses(await rate_limited(live, incident)) == [("enable_request_queuing", "applied")]
    assert env_of(cluster)["RATE_LIMIT_MODE"] == "queue"
