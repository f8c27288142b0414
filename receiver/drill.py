"""``posthog-receiver drill``: a game day on demand, against the real configured destinations.

The only way to learn that a routing key expired, a Slack webhook was revoked or a Role lost a
verb should not be a real outage. The drill runs a synthetic incident through every outside
system the runbook relies on, each message marked DRILL, and changes nothing people or
customers depend on:

- PagerDuty: one alert event under its own key (``posthog-receiver/drill-<time>``), resolved
  at the end;
- Slack: one message;
- Statuspage: only read (the page and the configured component); nothing customers see;
- Kubernetes: every configured runbook action as a server-side dry run (``dryRun=All``:
  admission, validation and RBAC run, nothing is stored), and every permission the runbook
  steps need asked with a ``SelfSubjectAccessReview``;
- PostHog's status page and our health URL: read as triage reads them.

Why it sends directly and not through the outbox: the outbox retries, coalesces and holds
messages back, which is right for an incident and wrong for a drill. A drill must report each
destination's own answer now (a 400 for an expired routing key, a 403 from Statuspage), in the
run that asked, so the person or the CronJob reading the result can act on it. The senders and
clients are the service's own (:mod:`receiver.notify`, :mod:`receiver.kube`,
:mod:`receiver.upstream`, :mod:`receiver.health`), so the drill exercises the code an incident
runs.

Each step passes, fails (with what to fix) or is skipped (not configured); the result can be
reported to the running receiver (``POST /api/drills``), which exports it as metrics for the
alert rules, since a command cannot be scraped.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import structlog

from receiver.config import RemediationSettings, RunbookActionSettings, Settings
from receiver.health import HealthReader, HealthState
from receiver.kube.access import Permission, can_i
from receiver.kube.client import KubeConnection
from receiver.kube.errors import KubeError, KubeForbidden, KubeNotFound
from receiver.kube.workload import IntegrationWorkload
from receiver.notify.delivery import (
    DeliveryError,
    Message,
    PermanentFailure,
    TemporaryFailure,
    http_call,
)
from receiver.notify.pagerduty import CLIENT, PagerDutySender
from receiver.notify.slack import SlackSender
from receiver.notify.statuspage import TEMPORARY
from receiver.redaction import Redactor
from receiver.upstream import UpstreamReader

__all__ = [
    "DrillReport",
    "StepResult",
    "drill_key",
    "permissions_needed",
    "report_to_receiver",
    "run_drill",
]

logger = structlog.get_logger(__name__)

StepStatus = Literal["passed", "failed", "skipped"]
MARK = "DRILL"
# The receiver answers at once (it only sets gauges); a longer wait means it is not there.
REPORT_TIMEOUT_SECONDS = 10.0
TITLE = f"{MARK}: posthog-receiver game day, no action needed"


@dataclass(frozen=True)
class StepResult:
    """One step of the drill: what was tried, how it went, how long it took, what to fix."""

    name: str
    status: StepStatus
    seconds: float
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        """The step for people: one line with its outcome and time, then the answer and fix."""
        word = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[self.status]
        out = [f"{word}  {self.name}  ({self.seconds:.2f} s)", f"      {self.detail}"]
        if self.fix:
            out.append(f"      fix: {self.fix}")
        return out


@dataclass(frozen=True)
class DrillReport:
    """Every step of one drill, in order."""

    drill_id: str
    started_at: float
    steps: tuple[StepResult, ...]

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        n, bad = len(self.steps), len(self.failed)
        skipped = sum(s.status == "skipped" for s in self.steps)
        verdict = "passed" if self.ok else f"FAILED ({bad} step{'s' if bad != 1 else ''})"
        return f"drill {self.drill_id}: {verdict}; {n} steps, {skipped} skipped"

    def result(self) -> dict[str, Any]:
        """What the receiver's ``POST /api/drills`` takes."""
        return {
            "drill": self.drill_id,
            "steps": len(self.steps),
            "failed": [s.name for s in self.failed],
        }


