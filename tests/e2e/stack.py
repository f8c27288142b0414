"""The whole chain on loopback, as it runs in production, for end-to-end tests and the bench.

    stand-in integration ──scrape──▶ Prometheus (the chart's alert rules)
        (posthog_errors_total,            │ alerts
         /health)                         ▼
                                   Alertmanager (the chart's example route and receiver)
                                          │ webhook, bearer auth
                                          ▼
    fake PostHog status page ◀── posthog-receiver serve (a subprocess) ──▶ Kubernetes emulator
                                          │                                 (kubeconfig)
                                          ▼
                         fake PagerDuty, Statuspage and Slack

Everything but the receiver, Prometheus and Alertmanager runs in the test's event loop, so the
test can look at (and break) every outside system the receiver talks to. Every process and
server listens on a free port: other test runs share the machine.

Production timings are minutes; tests cannot wait that long, so two things are shrunk, and
only in copies written for the test (the shipped files are used as they are otherwise):

- the chart's alert rules (``files/posthog-rules.yaml``): every ``for:`` becomes ``RULE_FOR``
  and every range selector (``[5m]``) becomes ``RULE_WINDOW``. Thresholds, labels and
  expressions are otherwise the chart's, so an alert that fires here fires in production;
- the example Alertmanager configuration: ``group_wait``/``group_interval`` become
  sub-second, and the webhook URL and token file point at the test's receiver. The routes,
  matchers, grouping and ``send_resolved``/``max_alerts`` are the example's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import attrs
import yaml
from aiohttp import web
from kmock import Request, Server

from tests.fakes.errors_exporter import ErrorsExporter
from tests.fakes.http import FakeServer
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.prometheus_server import running_prometheus
from tests.fakes.slack import FakeSlack
from tests.fakes.status_page import FakeStatusPage, incident
from tests.fakes.statuspage import FakeStatuspage
from tests.kube_emulator import (
    DEPLOYMENTS,
    PODS,
    SECRETS,
    ClusterEmulator,
    deployment,
    pod,
    secret,
    write_kubeconfig,
)
from tests.procs import (
    Alertmanager,
    ReceiverProcess,
    receiver_config,
)

__all__ = [
    "ALERTMANAGER_EXAMPLE",
    "CHART_RULES",
    "ChartAlertmanager",
    "Cluster",
    "PostHogIntegration",
    "Stack",
    "eventually",
    "render_rules",
    "running_stack",
]

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
CHART_RULES = REPO / "helm" / "posthog-incident-receiver" / "files" / "posthog-rules.yaml"
ALERTMANAGER_EXAMPLE = REPO / "deploy" / "alertmanager" / "alertmanager.yml"

RULE_FOR = "1s"
RULE_WINDOW = "4s"
EVALUATION_INTERVAL = "1s"

NAMESPACE = "prod"
DEPLOYMENT = "posthog-integration"
CONTAINER = "posthog-integration"
API_KEY_SECRET = "posthog-secrets"
PODS_STARTED = "2026-11-20T08:00:00Z"
KEY_SET_BEFORE_PODS = "2026-11-19T08:00:00Z"
KEY_ROTATED_AFTER_PODS = "2026-11-21T08:00:00Z"

ROUTING_KEY = "e2e0routing0key0000000000000000a"  # PagerDuty integration keys are 32 chars
STATUSPAGE_KEY = "e2e-statuspage-oauth-key-3c1f"
STATUSPAGE_PAGE = "e2epage0001"
STATUSPAGE_COMPONENT = "e2ecomp0001"

REQUEST_LOG = 32  # requests the emulator remembers (the one being served is the last)

_RANGE = re.compile(r"\[\d+[smhdwy]\]")


async def eventually(
    probe: Callable[[], T | Awaitable[T]], *, what: str, timeout: float = 30.0
) -> T:
    """Poll ``probe`` (sync or async) until it returns something truthy; that is returned.

    Fails naming ``what`` and the last value seen. The deadline bounds the wait only: a test
    never asserts how fast something happened.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last: Any = None
    while True:
        last = probe()
        if asyncio.iscoroutine(last) or isinstance(last, asyncio.Future):
            last = await last
        if last:
            return last  # type: ignore[return-value]
        if loop.time() > end:
            raise AssertionError(f"{what}: not reached within {timeout}s; last: {last!r}")
        await asyncio.sleep(0.1)


