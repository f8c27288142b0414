"""The evidence endpoints, through the real application and its webhook."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from receiver.app import RecordingResponder, create_app
from receiver.config import (
    EvidenceSettings,
    SecretSource,
    Settings,
    StoreSettings,
    WebhookSettings,
)
from receiver.keys import STORE
from tests.helpers import json_error
from tests.incident_payloads import notification

TOKEN = "evidence-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _app(tmp_path: Path) -> web.Application:
    settings = Settings(
        webhook=WebhookSettings(bearer_token=SecretSource(value=TOKEN)),
        store=StoreSettings(path=tmp_path / "receiver.sqlite3"),
        evidence=EvidenceSettings(directory=tmp_path / "evidence"),
    )
    # The endpoints collect on demand; the responder (which would read PostHog's real status
    # page here) is left out.
    return create_app(settings, responder=RecordingResponder())


async def _incident(client: TestClient[Any, Any], status: str = "firing") -> str:
    resp = await client.post(
        "/webhook/alertmanager", json=notification(status, status_code="401"), headers=AUTH
    )
    assert resp.status == 200
    for _ in range(100):
        listed = await (await client.get("/api/incidents", headers=AUTH)).json()
        if listed["incidents"] and (
            status == "firing" or listed["incidents"][0]["status"] == status
        ):
            return str(listed["incidents"][0]["id"])
        await asyncio.sleep(0.05)
    raise AssertionError("the incident never appeared")


@pytest.mark.asyncio
async def test_postmortem_is_markdown(aiohttp_client: Any, tmp_path: Path) -> None:
    """GET /api/incidents/{id}/postmortem answers the draft as text/markdown."""
    client = await aiohttp_client(_app(tmp_path))
    incident_id = await _incident(client)
    await _incident(client, "resolved")
    resp = await client.get(f"/api/incidents/{incident_id}/postmortem", headers=AUTH)
    assert resp.status == 200
    assert resp.content_type == "text/markdown"
    text = await resp.text()
    assert text.startswith("## Incident: PostHog")
    assert "### Action Items" in text
    assert "](chart.svg)" in text
    chart = await client.get(f"/api/incidents/{incident_id}/chart.svg", headers=AUTH)
    assert chart.status == 200
    assert chart.content_type == "image/svg+xml"
    assert (await chart.text()).startswith("<svg")


@pytest.mark.asyncio
async def test_evidence_is_the_gzip_bundle(aiohttp_client: Any, tmp_path: Path) -> None:
    """GET /api/incidents/{id}/evidence answers the .tar.gz bundle as application/gzip."""
    client = await aiohttp_client(_app(tmp_path))
    incident_id = await _incident(client)
    resp = await client.get(
        f"/api/incidents/{incident_id}/evidence", headers=AUTH, auto_decompress=False
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/gzip"
    assert "Content-Encoding" not in resp.headers
    assert f'filename="{incident_id}-opened-' in resp.headers["Content-Disposition"]
    body = await resp.read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers()]
        manifest = tar.extractfile(
            next(m for m in tar.getmembers() if m.name.endswith("manifest.json"))
        )
        assert manifest is not None
        assert json.loads(manifest.read())["incident_id"] == incident_id
    assert {"manifest.json", "NOTES.md", "incident.json", "postmortem.md", "chart.svg"} <= set(
        names
    )
    metrics = await (await client.get("/metrics")).text()
    assert 'posthog_receiver_evidence_bundles_total{phase="opened"} 1.0' in metrics


@pytest.mark.asyncio
async def test_unknown_incident_is_404_and_credentials_are_required(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """An unknown id answers 404 (JSON error); no credentials answer 401 on every evidence
    endpoint."""
    client = await aiohttp_client(_app(tmp_path))
    for path in ("postmortem", "evidence", "chart.svg"):
        resp = await client.get(f"/api/incidents/inc-nope/{path}", headers=AUTH)
        assert resp.status == 404
        assert await json_error(resp) == "no incident inc-nope"
        assert (await client.get(f"/api/incidents/inc-nope/{path}")).status == 401


@pytest.mark.asyncio
async def test_unavailable_store_is_503(aiohttp_client: Any, tmp_path: Path) -> None:
    """A store that cannot be read answers 503, with a JSON error, on every evidence endpoint."""
    client = await aiohttp_client(_app(tmp_path))
    await client.server.app[STORE].close()
    for path in ("postmortem", "evidence", "chart.svg"):
        resp = await client.get(f"/api/incidents/inc-nope/{path}", headers=AUTH)
        assert resp.status == 503
        assert await json_error(resp) == "store unavailable"