class StepFailed(Exception):
    """A step did not pass: what happened, and what to fix."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class StepSkipped(Exception):
    """A step with nothing to check (not configured)."""


def drill_key(drill_id: str) -> str:
    """The PagerDuty ``dedup_key`` of a drill: its own, never an incident's."""
    return f"posthog-receiver/{drill_id}"


def _drill_id(at: float) -> str:
    return "drill-" + datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%SZ")


def _delivery_fix(e: DeliveryError, permanent: str, service: str, url_setting: str) -> str:
    if isinstance(e, PermanentFailure):
        return permanent
    return (
        f"{service} could not be reached or failed for now: check egress to {url_setting} "
        "and the service's status, then run the drill again"
    )


# -- Kubernetes ------------------------------------------------------------------------------


def _acting(remediation: RemediationSettings) -> list[RunbookActionSettings]:
    """The runbook entries that can change the workload."""
    if not remediation.enabled:
        return []
    return [a for a in remediation.actions if a.enabled and a.kind != "escalate_infrastructure"]


def permissions_needed(settings: Settings) -> list[Permission]:
    """Every permission the runbook steps use on the configured target (docs/rbac.md)."""
    t = settings.remediation.target
    ns = t.namespace
    acting = _acting(settings.remediation)
    needed = [Permission("get", "deployments", ns, group="apps", name=t.deployment)]
    if any(a.kind in ("set_env", "restart_if_key_rotated", "copy_api_key") for a in acting):
        needed.append(Permission("patch", "deployments", ns, group="apps", name=t.deployment))
    needed += [
        Permission("list", "pods", ns),
        Permission("get", "pods", ns, subresource="log"),
        Permission("get", "secrets", ns, name=t.api_key_secret),
    ]
    if t.source_secret is not None:
        needed.append(Permission("get", "secrets", ns, name=t.source_secret))
    if any(a.kind == "copy_api_key" for a in acting):
        needed.append(Permission("patch", "secrets", ns, name=t.api_key_secret))
    needed += [Permission("create", "events", ns), Permission("list", "events", ns)]
    return needed


def _kube_detail(e: KubeError) -> str:
    """The failure for people: the API server's status, not its whole Status document."""
    if e.status is not None and 400 <= e.status < 500:
        return f"the API server answered {e.status} to: {e.operation}"
    return str(e)


def _kube_fix(e: KubeError, what: str) -> str:
    if isinstance(e, KubeForbidden):
        return f"grant '{e.operation}' to the receiver's service account (its Role: docs/rbac.md)"
    if isinstance(e, KubeNotFound):
        return f"check remediation.target: {what} was not found"
    return "check the API server and kubernetes settings, then run the drill again"


# -- the drill -------------------------------------------------------------------------------