# -- the chart's files, with test timings --------------------------------------------------------


def render_rules(dest: Path, *, hold: str = RULE_FOR, window: str = RULE_WINDOW) -> Path:
    """Write the chart's alert rules with every ``for:`` set to ``hold`` and every range
    selector set to ``window``; nothing else changes."""
    doc = yaml.safe_load(CHART_RULES.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = hold
            rule["expr"] = _RANGE.sub(f"[{window}]", rule["expr"])
    dest.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return dest


def _shorten(route: dict[str, Any], timings: dict[str, str]) -> None:
    for key, value in timings.items():
        if key in route:
            route[key] = value
    for child in route.get("routes", []):
        _shorten(child, timings)


class ChartAlertmanager(Alertmanager):
    """Debian's Alertmanager running the chart's example configuration.

    The only changes: the webhook URL and the token file point at the test's receiver, and
    the group timings are shrunk (``group_wait``, ``group_interval``; see the module doc).
    """

    def build_config(
        self,
        *,
        webhook_url: str,
        token_file: Path,
        group_wait: str,
        group_interval: str,
        group_by: tuple[str, ...],
    ) -> dict[str, Any]:
        # The example's own grouping (group_by) is what is under test, so it is kept.
        config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text(encoding="utf-8"))
        _shorten(config["route"], {"group_wait": group_wait, "group_interval": group_interval})
        hooks = [h for r in config["receivers"] for h in r.get("webhook_configs", [])]
        assert len(hooks) == 1, "the example has exactly one webhook: the receiver"
        hooks[0]["url"] = webhook_url
        hooks[0]["http_config"]["authorization"]["credentials_file"] = str(token_file)
        return config


# -- the PostHog integration, as Prometheus and the receiver see it -----------------------------


class PostHogIntegration:
    """Stand-in for the PostHog integration: its ``posthog_errors_total`` and ``/health``.

    The test decides which status codes rise (``rise``) and when they stop (``calm``); a
    ticker adds to the counters several times a second, as real traffic would.
    """

    TICK = 0.2

    def __init__(self, *, codes: tuple[str, ...] = ("401", "429", "503")) -> None:
        self.exporter = ErrorsExporter()
        for code in codes:  # series exist from the first scrape, so a rise is an increase
            self.exporter.add(code, 0)
        self.rising: dict[str, float] = {}
        self.health = "ok"
        self.server = FakeServer()
        self.server.app.router.add_get("/metrics", self._metrics)
        self.server.app.router.add_get("/health", self._health)
        self._ticker: asyncio.Task[None] | None = None

    def rise(self, status_code: str, per_second: float = 10.0) -> None:
        self.rising[status_code] = per_second

    def calm(self, status_code: str | None = None) -> None:
        if status_code is None:
            self.rising.clear()
        else:
            self.rising.pop(status_code, None)

    @property
    def address(self) -> str:
        return self.server.base_url.removeprefix("http://")

    @property
    def health_url(self) -> str:
        return self.server.base_url + "/health"

    async def start(self) -> None:
        await self.server.start()
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.server.stop()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.TICK)
            for code, per_second in self.rising.items():
                self.exporter.counts[code] += per_second * self.TICK

    async def _metrics(self, request: web.Request) -> web.Response:
        self.exporter.scrapes += 1
        return web.Response(text=self.exporter.render(), content_type="text/plain")

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": self.health, "services": {"posthog": {"status": self.health}}}
        )


# -- Kubernetes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """A write the API server stored (not a dry run, not refused), and when."""

    at: float
    method: str
    plural: str
    name: str | None
    body: Any


