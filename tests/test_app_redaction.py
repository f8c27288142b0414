"""Each application redacts the secrets of its own settings: nothing is shared through the
process, so two applications in one process (as here) never mix their secrets."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver.app import RecordingResponder, create_app
from receiver.config import EvidenceSettings, SecretSource, Settings, StoreSettings, WebhookSettings
from tests.incident_payloads import notification

TOKEN_A = "token-of-application-a-0001"
TOKEN_B = "token-of-application-b-0002"


async def _client(aiohttp_client: Any, tmp_path: Path, token: str) -> TestClient[Any, Any]:
    settings = Settings(
        webhook=WebhookSettings(bearer_token=SecretSource(value=token)),
        store=StoreSettings(path=tmp_path / "receiver.sqlite3"),
        evidence=EvidenceSettings(directory=tmp_path / "evidence"),
    )
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(settings, responder=RecordingResponder())
    )
    return client


async def _bundle_text(client: TestClient[Any, Any], token: str, annotation: str) -> str:
    """Everything in the bundle of an incident whose alert carries ``annotation``."""
    auth = {"Authorization": f"Bearer {token}"}
    body = notification("firing")
    body["alerts"][0]["annotations"]["description"] = annotation
    assert (await client.post("/webhook/alertmanager", json=body, headers=auth)).status == 200
    for _ in range(100):
        listed = await (await client.get("/api/incidents", headers=auth)).json()
        if listed["incidents"]:
            break
        await asyncio.sleep(0.05)
    incident_id = listed["incidents"][0]["id"]
    resp = await client.get(
        f"/api/incidents/{incident_id}/evidence", headers=auth, auto_decompress=False
    )
    assert resp.status == 200
    with tarfile.open(fileobj=io.BytesIO(await resp.read()), mode="r:gz") as tar:
        return "".join(
            handle.read().decode()
            for member in tar.getmembers()
            if (handle := tar.extractfile(member)) is not None
        )


@pytest.mark.asyncio
async def test_two_applications_do_not_share_redaction(aiohttp_client: Any, tmp_path: Path) -> None:
    """Built in one process, application A redacts A's token and B redacts B's; neither
    treats the other's as its own (text quoting both shows each app's own one redacted)."""
    first = await _client(aiohttp_client, tmp_path / "a", TOKEN_A)
    second = await _client(aiohttp_client, tmp_path / "b", TOKEN_B)
    quoted = f"seen {TOKEN_A} and {TOKEN_B}"
    in_a = await _bundle_text(first, TOKEN_A, quoted)
    in_b = await _bundle_text(second, TOKEN_B, quoted)
    assert f"seen [redacted] and {TOKEN_B}" in in_a
    assert f"seen {TOKEN_A} and [redacted]" in in_b
