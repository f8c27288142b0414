"""Test wiring for notifications: fake services, a controlled clock, store, notifier, outbox."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from receiver.config import NotifySettings, StoreSettings, UiSettings
from receiver.metrics import Metrics
from receiver.notify import IncidentSnapshot, Notifier, OutboxWorker, build_notifier
from receiver.notify.outbox import list_messages
from receiver.redaction import Redactor
from receiver.runbook import ErrorClass, Severity
from receiver.store import Store
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack, FakeSlackWebApi
from tests.fakes.statuspage import FakeStatuspage

ROUTING_KEY = "R0ut1ngK3yF0rT3sts0nly0123456789"[:32]
STATUSPAGE_KEY = "sp-oauth-key-9f8e7d6c5b4a"
SLACK_PATH = "/services/T0SECRET/B0SECRET/sl4ckS3cr3tT0k3nXYZ"
SLACK_BOT_TOKEN = "xoxb-1234567890-0987654321-b0tS3cr3tT0k3n"
SLACK_CHANNEL = "C0INCIDENT"
PAGE_ID = "pg7x2k9q"
COMPONENT_ID = "cmp4h8n1"
PUBLIC_URL = "https://receiver.example.com"
PROMETHEUS_URL = "http://prometheus.example.com:9090"
COMMANDER = "<@U0ALICE01|alice>"
START = 1_750_000_000.0


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self, t: float = START) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclasses.dataclass
class Fakes:
    pagerduty: FakePagerDuty
    statuspage: FakeStatuspage
    slack: FakeSlack

    def all(self) -> list[Any]:
        return [self.pagerduty, self.statuspage, self.slack]


def notify_settings(
    fakes: Fakes | None,
    *,
    pagerduty: dict[str, Any] | None = None,
    statuspage: dict[str, Any] | None = None,
    slack: dict[str, Any] | None = None,
    outbox: dict[str, Any] | None = None,
    only: tuple[str, ...] = ("pagerduty", "statuspage", "slack"),
    slack_api: FakeSlackWebApi | None = None,
) -> NotifySettings:
    """Settings for the fakes; with ``slack_api``, Slack posts threads with a bot token there
    instead of using the incoming webhook."""
    data: dict[str, Any] = {
        "outbox": {
            "poll_interval_seconds": 0.01,
            "initial_backoff_seconds": 1,
            "max_backoff_seconds": 8,
            "jitter_seconds": 0,
            **(outbox or {}),
        }
    }
    if fakes is not None and "pagerduty" in only:
        data["pagerduty"] = {
            "routing_key": {"value": ROUTING_KEY},
            "events_url": fakes.pagerduty.url,
            "dashboard_url": "https://grafana.example.com/d/posthog",
            "runbook_url": "https://wiki.example.com/runbooks/posthog",
            "timeout_seconds": 2,
            **(pagerduty or {}),
        }
    if fakes is not None and "statuspage" in only:
        data["statuspage"] = {
            "api_base": fakes.statuspage.url + "/v1",
            "page_id": PAGE_ID,
            "component_id": COMPONENT_ID,
            "api_key": {"value": STATUSPAGE_KEY},
            "hold_off_seconds": 60,
            "timeout_seconds": 2,
            **(statuspage or {}),
        }
    if fakes is not None and "slack" in only:
        mode: dict[str, Any] = (
            {"webhook_url": {"value": fakes.slack.webhook_url}}
            if slack_api is None
            else {
                "bot_token": {"value": SLACK_BOT_TOKEN},
                "channel": SLACK_CHANNEL,
                "api_base": slack_api.api_base,
            }
        )
        data["slack"] = {
            **mode,
            "incident_commander": COMMANDER,
            "timeout_seconds": 2,
            **(slack or {}),
        }
    return NotifySettings.model_validate(data)


class Harness:
    """A store, a notifier and an outbox worker, restartable like the service."""

    def __init__(
        self, path: Path, settings: NotifySettings, clock: Clock, *, ui: UiSettings | None = None
    ) -> None:
        self.path = path
        self.settings = settings
        self.clock = clock
        self.ui = ui  # how links in messages are made (default: the plain page)
        self.metrics = Metrics()
        self.store: Store
        self.notifier: Notifier
        self.worker: OutboxWorker

    async def open(self) -> None:
        self.store = Store(StoreSettings(path=self.path))
        await self.store.open()
        self.notifier, self.worker = build_notifier(
            self.settings,
            store=self.store,
            metrics=self.metrics,
            public_url=PUBLIC_URL,
            prometheus_urls=(PROMETHEUS_URL,),
            redactor=Redactor.from_settings(self.settings),
            clock=self.clock,
            ui=self.ui,
        )

    async def close(self) -> None:
        await self.worker.stop()
        await self.store.close()

    async def restart(self) -> None:
        await self.close()
        await self.open()

    async def drain(self, *, passes: int = 200) -> int:
        """Run outbox passes until one attempts nothing; the number attempted."""
        total = 0
        for _ in range(passes):
            attempted = await self.worker.run_once()
            if not attempted:
                return total
            total += attempted
        raise AssertionError("the outbox kept working")

    async def messages(self, destination: str | None = None) -> list[dict[str, Any]]:
        """Stored messages, oldest first; only one destination's if given."""
        found = await self.store.read(list_messages)
        return [m for m in found if destination in (None, m["destination"])]

    def metric(self, name: str, destination: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"destination": destination})
        return value or 0.0


def snapshot(clock: Clock, incident_id: str = "inc-1", **changes: Any) -> IncidentSnapshot:
    base = IncidentSnapshot(
        id=incident_id,
        title="PostHogErrorsHigh (service=posthog-integration)",
        status="open",
        severity=Severity.P1,
        opened_at=clock.t,
        error_class=ErrorClass.UPSTREAM_ERROR,
        decision_summary="PostHog API returning errors; status page not checked yet",
        decision_steps=("PostHog API returning errors? yes",),
        generator_url="http://prometheus.example.com:9090/graph?g0.expr=posthog_errors_total",
        external_url="http://alertmanager.example.com:9093",
        labels={"alertname": "PostHogErrorsHigh", "service": "posthog-integration"},
    )
    return dataclasses.replace(base, **changes)


@pytest_asyncio.fixture(name="clock")
async def clock_fixture() -> Clock:
    return Clock()


@pytest_asyncio.fixture(name="fakes")
async def fakes_fixture(clock: Clock) -> AsyncIterator[Fakes]:
    found = Fakes(
        FakePagerDuty(ROUTING_KEY, clock=clock),
        FakeStatuspage(STATUSPAGE_KEY, PAGE_ID, COMPONENT_ID, clock=clock),
        FakeSlack(SLACK_PATH, clock=clock),
    )
    for fake in found.all():
        await fake.start()
    yield found
    for fake in found.all():
        await fake.stop()


@pytest_asyncio.fixture(name="slack_api")
async def slack_api_fixture(clock: Clock) -> AsyncIterator[FakeSlackWebApi]:
    """Slack's Web API for a bot token, with the incident channel the bot is a member of."""
    fake = FakeSlackWebApi(SLACK_BOT_TOKEN, channels=(SLACK_CHANNEL,), clock=clock)
    await fake.start()
    yield fake
    await fake.stop()
