"""One hostile label value through every output at once: what people are sent (Slack,
PagerDuty, the status page), what the API answers, the postmortem, the chart, the evidence
bundle and the log. Label values are data: escaped wherever they are shown, never a mention,
a link, markup or a file name."""

from __future__ import annotations

import io
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from receiver.app import create_app
from receiver.config import Settings
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack, markup
from tests.fakes.status_page import FakeStatusPage
from tests.fakes.statuspage import FakeStatuspage
from tests.rendered_markdown import HOSTILE, render
from tests.test_responder import ROUTING_KEY, AppClient, alert, eventually, payload

SLACK_HOSTILE = "<!channel> <!here> <@U0ATTACK> <!subteam^S0ATTACK> <http://evil.example|click>"
# Markdown, HTML, control characters and Slack's own sequences, then a value at the length limit.
VALUE = (HOSTILE + " " + SLACK_HOSTILE) * 8
VALUE = VALUE[:4096]
STATUSPAGE_KEY = "statuspage-api-key-0123456789"
SVG = "{http://www.w3.org/2000/svg}"


@pytest_asyncio.fixture
async def statuspage() -> AsyncIterator[FakeStatuspage]:
    fake = FakeStatuspage(STATUSPAGE_KEY, "page1", "comp1")
    await fake.start()
    yield fake
    await fake.stop()


def _settings(
    tmp_path: Path,
    status_page: FakeStatusPage,
    pagerduty: FakePagerDuty,
    slack: FakeSlack,
    statuspage: FakeStatuspage,
) -> Settings:
    return Settings.model_validate(
        {
            "webhook": {"bearer_token": {"value": "hostile-test-token-0123"}},
            "store": {"path": str(tmp_path / "state" / "receiver.sqlite3")},
            "triage": {
                "upstream": {"url": status_page.url(), "timeout_seconds": 1},
            },
            "evidence": {"directory": str(tmp_path / "evidence")},
            "notify": {
                "outbox": {"poll_interval_seconds": 0.02, "initial_backoff_seconds": 0.05},
                "pagerduty": {"routing_key": {"value": ROUTING_KEY}, "events_url": pagerduty.url},
                "slack": {"webhook_url": {"value": slack.webhook_url}},
                "statuspage": {
                    "api_base": statuspage.url + "/v1",
                    "page_id": "page1",
                    "component_id": "comp1",
                    "api_key": {"value": STATUSPAGE_KEY},
                    "hold_off_seconds": 0,
                },
            },
        }
    )


@pytest.mark.asyncio
async def test_a_hostile_label_is_text_in_every_output(
    tmp_path: Path,
    aiohttp_client: AppClient,
    status_page: FakeStatusPage,
    pagerduty: FakePagerDuty,
    slack: FakeSlack,
    statuspage: FakeStatuspage,
) -> None:
    """The same hostile value in a label, the group's labels and the summary reaches no
    output as anything but text."""
    auth = {"Authorization": "Bearer hostile-test-token-0123"}
    with capture_logs() as logs:
        client: TestClient[Any, Any] = await aiohttp_client(
            create_app(_settings(tmp_path, status_page, pagerduty, slack, statuspage))
        )
        body = payload(alert(status_code="401", severity="critical", team=VALUE))
        body["groupLabels"] = {**body["groupLabels"], "team": VALUE}
        body["alerts"][0]["annotations"]["summary"] = VALUE
        response = await client.post("/webhook/alertmanager", json=body, headers=auth)
        assert response.status == 200, await response.text()

        await eventually(lambda: _sent(pagerduty, slack, statuspage))
        incidents = await (await client.get("/api/incidents", headers=auth)).json()
        incident_id = incidents["incidents"][0]["id"]

        # Slack: nothing Slack acts on but the incident's own link.
        assert slack.rejected == []
        for text in slack.texts:
            assert [m for m in markup(text) if "/incidents/inc-" not in m or "/api/" in m] == []
            assert "<!channel>" not in text
        # PagerDuty: one-line summary, no foreign link, within limits.
        trigger = pagerduty.alerts[0]
        assert pagerduty.rejected == []
        assert "\n" not in trigger["payload"]["summary"]
        assert not [link for link in trigger.get("links", []) if "evil" in link["href"]]
        # The status page: nothing from the labels reaches customers.
        for incident in statuspage.incidents.values():
            shown = json.dumps(incident)
            assert "evil" not in shown
            assert "Owned" not in shown

        # The API answers JSON, with the value as a string, never interpreted.
        detail = await client.get(f"/api/incidents/{incident_id}", headers=auth)
        assert detail.content_type == "application/json"
        assert detail.headers["X-Content-Type-Options"] == "nosniff"
        labels = (await detail.json())["alerts"][0]["labels"]
        assert labels["team"] == VALUE

        # The postmortem renders the value as text.
        postmortem = await client.get(f"/api/incidents/{incident_id}/postmortem", headers=auth)
        shown_md = render(await postmortem.text())
        tags = {tag for tag, _ in shown_md.elements}
        assert not {"a", "script", "h1", "del", "table"} & tags
        assert [a for tag, a in shown_md.elements if tag == "img"] == [
            [("src", "chart.svg"), ("alt", "Error rate during the incident, with actions marked")]
        ]

        # The chart is XML with only its own elements.
        chart = await client.get(f"/api/incidents/{incident_id}/chart.svg", headers=auth)
        root = ET.fromstring(await chart.read())  # noqa: S314 (our own output, parsed to check it)
        assert {e.tag.removeprefix(SVG) for e in root.iter()} <= {
            "svg",
            "title",
            "rect",
            "text",
            "line",
            "g",
            "polyline",
        }

        # The evidence bundle's names are safe; its notes are text.
        evidence = await client.get(f"/api/incidents/{incident_id}/evidence", headers=auth)
        with tarfile.open(fileobj=io.BytesIO(await evidence.read()), mode="r:gz") as tar:
            names = tar.getnames()
        assert all(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._/-]*", n) for n in names), names

    # Log lines carry the value as data (structured fields), never a line break of their own.
    rendered = [json.dumps(e, default=str) for e in logs]
    assert all("\n" not in line for line in rendered)


async def _sent(pagerduty: FakePagerDuty, slack: FakeSlack, statuspage: FakeStatuspage) -> bool:
    return bool(pagerduty.alerts and slack.texts and statuspage.incidents)