@attrs.define(kw_only=True)
class Cluster(ClusterEmulator):
    """The Kubernetes emulator, remembering when each write was accepted (for latency)."""

    accepted: list[Accepted] = attrs.field(factory=list)

    async def _handle(self, request: Request) -> web.StreamResponse:
        # kmock matches each request against its whole request log, so it slows down with
        # every request served. This harness reads ``accepted`` only: keeping the log short
        # lets a long run (the storm, the bench) measure the receiver, not the emulator.
        del self._requests[:-REQUEST_LOG]
        response = await super()._handle(request)
        if (
            request.method.value in ("PATCH", "POST", "PUT", "DELETE")
            and request.resource is not None
            and "dryRun" not in request.params
            and response.status < 300
        ):
            self.accepted.append(
                Accepted(
                    time.time(),
                    request.method.value,
                    request.resource.plural,
                    request.name,
                    request.data,
                )
            )
        return response

    def seed(self, *, key_changed_at: str = KEY_SET_BEFORE_PODS) -> None:
        """The integration: its Deployment, two running pods, and the API-key Secret."""
        self.put_object(DEPLOYMENTS, NAMESPACE, DEPLOYMENT, deployment(DEPLOYMENT))
        for n in ("7d9c6b5f4-abcde", "7d9c6b5f4-fghij"):
            name = f"{DEPLOYMENT}-{n}"
            self.put_object(PODS, NAMESPACE, name, pod(name, started=PODS_STARTED))
        key = base64.b64encode(b"phc_e2e_current_key").decode()
        self.put_object(
            SECRETS,
            NAMESPACE,
            API_KEY_SECRET,
            secret(API_KEY_SECRET, {"api-key": key}, managed_at=key_changed_at),
        )

    def integration(self) -> dict[str, Any]:
        return self.current(DEPLOYMENTS, NAMESPACE, DEPLOYMENT)

    def env(self) -> dict[str, str]:
        """The integration container's environment, as stored now."""
        containers = self.integration()["spec"]["template"]["spec"]["containers"]
        (ours,) = [c for c in containers if c["name"] == CONTAINER]
        return {e["name"]: e.get("value", "") for e in ours.get("env", [])}

    def restarted_at(self) -> str | None:
        template = self.integration()["spec"]["template"]
        annotations = template.get("metadata", {}).get("annotations") or {}
        value = annotations.get("kubectl.kubernetes.io/restartedAt")
        return str(value) if value is not None else None

    def deployment_writes(self) -> list[Accepted]:
        return [a for a in self.accepted if a.plural == "deployments" and a.name == DEPLOYMENT]


# -- the stack -----------------------------------------------------------------------------------