@dataclass
class _Drill:
    settings: Settings
    session: aiohttp.ClientSession
    redactor: Redactor
    clock: Callable[[], float]
    on_step: Callable[[StepResult], None]
    drill_id: str
    steps: list[StepResult] = field(default_factory=list)

    async def step(self, name: str, check: Callable[[], Awaitable[str]]) -> StepResult:
        started = time.monotonic()
        try:
            detail = await check()
            status: StepStatus = "passed"
            fix = ""
        except StepFailed as e:
            status, detail, fix = "failed", e.detail, e.fix
        except StepSkipped as e:
            status, detail, fix = "skipped", str(e), ""
        except Exception as e:
            # A bug must not hide the other steps' results: this one fails, the drill goes on.
            logger.exception("drill step crashed", step=name)
            status, detail = "failed", f"unexpected error ({type(e).__name__})"
            fix = "see the error logged above; this is a fault of the receiver, not of the setup"
        result = StepResult(name, status, time.monotonic() - started, detail, fix)
        self.steps.append(result)
        self.on_step(result)
        return result

    def _message(self, destination: str, kind: str, payload: dict[str, Any]) -> Message:
        return Message(
            id=0,
            destination=destination,
            incident_id=self.drill_id,
            kind=kind,
            payload=payload,
            attempts=0,
            created_at=self.clock(),
        )

    # -- PagerDuty --

    async def pagerduty(self, action: Literal["trigger", "resolve"]) -> str:
        pd = self.settings.notify.pagerduty
        if pd is None:
            raise StepSkipped("notify.pagerduty is not configured")
        key = drill_key(self.drill_id)
        event: dict[str, Any] = {"event_action": action, "dedup_key": key}
        if action == "trigger":
            event |= {
                "payload": {
                    "summary": TITLE,
                    "source": pd.source,
                    "severity": "info",
                    "timestamp": datetime.fromtimestamp(self.clock(), UTC).isoformat(),
                    "class": "drill",
                    "custom_details": {
                        "drill": self.drill_id,
                        "note": "A drill of the PostHog incident runbook; resolved at its end.",
                    },
                },
                "client": CLIENT,
            }
        sender = PagerDutySender(pd, redactor=self.redactor, clock=self.clock)
        try:
            await sender.send(
                self.session, self._message("pagerduty", "pagerduty.alert", event), {}
            )
        except DeliveryError as e:
            raise StepFailed(
                str(e),
                _delivery_fix(
                    e,
                    "PagerDuty refused the event: check notify.pagerduty.routing_key (the "
                    "integration key of an Events API v2 integration on the service) and "
                    "events_url",
                    "PagerDuty",
                    "notify.pagerduty.events_url",
                ),
            ) from None
        return f"accepted, dedup key {key}"

    # -- Slack --

    async def slack(self) -> str:
        slack = self.settings.notify.slack
        if slack is None:
            raise StepSkipped("notify.slack is not configured")
        text = (
            f":test_tube: *{TITLE}*\n"
            f"Drill {self.drill_id}: checking that incident messages reach this channel."
        )
        payload = {
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        }
        try:
            await SlackSender(slack, redactor=self.redactor).send(
                self.session, self._message("slack", "slack.message", payload), {}
            )
        except DeliveryError as e:
            raise StepFailed(
                str(e),
                _delivery_fix(
                    e,
                    "Slack refused the message: the incoming webhook was revoked or is wrong; "
                    "create one for the channel and update notify.slack.webhook_url",
                    "Slack",
                    "hooks.slack.com",
                ),
            ) from None
        return "posted"

    # -- Statuspage (read only) --

    async def statuspage(self) -> str:
        sp = self.settings.notify.statuspage
        if sp is None:
            raise StepSkipped("notify.statuspage is not configured")
        page = f"{sp.api_base}/pages/{quote(sp.page_id, safe='')}"
        headers = {"Authorization": f"OAuth {sp.api_key.secret.get_secret_value()}"}
        found: list[str] = []
        for what, url, setting in (
            ("page", page, "page_id"),
            ("component", f"{page}/components/{quote(sp.component_id, safe='')}", "component_id"),
        ):
            try:
                answer = await http_call(
                    self.session,
                    "GET",
                    url,
                    service="Statuspage",
                    json_body=None,
                    headers=headers,
                    timeout_seconds=sp.timeout_seconds,
                    ok=(200,),
                    temporary=TEMPORARY,
                    redactor=self.redactor,
                )
            except TemporaryFailure as e:
                raise StepFailed(
                    str(e), _delivery_fix(e, "", "Statuspage", "notify.statuspage.api_base")
                ) from None
            except PermanentFailure as e:
                fix = (
                    f"check notify.statuspage.{setting}"
                    if "answered 404" in str(e)
                    else "check notify.statuspage.api_key: the key must belong to a user "
                    "with access to the page"
                )
                raise StepFailed(f"reading the {what}: {e}", fix) from None
            body = answer.json()
            name = body.get("name") if isinstance(body, dict) else None
            status = body.get("status") if isinstance(body, dict) else None
            shown = f"{what} {name!s}" if name else what
            found.append(f"{shown} ({status})" if status and what == "component" else shown)
        return "read " + " and ".join(found) + "; nothing published"

    # -- Kubernetes --

    async def kubernetes(self) -> None:
        settings = self.settings
        if settings.kubernetes.mode == "none":
            await self.step("Kubernetes: connect", self._no_cluster)
            return
        connection: KubeConnection | None = None

        async def connect() -> str:
            nonlocal connection
            try:
                connection = await KubeConnection.open(settings.kubernetes)
            except KubeError as e:
                raise StepFailed(str(e), "check the kubernetes settings") from None
            return f"connected ({settings.kubernetes.mode})"

        await self.step("Kubernetes: connect", connect)
        if connection is None:
            return
        try:
            await self._kube_steps(connection)
        finally:
            await connection.close()

    @staticmethod
    async def _no_cluster() -> str:
        raise StepSkipped("kubernetes.mode is none: no cluster to check")

    async def _kube_steps(self, connection: KubeConnection) -> None:
        target = self.settings.remediation.target
        workload = IntegrationWorkload(connection, target=target)

        async def read() -> str:
            try:
                dep = await workload.deployment()
                pods = await workload.integration_pods()
                key = await workload.api_key()
            except KubeError as e:
                raise StepFailed(
                    _kube_detail(e), _kube_fix(e, "the Deployment or its Secret")
                ) from None
            secret = "present" if key.exists and key.non_empty else "missing or empty"
            return (
                f"Deployment {workload.where}: {dep.replicas} replicas; {len(pods.pods)} pods; "
                f"API-key Secret {secret}"
            )

        await self.step("Kubernetes: read the Deployment, its pods and the API-key Secret", read)
        for action in self.settings.remediation.actions:
            if action.enabled:
                await self.step(
                    f"Kubernetes: dry run of {action.name}",
                    partial(self._dry_run, workload, action),
                )
        for permission in permissions_needed(self.settings):
            await self.step(
                f"Kubernetes: may {permission}",
                partial(self._can_i, connection, permission),
            )

    async def _dry_run(self, workload: IntegrationWorkload, action: RunbookActionSettings) -> str:
        remediation = self.settings.remediation
        if not remediation.enabled:
            raise StepSkipped("remediation.enabled is off")
        try:
            if action.kind == "set_env":
                assert action.env is not None  # checked when the config is loaded
                change = await workload.set_env(
                    env=action.env,
                    value=action.value,
                    dry_run=True,
                    conflict_attempts=remediation.conflict_attempts,
                )
                if not change.changed and change.before == change.after:
                    return f"{action.env} is already {change.after.describe()}: nothing to change"
                return f"server accepted setting {action.env} to {change.after.describe()}"
            if action.kind == "restart_if_key_rotated":
                await workload.restart(
                    restarted_at=datetime.fromtimestamp(self.clock(), UTC).isoformat(),
                    dry_run=True,
                )
                return "server accepted the rollout restart"
            if action.kind == "copy_api_key":
                outcome = await workload.copy_api_key(
                    dry_run=True,
                    now=datetime.fromtimestamp(self.clock(), UTC),
                    conflict_attempts=remediation.conflict_attempts,
                )
                return (
                    "the keys are already equal: nothing to change"
                    if outcome == "already_equal"
                    else "server accepted copying the new API key"
                )
        except KubeError as e:
            raise StepFailed(_kube_detail(e), _kube_fix(e, "the Deployment or a Secret")) from None
        raise StepSkipped("escalates to people only: nothing to change in the cluster")

    async def _can_i(self, connection: KubeConnection, permission: Permission) -> str:
        try:
            verdict = await can_i(connection.api, permission, policy=connection.policy)
        except KubeError as e:
            raise StepFailed(
                _kube_detail(e),
                "the access review itself failed: check the API server (any authenticated "
                "account may create a SelfSubjectAccessReview)",
            ) from None
        if verdict.allowed:
            return "allowed"
        why = f" ({verdict.reason})" if verdict.reason else ""
        raise StepFailed(
            f"denied{why}",
            f"grant '{permission}' to the receiver's service account (its Role: docs/rbac.md)",
        )

    # -- reading what triage reads --

    async def upstream(self) -> str:
        reader = UpstreamReader(self.settings.triage.upstream, session=self.session)
        status = await reader.status()
        if status.error is not None:
            raise StepFailed(
                f"{status.url}: {status.error}",
                "check triage.upstream.url and egress to PostHog's status page",
            )
        return f"{status.url}: {status.description or status.indicator.value}"

    async def health(self) -> str:
        reader = HealthReader(self.settings.triage.health, session=self.session)
        status = await reader.check()
        if status.state is HealthState.NOT_CONFIGURED:
            raise StepSkipped("triage.health.url is not configured")
        where = f"{status.url} ({status.path})"
        if status.state is HealthState.HEALTHY:
            return f"{where}: {status.value}"
        if status.state is HealthState.UNKNOWN:
            raise StepFailed(
                f"{where}: {status.reason}", "check triage.health.url and triage.health.path"
            )
        raise StepFailed(
            f"{where}: unhealthy, {status.reason}",
            "the integration itself reports a problem or cannot be reached: check it",
        )


