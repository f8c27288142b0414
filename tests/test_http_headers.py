"""Every answer of the real application says its type is not to be guessed and may run or
load nothing; alert data reaches the evidence endpoints as text, whatever it holds."""

from __future__ import annotations

import asyncio
import io
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from receiver.app import RecordingResponder, create_app
from receiver.config import (
    EvidenceSettings,
    SecretSource,
    ServerSettings,
    Settings,
    StoreSettings,
    WebhookSettings,
)
from receiver.keys import STORE
from receiver.store.incidents import add_timeline
from tests.incident_payloads import notification
from tests.rendered_markdown import HOSTILE, HOSTILE_SHOWN, render

TOKEN = "headers-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; sandbox"
SVG = "{http://www.w3.org/2000/svg}"


async def _broken(request: web.Request) -> web.Response:
    raise RuntimeError("a handler that fails")


def _app(tmp_path: Path) -> web.Application:
    settings = Settings(
        server=ServerSettings(max_body_bytes=4096),
        webhook=WebhookSettings(bearer_token=SecretSource(value=TOKEN)),
        store=StoreSettings(path=tmp_path / "receiver.sqlite3"),
        evidence=EvidenceSettings(directory=tmp_path / "evidence"),
    )
    app = create_app(settings, responder=RecordingResponder())
    # A route whose handler fails outside our request wrapper: aiohttp's own 500 answer.
    app.router.add_get("/broken", _broken)
    return app


async def _incident(client: TestClient[Any, Any], payload: dict[str, Any]) -> str:
    resp = await client.post("/webhook/alertmanager", json=payload, headers=AUTH)
    assert resp.status == 200, await resp.text()
    for _ in range(100):
        listed = await (await client.get("/api/incidents", headers=AUTH)).json()
        if listed["incidents"]:
            return str(listed["incidents"][0]["id"])
        await asyncio.sleep(0.05)
    raise AssertionError("the incident never appeared")


@pytest.mark.asyncio
async def test_every_answer_carries_nosniff_and_the_policy(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """Successes, our error answers (400, 401, 404, 413, 415, 500) and aiohttp's own (404 of
    an unknown path, 405, 500) all carry nosniff and the Content-Security-Policy."""
    client = await aiohttp_client(_app(tmp_path))
    incident_id = await _incident(client, notification("firing", status_code="401"))
    hook = "/webhook/alertmanager"
    answers = {
        "healthz": await client.get("/healthz"),
        "readyz": await client.get("/readyz"),
        "metrics": await client.get("/metrics"),
        "openapi": await client.get("/openapi.yaml"),
        "incidents": await client.get("/api/incidents", headers=AUTH),
        "postmortem": await client.get(f"/api/incidents/{incident_id}/postmortem", headers=AUTH),
        "chart": await client.get(f"/api/incidents/{incident_id}/chart.svg", headers=AUTH),
        "evidence": await client.get(f"/api/incidents/{incident_id}/evidence", headers=AUTH),
        "unknown incident": await client.get("/api/incidents/inc-nope/chart.svg", headers=AUTH),
        "no credentials": await client.get(f"/api/incidents/{incident_id}/chart.svg"),
        "webhook 400": await client.post(hook, data=b"{", headers={**AUTH, **_JSON}),
        "webhook 401": await client.post(hook, json=notification("firing")),
        "webhook 413": await client.post(hook, data=b"{" + b" " * 8192 + b"}", headers=_JSON),
        "webhook 415": await client.post(hook, data=b"x", headers={**AUTH, "Content-Type": "a/b"}),
        "unknown path": await client.get("/nope"),
        "wrong method": await client.delete("/healthz"),
        "broken handler": await client.get("/broken"),
    }
    statuses = {name: resp.status for name, resp in answers.items()}
    assert statuses == {
        "healthz": 200,
        "readyz": 200,
        "metrics": 200,
        "openapi": 200,
        "incidents": 200,
        "postmortem": 200,
        "chart": 200,
        "evidence": 200,
        "unknown incident": 404,
        "no credentials": 401,
        "webhook 400": 400,
        "webhook 401": 401,
        "webhook 413": 413,
        "webhook 415": 415,
        "unknown path": 404,
        "wrong method": 405,
        "broken handler": 500,
    }
    for name, resp in answers.items():
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", name
        assert resp.headers.get("Content-Security-Policy") == POLICY, name
    assert answers["chart"].content_type == "image/svg+xml"


_JSON = {"Content-Type": "application/json"}


def _hostile_notification() -> dict[str, Any]:
    payload = notification("firing", status_code="401")
    payload["groupLabels"] = {"alertname": "PostHogErrors", "namespace": HOSTILE}
    payload["alerts"][0]["labels"]["namespace"] = HOSTILE
    payload["alerts"][0]["annotations"]["summary"] = HOSTILE
    return payload


@pytest.mark.asyncio
async def test_hostile_alert_data_stays_text_in_every_evidence_answer(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """A label holding Markdown, HTML, newlines and control characters, in the title and an
    action's message: the postmortem renders it as text and loads only its chart, the chart
    parses as XML with no element of its own, and the bundle's names stay safe."""
    client = await aiohttp_client(_app(tmp_path))
    incident_id = await _incident(client, _hostile_notification())
    store = client.server.app[STORE]
    await store.write(
        lambda c: add_timeline(c, incident_id, "action", f"restarted pods for {HOSTILE}")
    )
    postmortem = await client.get(f"/api/incidents/{incident_id}/postmortem", headers=AUTH)
    assert postmortem.status == 200
    shown = render(await postmortem.text())
    tags = [tag for tag, _ in shown.elements]
    assert not {"a", "script", "h1", "del", "table", "code"} & set(tags)
    assert [a for tag, a in shown.elements if tag == "img"] == [
        [("src", "chart.svg"), ("alt", "Error rate during the incident, with actions marked")]
    ]
    assert tags.count("h2") == 1
    assert f"restarted pods for {HOSTILE_SHOWN}" in shown.text
    assert f"namespace={HOSTILE_SHOWN}" in shown.text

    chart = await client.get(f"/api/incidents/{incident_id}/chart.svg", headers=AUTH)
    assert chart.status == 200
    root = ET.fromstring(await chart.read())  # noqa: S314 (our own output, parsed to check it)
    assert {e.tag for e in root.iter()} <= {
        f"{SVG}{t}" for t in ("svg", "title", "rect", "text", "line", "g", "polyline")
    }
    assert HOSTILE_SHOWN in (root.findtext(f"{SVG}title") or "")

    evidence = await client.get(f"/api/incidents/{incident_id}/evidence", headers=AUTH)
    assert evidence.status == 200
    with tarfile.open(fileobj=io.BytesIO(await evidence.read()), mode="r:gz") as tar:
        names = tar.getnames()
        notes = tar.extractfile(next(n for n in names if n.endswith("/NOTES.md")))
        assert notes is not None
        notes_shown = render(notes.read().decode())
    assert all(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._/-]*", n) for n in names), names
    assert not any(".." in n.split("/") for n in names)
    notes_tags = [tag for tag, _ in notes_shown.elements]
    assert notes_tags.count("h1") == 1
    assert notes_tags[0] == "h1"