@dataclass
class Stack:
    """Every part of one end-to-end run; ``receiver`` can be killed and started again."""

    workdir: Path
    integration: PostHogIntegration
    status_page: FakeStatusPage
    pagerduty: FakePagerDuty
    statuspage: FakeStatuspage
    slack: FakeSlack
    cluster: Cluster
    receiver: ReceiverProcess
    alertmanager: ChartAlertmanager | None = None
    prometheus_url: str | None = None
    session: aiohttp.ClientSession = field(init=False)

    def __post_init__(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    # PostHog's own status page
    def posthog_incident(self, name: str = "Elevated error rates on ingestion") -> None:
        self.status_page.indicator = "major"
        self.status_page.incidents = [incident(name, impact="major")]

    def posthog_all_clear(self) -> None:
        self.status_page.indicator = "none"
        self.status_page.incidents = []

    # the receiver's API
    async def api(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.receiver.token}"}
        async with self.session.get(self.receiver.url + path, headers=headers) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def approve(self, incident_id: str) -> str | None:
        """Approve what the incident page offers, as the on-call person signed in as the
        example config does it (``oncall``, the webhook token); the approval's form action, or
        ``None`` while nothing awaits approval."""
        auth = aiohttp.BasicAuth("oncall", self.receiver.token)
        page_url = f"{self.receiver.url}/incidents/{incident_id}"
        async with self.session.get(page_url, auth=auth) as resp:
            resp.raise_for_status()
            page = await resp.text()
        form = re.search(
            r'<form method="post" action="([^"]+/approvals/[^"]+)" class="approve">\s*'
            r'<input type="hidden" name="csrf" value="([^"]+)">',
            page,
        )
        if form is None:
            return None
        action, csrf = html.unescape(form.group(1)), html.unescape(form.group(2))
        data = {"csrf": csrf, "decision": "approve"}
        async with self.session.post(self.receiver.url + action, data=data, auth=auth) as resp:
            assert resp.status < 400, (resp.status, await resp.text())
        return action

    async def incidents(self) -> list[dict[str, Any]]:
        body = await self.api("/api/incidents")
        items = body["incidents"] if isinstance(body, dict) else body
        return list(items)

    async def incident(self, incident_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.api(f"/api/incidents/{incident_id}")
        return body

    async def only_incident(self, *, status: str | None = None) -> dict[str, Any] | None:
        """The one incident, once it exists (and has ``status``); more than one fails."""
        found = await self.incidents()
        assert len(found) <= 1, f"expected one incident, got {len(found)}: {found}"
        if not found or (status is not None and found[0]["status"] != status):
            return None
        return await self.incident(found[0]["id"])

    async def post_webhook(self, body: dict[str, Any]) -> int:
        headers = {"Authorization": f"Bearer {self.receiver.token}"}
        async with self.session.post(
            self.receiver.url + "/webhook/alertmanager", json=body, headers=headers
        ) as resp:
            await resp.read()
            return resp.status

    async def alertmanager_alerts(self, alertname: str) -> list[dict[str, Any]]:
        """Active alerts named ``alertname`` that Alertmanager holds now."""
        assert self.alertmanager is not None
        url = f"http://{self.alertmanager.address}/api/v2/alerts"
        params = {"filter": f'alertname="{alertname}"', "active": "true"}
        async with self.session.get(url, params=params) as resp:
            resp.raise_for_status()
            found: list[dict[str, Any]] = await resp.json()
            return found

    # processes, started and stopped off the event loop (the fakes live on it)
    async def kill_receiver(self) -> None:
        await asyncio.to_thread(self.receiver.kill)

    async def start_receiver(self) -> None:
        await asyncio.to_thread(self.receiver.start)

    # what reached PagerDuty
    def pages(self, action: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.pagerduty.alerts if action is None or a["event_action"] == action]

    def dedup_keys(self) -> set[str]:
        return {a["dedup_key"] for a in self.pagerduty.alerts if a.get("dedup_key")}


def receiver_settings(
    workdir: Path,
    *,
    cluster_url: str,
    status_url: str,
    health_url: str,
    pagerduty_url: str,
    statuspage_url: str,
    slack_url: str,
    **overrides: Any,
) -> dict[str, Any]:
    """The receiver's configuration for an end-to-end run: acting for real on the emulated
    cluster, notifying the fakes, with test-sized waits. ``overrides`` replace whole groups'
    keys (merged one level deep)."""
    secrets = workdir / "secrets"
    secrets.mkdir(exist_ok=True)
    for name, value in (
        ("pagerduty-routing-key", ROUTING_KEY),
        ("statuspage-api-key", STATUSPAGE_KEY),
        ("slack-webhook-url", slack_url),
    ):
        (secrets / name).write_text(value, encoding="utf-8")
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", cluster_url.rstrip("/"))
    groups: dict[str, Any] = {
        "server": {"max_body_bytes": 1_048_576},  # production's: a storm's group is large
        "triage": {
            "upstream": {"url": status_url, "timeout_seconds": 2, "cache_ttl_seconds": 0},
            "health": {"url": health_url, "timeout_seconds": 2},
            "cluster_timeout_seconds": 5,
        },
        "kubernetes": {
            "mode": "kubeconfig",
            "kubeconfig": str(kubeconfig),
            "request_timeout_seconds": 2,
            "retry_attempts": 2,
            "retry_backoff_seconds": 0.05,
        },
        "remediation": {
            "dry_run": False,
            "target": {"namespace": NAMESPACE},
            "cooldown_seconds": 600,
            "revert_hold_down_seconds": 0.5,
            "rollout_timeout_seconds": 5,
            "rollout_poll_seconds": 0.1,
        },
        "responder": {"revert_check_seconds": 0.2},
        # The on-call person, as the example config signs them in: approvals on the page.
        "ui": {
            "users": [{"username": "oncall", "password": {"env": "POSTHOG_RECEIVER_WEBHOOK_TOKEN"}}]
        },
        "notify": {
            "pagerduty": {
                "routing_key": {"file": str(secrets / "pagerduty-routing-key")},
                "events_url": pagerduty_url,
                "timeout_seconds": 2,
            },
            "statuspage": {
                "api_base": statuspage_url + "/v1",
                "page_id": STATUSPAGE_PAGE,
                "component_id": STATUSPAGE_COMPONENT,
                "api_key": {"file": str(secrets / "statuspage-api-key")},
                "hold_off_seconds": 0,
                "timeout_seconds": 2,
            },
            "slack": {
                "webhook_url": {"file": str(secrets / "slack-webhook-url")},
                "timeout_seconds": 2,
            },
            "outbox": {
                "poll_interval_seconds": 0.1,
                "initial_backoff_seconds": 0.2,
                "max_backoff_seconds": 1,
                "jitter_seconds": 0.1,
            },
        },
    }
    for name, values in overrides.items():
        groups[name] = {**groups.get(name, {}), **values}
    return receiver_config(workdir, **groups)


@asynccontextmanager
async def running_stack(
    workdir: Path,
    *,
    alerting: bool = True,
    key_changed_at: str = KEY_SET_BEFORE_PODS,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """Start everything (``alerting=False``: no Prometheus/Alertmanager, webhooks are posted
    by the test); stop everything when the block ends."""
    async with AsyncExitStack() as stack:
        integration = PostHogIntegration()
        status_page = FakeStatusPage()
        pagerduty = FakePagerDuty(ROUTING_KEY)
        statuspage = FakeStatuspage(STATUSPAGE_KEY, STATUSPAGE_PAGE, STATUSPAGE_COMPONENT)
        slack = FakeSlack()
        for part in (integration, status_page, pagerduty, statuspage, slack):
            await part.start()
            stack.push_async_callback(part.stop)
        cluster = await stack.enter_async_context(Cluster())
        await stack.enter_async_context(Server(cluster))
        cluster.seed(key_changed_at=key_changed_at)

        rx_dir = workdir / "receiver"
        rx_dir.mkdir(parents=True)
        config = receiver_settings(
            rx_dir,
            cluster_url=str(cluster.url),
            status_url=status_page.url("summary"),
            health_url=integration.health_url,
            pagerduty_url=pagerduty.url,
            statuspage_url=statuspage.url,
            slack_url=slack.webhook_url,
            **overrides,
        )
        receiver = ReceiverProcess(rx_dir, config)
        config["server"]["public_url"] = receiver.url  # links in pages point at this receiver
        receiver.write_config(config)
        # SIGTERM (then SIGKILL) before the fakes it talks to stop, off the event loop they run on
        stack.push_async_callback(asyncio.to_thread, receiver.close)
        await asyncio.to_thread(receiver.start)

        result = Stack(
            workdir=workdir,
            integration=integration,
            status_page=status_page,
            pagerduty=pagerduty,
            statuspage=statuspage,
            slack=slack,
            cluster=cluster,
            receiver=receiver,
        )
        stack.push_async_callback(result.session.close)
        if alerting:
            am_dir = workdir / "alertmanager"
            am_dir.mkdir()
            am = ChartAlertmanager(
                am_dir, webhook_url=receiver.url + "/webhook/alertmanager", token=receiver.token
            )
            stack.push_async_callback(asyncio.to_thread, am.close)
            await asyncio.to_thread(am.start)
            rules = render_rules(workdir / "posthog-rules.yaml")
            result.alertmanager = am
            result.prometheus_url = await stack.enter_async_context(
                running_prometheus(
                    workdir / "prometheus",
                    targets=[integration.address],
                    scrape_interval=EVALUATION_INTERVAL,
                    more_jobs={"posthog-incident-receiver": [f"127.0.0.1:{receiver.port}"]},
                    rule_files=[rules],
                    alertmanagers=[am.address],
                )
            )
        yield result