async def run_drill(
    settings: Settings,
    *,
    redactor: Redactor,
    on_step: Callable[[StepResult], None] = lambda step: None,
    clock: Callable[[], float] = time.time,
) -> DrillReport:
    """Run every step once, in order, calling ``on_step`` as each ends; secrets must be
    resolvable (:func:`receiver.config.require_secrets`)."""
    started = clock()
    async with aiohttp.ClientSession() as session:
        drill = _Drill(settings, session, redactor, clock, on_step, _drill_id(started))
        trigger = await drill.step(
            "PagerDuty: trigger a DRILL alert", lambda: drill.pagerduty("trigger")
        )
        await drill.step("Slack: post a DRILL message", drill.slack)
        await drill.step(
            "Statuspage: read the page and the component (nothing published)", drill.statuspage
        )
        await drill.kubernetes()
        await drill.step("PostHog status page: read", drill.upstream)
        await drill.step("Health URL: read", drill.health)
        if trigger.status == "passed":
            await drill.step(
                "PagerDuty: resolve the DRILL alert", lambda: drill.pagerduty("resolve")
            )
    return DrillReport(drill.drill_id, started, tuple(drill.steps))


def _authorization(settings: Settings) -> dict[str, str]:
    webhook = settings.webhook
    if webhook.bearer_token is not None:
        return {"Authorization": f"Bearer {webhook.bearer_token.secret.get_secret_value()}"}
    if webhook.basic_auth is not None:
        pair = (
            f"{webhook.basic_auth.username}:{webhook.basic_auth.password.secret.get_secret_value()}"
        )
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


async def report_to_receiver(
    report: DrillReport, *, receiver_url: str, settings: Settings, redactor: Redactor
) -> StepResult:
    """Send the result to the running receiver (``POST /api/drills``, with the webhook's
    credentials), which exports it as metrics; the outcome as one more step."""
    started = time.monotonic()
    url = receiver_url.rstrip("/") + "/api/drills"
    try:
        async with aiohttp.ClientSession() as session:
            await http_call(
                session,
                "POST",
                url,
                service="the receiver",
                json_body=report.result(),
                headers=_authorization(settings),
                timeout_seconds=REPORT_TIMEOUT_SECONDS,
                ok=(204,),
                redactor=redactor,
            )
    except DeliveryError as e:
        return StepResult(
            "Receiver: record the result",
            "failed",
            time.monotonic() - started,
            str(e),
            "check --report-to (the receiver's URL) and that webhook credentials match the "
            "receiver's",
        )
    return StepResult(
        "Receiver: record the result", "passed", time.monotonic() - started, f"recorded at {url}"
    )
