"""No secret reaches the outbox's stored errors, however a destination echoes it back."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
import structlog

from tests.notify_harness import (
    SLACK_PATH,
    Clock,
    Fakes,
    Harness,
    clock_fixture,  # noqa: F401 - fixture
    fakes_fixture,  # noqa: F401 - fixture
    notify_settings,
    snapshot,
)


def _forms(secret: str) -> list[str]:
    """The secret as it may come back: raw, JSON-escaped, percent-encoded (either hex case)."""
    encoded = quote(secret, safe="")
    return [secret, secret.replace("/", "\\/"), encoded, encoded.replace("%2F", "%2f")]


@pytest.mark.asyncio
async def test_slack_400_echoing_the_webhook_path_encoded_is_stored_redacted(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """Slack refusing with the webhook's path JSON-escaped and percent-encoded in its answer:
    the stored error and the log lines say [redacted], never the path in any form."""
    echoed = SLACK_PATH.replace("/", "\\/")  # as a JSON encoder that escapes slashes writes it
    body = (
        f'{{"ok":false,"error":"invalid_payload","hook":"{echoed}",'
        f'"referer":"{quote(SLACK_PATH, safe="")}"}}'
    )
    fakes.slack.fail(400, body=body)
    h = Harness(tmp_path / "receiver.sqlite3", notify_settings(fakes, only=("slack",)), clock)
    await h.open()
    try:
        with structlog.testing.capture_logs() as logs:
            await h.notifier.incident_opened(snapshot(clock))
            await h.drain()
        (message,) = await h.messages("slack")
    finally:
        await h.close()
    assert message["state"] == "failed"
    assert message["last_error"] == (
        'Slack answered 400: {"ok":false,"error":"invalid_payload","hook":"[redacted]",'
        '"referer":"[redacted]"}'
    )
    (failed,) = [e for e in logs if e["event"] == "notification failed; not retried"]
    assert failed["error"] == message["last_error"]
    text = json.dumps(logs) + message["last_error"]
    for form in _forms(SLACK_PATH) + _forms(fakes.slack.webhook_url):
        assert form not in text
